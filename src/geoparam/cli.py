"""The command line: ``python -m geoparam demo`` and ``python -m geoparam bench``.

Each command needs an extra beyond torch (``demo``: matplotlib, tqdm; ``bench``: geotorch, scipy).
When one is missing the command exits with status 1 and a single line on stderr naming the extra
to install, instead of a traceback.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ._extras import exit_on_missing_extra, require

__all__ = ["main"]


def _bench(argv: list[str]) -> int:
    # The harness lives in the source checkout's benchmarks/ folder, beside src/.
    harness = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    if not harness.is_file():
        print(
            "geoparam bench: the benchmark harness ships with the source checkout "
            f"(expected {harness}); clone the repository and install it with pip install -e .",
            file=sys.stderr,
        )
        return 2
    # Checked before the harness starts: it would otherwise import them halfway through.
    require("geoparam bench", "geotorch", "scipy")
    sys.argv = [str(harness), *argv]
    runpy.run_path(str(harness), run_name="__main__")
    return 0


def _demo(argv: list[str]) -> int:
    # demo.main checks its own extra (it is also called directly, from Python).
    from .demo import main as demo_main

    return demo_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Run a geoparam command; ``argv`` defaults to the process's arguments.

    Returns the command's exit code. Exits (:class:`SystemExit`, status 1) with one line on stderr
    when the command's extra is not installed, as argparse does for a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="geoparam",
        description="Constrained weights for PyTorch.",
        epilog="Run 'geoparam COMMAND --help' for a command's options.",
    )
    parser.add_argument("command", choices=["demo", "bench"], help="what to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    options = parser.parse_args(argv)
    run = {"demo": _demo, "bench": _bench}[options.command]
    with exit_on_missing_extra(f"geoparam {options.command}"):
        return run(options.args)


if __name__ == "__main__":
    sys.exit(main())
