"""Helpers shared by the constraint tests: holders, tolerances, parity with torch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn

# Relative tolerances for agreement with torch: the kernels compute the same maps by other
# routes, so values agree to rounding, not bit for bit.
RTOL = {
    torch.float32: 1e-5,
    torch.complex64: 1e-5,
    torch.float64: 1e-10,
    torch.complex128: 1e-10,
}

# Property tests build small modules; no deadline, since the first LAPACK call is slow.
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

SHAPES = {
    "square": (6, 6),
    "tall": (9, 4),
    "wide": (4, 9),
    "batched_square": (3, 5, 5),
    "batched_tall": (2, 7, 3),
}
MAPS = ("matrix_exp", "cayley", "householder")


class Holder(nn.Module):
    """A module whose only tensor is ``weight``; calling it returns the (parametrized) weight."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape, dtype=dtype))

    def forward(self) -> Tensor:
        return self.weight


def map_dtype_cases() -> list[tuple[str, torch.dtype]]:
    """Every (map, dtype) pair torch supports: complex only for matrix_exp and cayley."""
    cases = []
    for orthogonal_map in MAPS:
        dtypes = [torch.float32, torch.float64]
        if orthogonal_map != "householder":
            dtypes += [torch.complex64, torch.complex128]
        cases += [(orthogonal_map, dtype) for dtype in dtypes]
    return cases


def assert_close_relative(actual: Tensor, expected: Tensor, rtol: float) -> None:
    """``actual == expected`` up to ``rtol`` relative to the largest entry of ``expected``."""
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def orthogonality_error(Q: Tensor) -> float:
    """``max |QᴴQ - I|`` for a tall ``Q``, ``max |QQᴴ - I|`` for a wide one."""
    Q = Q.detach()
    if Q.size(-2) < Q.size(-1):
        Q = Q.mT
    eye = torch.eye(Q.size(-1), dtype=Q.dtype)
    return float((Q.mH @ Q - eye).abs().max())


def orthogonality_bound(Q: Tensor) -> float:
    """``10 · n · eps``, ``n`` the larger side of ``Q``."""
    return 10.0 * max(Q.size(-2), Q.size(-1)) * torch.finfo(Q.dtype).eps


def register_pair(
    make: Callable[[], nn.Module],
    register_torch: Callable[[nn.Module], object],
    register_ours: Callable[[nn.Module], object],
    seed: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """Two identical modules, parametrized by torch and by geoparam from the same random state."""
    torch.manual_seed(seed)
    reference = make()
    torch.manual_seed(seed)
    ours = make()
    torch.manual_seed(seed + 1)
    register_torch(reference)
    torch.manual_seed(seed + 1)
    register_ours(ours)
    return reference, ours


def move_original(
    modules: list[nn.Module], scale: float = 0.5, keep_diagonal: bool = False, name: str = "weight"
) -> None:
    """Add the same random tensor to ``parametrizations.<name>.original`` of every module.

    ``keep_diagonal`` leaves the diagonal alone: the Householder map reads column signs there,
    which torch's parametrization expects to stay at ``±1``.
    """
    original = modules[0].parametrizations[name].original
    step = scale * torch.randn_like(original)
    if keep_diagonal:
        step.diagonal(dim1=-2, dim2=-1).zero_()
    with torch.no_grad():
        for module in modules:
            module.parametrizations[name].original.add_(step)


def linear_loss(weight: Tensor, direction: Tensor) -> Tensor:
    """A real linear function of a (possibly complex) weight: ``Re Σ weight · direction``."""
    return torch.real((weight * direction).sum())


def weight_and_grads(module: nn.Module, direction: Tensor, name: str = "weight") -> tuple:
    """The parametrized weight and the gradient of ``linear_loss`` on each original tensor."""
    module.zero_grad()
    weight = getattr(module, name)
    linear_loss(weight, direction).backward()
    originals = [p.grad.clone() for p in module.parametrizations[name].parameters()]
    return weight.detach().clone(), originals


def observe_torch_defect(present: bool, defect: str) -> None:
    """Record a defect of torch's parametrizations that geoparam fixes; skip once it is gone.

    Tests of geoparam's behaviour never depend on torch's: each defect is documented by a test
    of its own that calls this, so that on a torch release that fixes it the suite stays green
    (the test is skipped, naming the release) instead of failing although geoparam is right.
    """
    if not present:
        pytest.skip(f"torch {torch.__version__} no longer shows this defect: {defect}")
