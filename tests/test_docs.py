"""The documentation runs: every ```python block of the docs, every docstring example of the
package, and the strict docs build that CI performs.

Each docs page is one test: its ```python blocks run in order in one namespace, so a later block
can use the names an earlier one defined. A ```text block that directly follows a ```python block
is that block's expected output, and must equal what it prints. Blocks meant for a shell are fenced
as ```bash and are not run.

The tests are parametrized, at collection, over the pages and modules that have examples, so that
no test is a skip in disguise; guard tests check that the extraction finds examples at all.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import io
import pkgutil
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import geoparam

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The README is a page too: its quickstart must run.
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

# A fenced block that opens with ```python (possibly indented, e.g. inside an admonition) and
# closes with ``` at the same indentation; a ```text block right after it is its output.
_PYTHON_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*\n"
    r"(?:[ \t]*\n)*"
    r"(?:(?P=indent)```text[^\n]*\n(?P<output>.*?)^(?P=indent)```[ \t]*$)?",
    re.MULTILINE | re.DOTALL,
)

# Importing these runs a program or needs only the command line, not an example.
_NOT_IMPORTED = {"geoparam.__main__"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Run the small examples on one thread: on a shared machine, more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Block:
    line: int
    source: str
    output: str | None


def _unindent(text: str, indent: str) -> str:
    rows = text.splitlines(keepends=True)
    return textwrap.dedent("".join(r[len(indent) :] if r.startswith(indent) else r for r in rows))


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a page, with their expected output if one follows, in order."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _PYTHON_BLOCK.finditer(text):
        indent = match.group("indent")
        output = match.group("output")
        blocks.append(
            Block(
                line=text.count("\n", 0, match.start()) + 2,
                source=_unindent(match.group("body"), indent),
                output=None if output is None else _unindent(output, indent),
            )
        )
    return blocks


def package_modules() -> list[str]:
    """Every module of the installed package, subpackages included."""
    names = ["geoparam"]
    for info in pkgutil.walk_packages(geoparam.__path__, prefix="geoparam."):
        if info.name not in _NOT_IMPORTED:
            names.append(info.name)
    return sorted(names)


def docstring_tests(module_name: str) -> list[doctest.DocTest]:
    """The docstring examples of a module, with ``torch`` and ``nn`` in their scope."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, extraglobs={"torch": torch, "nn": nn}) if t.examples]


def modules_with_examples() -> list[str]:
    """The package's modules that have docstring examples.

    A module that fails to import is kept: its test then fails with the error, where a collection
    error would take down every test of this file.
    """
    names = []
    for name in package_modules():
        try:
            found = bool(docstring_tests(name))
        except Exception:
            found = True
        if found:
            names.append(name)
    return names


PAGES_WITH_PYTHON = [page for page in PAGES if python_blocks(page)]
MODULES_WITH_EXAMPLES = modules_with_examples()


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of the page runs, in order, in one namespace."""
    blocks = python_blocks(page)
    # Examples that write files (checkpoints, outputs) write them into a scratch folder.
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for block in blocks:
        where = f"{page.relative_to(ROOT)}:{block.line}"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block.source, where, "exec"), namespace)
        if block.output is not None:
            assert printed.getvalue().strip() == block.output.strip(), f"output of {where}"


def test_docs_have_python_examples() -> None:
    """The extraction finds the examples (a broken regex would drop every page silently)."""
    assert sum(len(python_blocks(page)) for page in PAGES) >= 10
    assert ROOT / "README.md" in PAGES_WITH_PYTHON  # the quickstart


def test_docstring_examples_are_found() -> None:
    """The module walk and the doctest finder find the examples (none found would test nothing)."""
    assert len(MODULES_WITH_EXAMPLES) >= 5
    assert {"geoparam", "geoparam.constraints.stiefel"} <= set(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_fences_are_known(page: Path) -> None:
    """Code is fenced as python (run), text (output) or bash (not run): no untested py/pycon."""
    fences = re.findall(r"^[ \t]*```(\w*)", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    opening = fences[::2]  # fences alternate: opening, closing
    assert set(opening) <= {"python", "text", "bash"}, f"{page.name}: {sorted(set(opening))}"


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(module_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Every docstring example of the module passes, with ``torch`` and ``nn`` in scope."""
    monkeypatch.chdir(tmp_path)
    tests = docstring_tests(module_name)
    assert tests, f"{module_name} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in sorted(tests, key=lambda t: t.name):
        torch.manual_seed(0)
        output: list[str] = []
        result = runner.run(test, out=output.append)
        if result.failed:
            failures.append("".join(output))
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (what CI runs) succeeds: no broken links, no docstring warnings."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
