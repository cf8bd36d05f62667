"""Tests for geoparam.linalg.orthogonalize: QR with a positive R, polar factor, reflectors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import randn

from geoparam.linalg import (
    householder_product,
    householder_reflectors,
    is_orthogonal,
    polar,
    qr_positive,
)

SHAPES = [(1, 1), (4, 4), (6, 3), (7, 1)]
BATCHED = [(3, 5, 5), (2, 2, 6, 4)]
DTYPES = [torch.float64, torch.complex128]


def _randn(shape, seed, dtype=torch.float64):
    return randn(*shape, seed=seed, dtype=dtype)


def _loop(function, A: torch.Tensor) -> torch.Tensor:
    """``function`` applied to each matrix of a batch separately: the batch oracle."""
    flat = A.reshape(-1, *A.shape[-2:])
    return torch.stack([function(M) for M in flat]).reshape(*A.shape[:-2], *function(flat[0]).shape)


def _scipy_qr_positive(A: torch.Tensor) -> torch.Tensor:
    Q, R = scipy.linalg.qr(A.numpy(), mode="economic")
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1
    return torch.from_numpy(Q * signs)


# ---------------------------------------------------------------------------------------------
# qr_positive


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_qr_positive_matches_scipy(shape, dtype):
    A = _randn(shape, seed=1, dtype=dtype)
    Q = qr_positive(A)
    torch.testing.assert_close(Q, _scipy_qr_positive(A), rtol=1e-12, atol=1e-12)
    # diag(R) = diag(QᴴA) is real and positive.
    diagonal = (Q.mH @ A).diagonal()
    assert bool((diagonal.real > 0).all())
    assert float(diagonal.imag.abs().max()) < 1e-12 if dtype.is_complex else True


@pytest.mark.parametrize("shape", BATCHED)
def test_qr_positive_batches_as_a_loop(shape):
    A = _randn(shape, seed=2, dtype=torch.complex128)
    torch.testing.assert_close(qr_positive(A), _loop(qr_positive, A), rtol=1e-12, atol=1e-12)


def test_qr_positive_keeps_an_orthogonal_matrix_and_a_zero_column():
    Q = qr_positive(_randn((5, 5), seed=3))
    torch.testing.assert_close(qr_positive(Q), Q, rtol=0, atol=1e-13)
    A = _randn((5, 3), seed=4)
    A[:, 1] = 0.0  # rank-deficient: R has a zero on its diagonal
    assert is_orthogonal(qr_positive(A))


# ---------------------------------------------------------------------------------------------
# polar


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 4), (6, 3)])
def test_polar_matches_scipy(shape, dtype):
    A = _randn(shape, seed=5, dtype=dtype)
    U, P = scipy.linalg.polar(A.numpy(), side="right")
    result = polar(A)
    torch.testing.assert_close(result, torch.from_numpy(U), rtol=1e-10, atol=1e-10)
    # A = U P with P Hermitian positive semi-definite.
    torch.testing.assert_close(result @ torch.from_numpy(P), A, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", BATCHED)
def test_polar_batches_as_a_loop(shape):
    A = _randn(shape, seed=6)
    torch.testing.assert_close(polar(A), _loop(polar, A), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (2, 4, 3)])
def test_polar_gradcheck(shape, dtype):
    A = _randn(shape, seed=7, dtype=dtype).requires_grad_(True)
    # The polar factor is a smooth function of A where A has full column rank; a real-valued
    # loss makes the complex case check the Wirtinger gradient.
    assert torch.autograd.gradcheck(
        lambda X: torch.view_as_real(polar(X)) if X.is_complex() else polar(X), (A,)
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(rows=st.integers(1, 7), columns=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_polar_is_the_nearest_orthogonal_matrix_property(rows, columns, seed):
    if rows < columns:
        rows, columns = columns, rows
    A = _randn((rows, columns), seed=seed)
    U = polar(A)
    assert is_orthogonal(U)
    # Nearest in the Frobenius norm: no better than a random orthogonal competitor.
    competitor = qr_positive(_randn((rows, columns), seed=seed + 1))
    assert torch.linalg.norm(A - U) <= torch.linalg.norm(A - competitor) + 1e-12


# ---------------------------------------------------------------------------------------------
# householder_reflectors (the inverse of the Householder map)


def _signs(X: torch.Tensor) -> torch.Tensor:
    return X.diagonal(dim1=-2, dim2=-1).sign().unsqueeze(-2)


@pytest.mark.parametrize("shape", [*SHAPES, *BATCHED])
def test_reflectors_invert_the_householder_map(shape):
    Q = qr_positive(_randn(shape, seed=8))
    X = householder_reflectors(Q)
    assert bool((X.diagonal(dim1=-2, dim2=-1).abs() == 1).all())
    torch.testing.assert_close(householder_product(X) * _signs(X), Q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 4), (6, 3)])
def test_reflectors_are_lapack_geqrf_below_the_diagonal(shape):
    # The oracle: LAPACK's geqrf through scipy (raw mode returns the packed reflectors).
    Q = qr_positive(_randn(shape, seed=9))
    (packed, _), _ = scipy.linalg.qr(Q.numpy(), mode="raw")
    X = householder_reflectors(Q)
    torch.testing.assert_close(X.tril(-1), torch.from_numpy(np.tril(packed, -1)))


def test_reflectors_of_a_rank_deficient_matrix_give_an_orthogonal_weight():
    A = _randn((5, 3), seed=10)
    A[:, 2] = 0.0
    X = householder_reflectors(A)
    assert is_orthogonal(householder_product(X) * _signs(X))


@pytest.mark.parametrize("shape", BATCHED)
def test_reflectors_batch_as_a_loop(shape):
    Q = qr_positive(_randn(shape, seed=11))
    torch.testing.assert_close(householder_reflectors(Q), _loop(householder_reflectors, Q))


# ---------------------------------------------------------------------------------------------
# is_orthogonal


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_is_orthogonal_is_torchs_test(dtype):
    n = 6
    Q = qr_positive(_randn((n, n), seed=12, dtype=dtype))
    assert is_orthogonal(Q)
    atol = 10 * n * torch.finfo(dtype).eps
    # A shear Q (I + δ E₀₁) moves the off-diagonal entry (0, 1) of QᴴQ by δ: the absolute
    # tolerance decides there.
    for delta, expected in ((0.5 * atol, True), (2 * atol, False)):
        shear = torch.eye(n, dtype=dtype)
        shear[0, 1] = delta
        assert is_orthogonal(Q @ shear) is expected
    # On the diagonal allclose also allows its default relative tolerance, 1e-5, as in torch.
    assert is_orthogonal(Q * (1 + 0.25e-5)) and not is_orthogonal(Q * (1 + 1e-4))
    assert is_orthogonal(Q[..., :3]) and not is_orthogonal(2 * Q[..., :3])


def test_is_orthogonal_needs_every_matrix_of_a_batch():
    Q = qr_positive(_randn((3, 4, 4), seed=13))
    assert is_orthogonal(Q)
    Q[1, 0, 0] += 1e-3
    assert not is_orthogonal(Q)
