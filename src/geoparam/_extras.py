"""Optional dependencies: which extra installs each, and a one-line message when one is absent.

``import geoparam`` needs torch alone. The command line and the examples need more (matplotlib
and tqdm for the demo, geotorch and scipy for the benchmarks, scikit-learn for an example); a
fresh ``pip install geoparam`` lacks them all, and a ``ModuleNotFoundError`` traceback from deep
inside a run tells a newcomer neither what is wrong nor what to type. So every optional feature
asks :func:`require` for its modules before it starts, and its entry point runs under
:func:`exit_on_missing_extra`, which turns the error into one line on stderr that names the extra.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["OPTIONAL", "MissingExtraError", "exit_on_missing_extra", "require"]

OPTIONAL = {
    "matplotlib": ("matplotlib", "demo"),
    "tqdm": ("tqdm", "demo"),
    "sklearn": ("scikit-learn", "demo"),
    "geotorch": ("geotorch", "bench"),
    "scipy": ("scipy", "bench"),
}
"""The optional modules by import name: ``(distribution, extra)``, the name pip knows and the extra
of ``pyproject.toml`` that installs it."""


class MissingExtraError(ImportError):
    """A feature needs optional modules that are not installed; the message says how to get them.

    A subclass of :class:`ImportError`, so code that already guards an import still catches it.
    """


def _installed(module: str) -> bool:
    # find_spec looks the module up without importing it (nothing runs, and it is quick). It
    # raises, rather than return None, for a broken parent package or a finder that refuses.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _message(feature: str, missing: list[str]) -> str:
    # Name the distributions (what pip shows), not the import names: scikit-learn, not sklearn.
    extras = ",".join(sorted({OPTIONAL[module][1] for module in missing}))
    distributions = [OPTIONAL[module][0] for module in missing]
    names = " and ".join(distributions) if len(missing) <= 2 else ", ".join(distributions)
    verb = "is" if len(missing) == 1 else "are"
    return f"{feature} needs {names}, which {verb} not installed: pip install 'geoparam[{extras}]'"


def require(feature: str, *modules: str) -> None:
    """Check that ``modules`` (keys of :data:`OPTIONAL`) can be imported, before any work starts.

    Args:
        feature: what needs them, in the user's words (``"geoparam demo"``), for the message.
        modules: the import names of the optional modules the feature uses.

    Raises:
        MissingExtraError: some are not installed; the message names them and the extra to
            install, on one line.
    """
    missing = [module for module in modules if not _installed(module)]
    if missing:
        raise MissingExtraError(_message(feature, missing), name=missing[0])


@contextmanager
def exit_on_missing_extra(feature: str) -> Iterator[None]:
    """Run the block; if an optional module is missing, print one line to stderr and exit 1.

    Catches :class:`MissingExtraError` and also a plain :class:`ModuleNotFoundError` for a module
    of :data:`OPTIONAL` (an import that :func:`require` did not foresee, or a module that is found
    but fails to import): either way the user sees the extra to install, not a traceback. Other
    errors pass through untouched.

    Args:
        feature: what runs in the block, for the message of an unforeseen missing module.
    """
    try:
        yield
    except MissingExtraError as error:
        print(error, file=sys.stderr)
        raise SystemExit(1) from None
    except ModuleNotFoundError as error:
        root = (error.name or "").partition(".")[0]
        if root not in OPTIONAL:
            raise
        print(_message(feature, [root]), file=sys.stderr)
        raise SystemExit(1) from None
