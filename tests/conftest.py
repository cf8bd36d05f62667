"""Shared fixtures: every test starts from the same random state.

Plain helpers (tensor holders, tolerances, parity checks) live in ``parametrization_testing.py``
next to this file: test modules import it by name, which does not work reliably for a module
called ``conftest``.
"""

from __future__ import annotations

import pytest
import torch

# The tests use tiny matrices, for which a second thread only adds overhead; on a shared machine
# it also oversubscribes the cores (measured: ten times slower under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed torch's global generator, which registration and power iteration draw from."""
    torch.manual_seed(0)
