"""A bare ``pip install geoparam``: the package imports, and every command or example that needs an
extra says which one in a single line on stderr, with no traceback.

The bare install is simulated in a subprocess: a finder placed first on ``sys.meta_path`` makes
the optional modules unimportable (``import`` and ``importlib.util.find_spec`` both raise
``ModuleNotFoundError``, as they do for a module that is not there), while torch and geoparam
import as usual.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geoparam._extras import OPTIONAL, MissingExtraError, exit_on_missing_extra, require

ROOT = Path(__file__).resolve().parents[1]
EVERY_OPTIONAL = frozenset(OPTIONAL)

_HIDE = """
import sys


class HideModules:
    # Placed first on sys.meta_path: the named top-level modules (and their submodules) cannot
    # be found, whatever is installed.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideModules())
"""

# Run as `python -m geoparam ARGS` would, or as `python SCRIPT ARGS`; the arguments follow -c.
_RUN_CLI = """
import runpy
runpy.run_module("geoparam", run_name="__main__", alter_sys=True)
"""
_RUN_SCRIPT = """
import runpy
sys.argv[0] = SCRIPT
runpy.run_path(SCRIPT, run_name="__main__")
"""

# Import every module of the package, then check that none of the hidden ones was even tried.
_IMPORT_ALL = """
import importlib
import pkgutil

import geoparam

modules = [info.name for info in pkgutil.walk_packages(geoparam.__path__, prefix="geoparam.")]
for name in modules:
    if name != "geoparam.__main__":  # runs the command line
        importlib.import_module(name)
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in HIDDEN)
print(len(modules), loaded)
"""


def _python(
    program: str, args: list[str], hidden: frozenset[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``program`` (Python source) in a fresh interpreter with ``hidden`` unimportable."""
    source = f"HIDDEN = {set(hidden)!r}\n" + _HIDE + textwrap.dedent(program)
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], needs: str, extra: str) -> None:
    """Exit status 1, nothing on stdout, and exactly one line on stderr naming the extra."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"needs {needs}, which" in lines[0]
    assert lines[0].endswith(f"pip install 'geoparam[{extra}]'")


def test_import_needs_no_extra(tmp_path: Path) -> None:
    result = _python(_IMPORT_ALL, [], EVERY_OPTIONAL, tmp_path)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(maxsplit=1)
    assert int(count) >= 5  # the walk found the package's modules
    assert loaded.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "needs", "extra"),
    [
        ("demo", "matplotlib and tqdm", "demo"),
        ("bench", "geotorch and scipy", "bench"),
    ],
    ids=["demo", "bench"],
)
def test_command_without_its_extra(command: str, needs: str, extra: str, tmp_path: Path) -> None:
    # One subprocess each (a second or two: torch imports); require()'s naming of a partial set
    # is tested in-process below.
    args = [command, "--quick", "--out", str(tmp_path)]
    result = _python(_RUN_CLI, args, EVERY_OPTIONAL, tmp_path)
    _assert_one_line(result, needs, extra)
    assert f"geoparam {command} needs" in result.stderr
    assert not any(tmp_path.iterdir())  # it stopped before doing any work


@pytest.mark.parametrize(
    ("script", "needs"),
    [
        ("gan_ring.py", "matplotlib"),
        ("digits_rnn.py", "matplotlib and scikit-learn"),
        ("certified_digits.py", "matplotlib and scikit-learn"),
    ],
    ids=["gan_ring", "digits_rnn", "certified_digits"],
)
def test_example_without_its_extra(script: str, needs: str, tmp_path: Path) -> None:
    program = f"SCRIPT = {str(ROOT / 'examples' / script)!r}\n" + _RUN_SCRIPT
    result = _python(program, ["--quick", "--out", str(tmp_path)], EVERY_OPTIONAL, tmp_path)
    _assert_one_line(result, needs, "demo")
    assert f"examples/{script} needs" in result.stderr


def test_require_names_every_missing_module_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("geoparam._extras._installed", lambda module: module != "scipy")
    require("something", "matplotlib", "geotorch")  # both there: no error
    with pytest.raises(MissingExtraError, match=r"needs scipy, which is not installed"):
        require("something", "scipy")
    monkeypatch.setattr("geoparam._extras._installed", lambda module: False)
    with pytest.raises(ImportError) as error:  # a MissingExtraError is an ImportError
        require("both", "sklearn", "tqdm", "geotorch")
    assert str(error.value) == (
        "both needs scikit-learn, tqdm, geotorch, which are not installed: "
        "pip install 'geoparam[bench,demo]'"
    )


def test_exit_on_missing_extra_catches_only_optional_modules(capsys) -> None:
    with pytest.raises(SystemExit) as exit_, exit_on_missing_extra("a feature"):
        raise ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot")
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "a feature needs matplotlib, which is not installed: pip install 'geoparam[demo]'\n"
    )
    # Any other missing module is a bug or a broken install: its traceback must stay.
    with pytest.raises(ModuleNotFoundError), exit_on_missing_extra("a feature"):
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")


def test_optional_modules_match_the_extras_of_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for module, (distribution, extra) in OPTIONAL.items():
        names = {re.split(r"[\s<>=!~\[;]", requirement)[0] for requirement in extras[extra]}
        assert distribution in names, f"{module}: {distribution} is not in extra {extra!r}"
