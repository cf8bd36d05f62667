"""Importing the benchmark harness from the tests: plain files beside run.py, not a package."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_standalone(filename: str) -> ModuleType:
    """A benchmark file without sibling imports, loaded under a private name, once.

    (Dataclasses look their module up in ``sys.modules``, hence the registration.)
    """
    name = f"_geoparam_bench_{Path(filename).stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def import_with_siblings(name: str) -> ModuleType:
    """A benchmark module that imports its siblings by name, as run.py arranges: the folder is
    on ``sys.path`` only while importing it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
