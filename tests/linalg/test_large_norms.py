"""Orthogonality at any norm: every map keeps ‖QᴴQ - I‖ within 10·n·eps of its working dtype.

Long training without re-basing drives the skew part ``A`` far from the identity's chart; the
exponential's scaling and squaring then amplifies rounding (each squaring about doubles it),
which the maps correct with a Newton-Schulz step (see ``linalg/expm.py``, ``linalg/stiefel.py``).
The Householder product is orthogonal by construction; the Cayley map is computed as
``2 (I - A/2)⁻¹ - I``, whose rounding stays relative to the small inverse at large norms.
"""

from __future__ import annotations

import pytest
import torch

from geoparam.linalg import cayley, expm_skew, stiefel_cayley, stiefel_expm

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]
NORMS = [1.0, 10.0, 1e2, 1e3, 1e4]


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _skew(n: int, norm: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    X = torch.randn(n, n, dtype=_wide(dtype), generator=torch.Generator().manual_seed(seed))
    A = X.tril() - X.tril().mH
    return (A * (norm / torch.linalg.matrix_norm(A, 2))).to(dtype)


def _tall(n: int, k: int, norm: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    # The skew embedding [L, 0] - [L, 0]ᴴ of X has norm about 2 ‖X‖₂.
    X = torch.randn(n, k, dtype=_wide(dtype), generator=torch.Generator().manual_seed(seed))
    return (X * (norm / (2 * torch.linalg.matrix_norm(X, 2)))).to(dtype)


def _error(Q: torch.Tensor) -> float:
    Q = Q.to(_wide(Q.dtype))
    return float((Q.mH @ Q - torch.eye(Q.size(-1), dtype=Q.dtype)).abs().max())


def _bound(n: int, dtype: torch.dtype) -> float:
    return 10 * n * torch.finfo(dtype).eps


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16, 64, 256])
def test_exponential_stays_orthogonal(n, dtype, norm):
    assert _error(expm_skew(_skew(n, norm, dtype, seed=n))) <= _bound(n, dtype)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16, 64, 256])
def test_cayley_stays_orthogonal(n, dtype, norm):
    for seed in range(4):
        assert _error(cayley(_skew(n, norm, dtype, seed=n + seed))) <= _bound(n, dtype)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16, 64, 256])
@pytest.mark.parametrize("tall_map", [stiefel_expm, stiefel_cayley], ids=["expm", "cayley"])
def test_tall_maps_stay_orthogonal(tall_map, n, dtype, norm):
    assert _error(tall_map(_tall(n, n // 4, norm, dtype, seed=n))) <= _bound(n, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_largest_square_size_stays_orthogonal(dtype):
    assert _error(expm_skew(_skew(512, 1e4, dtype, seed=5))) <= _bound(512, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_tall_exponential_gradcheck_at_large_norm(dtype):
    X = _tall(7, 3, 1e3, dtype, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(stiefel_expm, (X,), fast_mode=True)
