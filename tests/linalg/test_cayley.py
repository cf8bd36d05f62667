"""Tests for geoparam.linalg.cayley: the Cayley map of skew matrices and its backward."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import assert_vmap_and_compile_agree, randn, relative_error, value_and_grad

from geoparam.linalg import qr_positive
from geoparam.linalg.cayley import cayley, rotated_cayley, rotated_cayley_lower

# The module itself (geoparam.linalg re-exports its function `cayley` under the same name).
cayley_module = importlib.import_module("geoparam.linalg.cayley")

REAL_AND_COMPLEX = [torch.float64, torch.complex128]
SINGLE = [torch.float32, torch.complex64]
WIDE = {torch.float32: torch.float64, torch.complex64: torch.complex128}


def torch_cayley(A: torch.Tensor) -> torch.Tensor:
    """The oracle: torch's solve, as ``torch.nn.utils.parametrizations.orthogonal`` uses it."""
    eye = torch.eye(A.size(-1), dtype=A.dtype)
    return torch.linalg.solve(eye - A / 2, eye + A / 2)


def random_skew(*shape: int, seed: int, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    X = randn(*shape, seed=seed, dtype=dtype) * scale
    return X - X.mH


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4, 4)])
def test_gradcheck(dtype, shape):
    X = randn(*shape, seed=1, dtype=dtype).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: cayley(X - X.mH), (X,))


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("shape", [(1, 1), (6, 6), (2, 3, 5, 5)])
def test_matches_torch_in_double(dtype, scale, shape):
    A = random_skew(*shape, seed=2, dtype=dtype, scale=scale)
    G = randn(*shape, seed=3, dtype=dtype)
    Q, grad = value_and_grad(cayley, A, G)
    expected_Q, expected_grad = value_and_grad(torch_cayley, A, G)
    assert (Q - expected_Q).abs().max().item() < 1e-13
    assert relative_error(grad, expected_grad) < 1e-12


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
def test_gradient_matches_torch_off_the_skew_matrices(dtype):
    # (I - A/2)⁻¹(I + A/2) = 2(I - A/2)⁻¹ - I for every A, so the gradients agree everywhere.
    A = 0.3 * randn(6, 6, seed=4, dtype=dtype)
    G = randn(6, 6, seed=5, dtype=dtype)
    _, grad = value_and_grad(cayley, A, G)
    _, expected = value_and_grad(torch_cayley, A, G)
    assert relative_error(grad, expected) < 1e-12


@pytest.mark.parametrize("dtype", SINGLE)
def test_batches_match_single_matrices(dtype):
    A = random_skew(3, 4, 7, 7, seed=6, dtype=dtype)
    G = randn(3, 4, 7, 7, seed=7, dtype=dtype)
    Q, grad = value_and_grad(cayley, A, G)
    for index in np.ndindex(3, 4):
        single_Q, single_grad = value_and_grad(cayley, A[index], G[index])
        torch.testing.assert_close(Q[index], single_Q)
        torch.testing.assert_close(grad[index], single_grad)


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("n", [8, 64, 256])
@pytest.mark.parametrize("dtype", SINGLE)
def test_orthogonal_in_single_precision(n, dtype, requires_grad):
    Q = cayley(random_skew(n, n, seed=n, dtype=dtype).requires_grad_(requires_grad)).detach()
    eye = torch.eye(n, dtype=dtype)
    eps = torch.finfo(Q.real.dtype).eps
    assert torch.linalg.matrix_norm(Q.mH @ Q - eye, 2).item() <= 10 * n * eps


def test_no_grad_route_agrees_with_the_differentiable_one():
    A = random_skew(3, 9, 9, seed=12, dtype=torch.float32).requires_grad_(True)
    with torch.no_grad():
        inference = cayley(A)
    assert inference.grad_fn is None
    assert torch.equal(inference, cayley(A).detach())


@pytest.mark.parametrize("dtype", SINGLE)
def test_gradient_accuracy_in_single_precision(dtype):
    n = 64
    A = random_skew(n, n, seed=8, dtype=dtype)
    G = randn(n, n, seed=9, dtype=dtype)
    _, expected = value_and_grad(torch_cayley, A.to(WIDE[dtype]), G.to(WIDE[dtype]))

    def error(scale: float) -> float:
        _, grad = value_and_grad(cayley, A, G * scale)
        return relative_error(grad.to(WIDE[dtype]) / scale, expected)

    base = error(1.0)
    assert base <= 1e-5
    # An AMP-style loss scale changes nothing: the backward is two products with G.
    assert error(65536.0) <= 1.01 * base


@pytest.mark.parametrize(
    ("dtype", "single"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.complex32, torch.complex64),
    ],
)
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_half_precision_computes_in_single(dtype, single):
    A = random_skew(2, 12, 12, seed=10, dtype=single).to(dtype).requires_grad_(True)
    Q = cayley(A)
    Q.abs().sum().backward()
    assert Q.dtype == A.grad.dtype == dtype
    expected = cayley(A.detach().to(single))
    assert (Q.to(single) - expected).abs().max().item() <= torch.finfo(Q.real.dtype).eps


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
def test_second_derivatives(dtype):
    # The backward is written in terms of the output Q, so it is itself differentiable.
    X = randn(2, 4, 4, seed=11, dtype=dtype).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda X: cayley(X - X.mH), (X,))


def test_zero_and_empty_inputs():
    assert torch.equal(cayley(torch.zeros(3, 3)), torch.eye(3))
    assert cayley(torch.zeros(2, 0, 0)).shape == (2, 0, 0)
    assert cayley(torch.zeros(0, 4, 4)).shape == (0, 4, 4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        cayley(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        cayley(torch.zeros(3))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 7),
    log_scale=st.floats(-3.0, 2.0),
    complex_=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_unitary_and_inverse_of_negation(n, log_scale, complex_, seed):
    dtype = torch.complex128 if complex_ else torch.float64
    A = random_skew(n, n, seed=seed, dtype=dtype, scale=10.0**log_scale)
    Q = cayley(A)
    eye = torch.eye(n, dtype=dtype)
    assert (Q.mH @ Q - eye).abs().max().item() < 1e-13
    # cay(-A) = cay(A)⁻¹ = cay(A)ᴴ, and the inverse Cayley map 2(Q - I)(Q + I)⁻¹ recovers A.
    assert (cayley(-A) - Q.mH).abs().max().item() < 1e-13
    recovered = 2 * torch.linalg.solve(Q + eye, Q - eye, left=False)
    assert (recovered - A).abs().max().item() < 1e-11 * (1 + A.abs().max().item())


# --- rotated_cayley: the base product fused into the solve -----------------------------------


def _unitary(*shape: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return qr_positive(randn(*shape, seed=seed, dtype=dtype))


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("batch", [(), (3,)])
def test_rotated_cayley_is_the_base_times_the_map(dtype, batch):
    B = _unitary(*batch, 7, 7, seed=1, dtype=dtype)
    A = random_skew(*batch, 7, 7, seed=2, dtype=dtype, scale=2.0)
    torch.testing.assert_close(rotated_cayley(B, A), B @ torch_cayley(A), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
def test_rotated_cayley_gradients(dtype):
    B = _unitary(2, 5, 5, seed=3, dtype=dtype)
    X = randn(2, 5, 5, seed=4, dtype=dtype).requires_grad_()

    def rotated(X: torch.Tensor) -> torch.Tensor:
        return rotated_cayley(B, X - X.mH)

    assert torch.autograd.gradcheck(rotated, (X,))
    assert torch.autograd.gradgradcheck(rotated, (X,))
    # Against autograd through the unfused oracle, B receiving no gradient in either.
    G = randn(2, 5, 5, seed=5, dtype=dtype)
    ours = torch.autograd.grad(torch.real((rotated(X) * G).sum()), X)[0]
    oracle = torch.autograd.grad(torch.real((B @ torch_cayley(X - X.mH) * G).sum()), X)[0]
    torch.testing.assert_close(ours, oracle, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", SINGLE)
def test_rotated_cayley_in_single_precision(dtype):
    B = _unitary(64, 64, seed=6, dtype=WIDE[dtype])
    A = random_skew(64, 64, seed=7, dtype=WIDE[dtype], scale=0.1)
    G = randn(64, 64, seed=8, dtype=WIDE[dtype])
    reference, grad_reference = value_and_grad(lambda A: B @ torch_cayley(A), A, G)
    single = B.to(dtype)
    value, grad = value_and_grad(lambda A: rotated_cayley(single, A), A.to(dtype), G.to(dtype))
    assert relative_error(value.to(WIDE[dtype]), reference) < 1e-5
    assert relative_error(grad.to(WIDE[dtype]), grad_reference) < 1e-5


def test_rotated_cayley_half_precision_and_bad_shapes():
    B = _unitary(4, 4, seed=9, dtype=torch.float32)
    A = random_skew(4, 4, seed=10, dtype=torch.float32)
    Q = rotated_cayley(B.bfloat16(), A.bfloat16())
    assert Q.dtype == torch.bfloat16
    torch.testing.assert_close(Q.float(), B @ torch_cayley(A), atol=3e-2, rtol=0)
    with pytest.raises(ValueError, match="one size"):
        rotated_cayley(torch.eye(3), A)
    with pytest.raises(ValueError, match="square matrices"):
        rotated_cayley(torch.eye(4), torch.zeros(4, 3))


# --- rotated_cayley_lower: the skew part and the base product in one LU -------------------------


@pytest.fixture
def lu_from_small(monkeypatch):
    """The LU route from n = 4 on, so that matrices small enough for gradcheck take it."""
    monkeypatch.setattr(cayley_module, "_LU_FROM", 4)


def _lower_oracle(B: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    L = X.tril()
    return B @ torch_cayley(L - L.mH)


@pytest.mark.parametrize("lu", [True, False], ids=["lu", "below-lu"])
@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("batch", [(), (3,)])
def test_rotated_cayley_lower_matches_torch(monkeypatch, lu, dtype, batch):
    if lu:
        monkeypatch.setattr(cayley_module, "_LU_FROM", 4)
    B = _unitary(*batch, 7, 7, seed=11, dtype=dtype)
    X = 2.0 * randn(*batch, 7, 7, seed=12, dtype=dtype)
    G = randn(*batch, 7, 7, seed=13, dtype=dtype)
    value, grad = value_and_grad(lambda X: rotated_cayley_lower(B, X), X, G)
    expected, expected_grad = value_and_grad(lambda X: _lower_oracle(B, X), X, G)
    torch.testing.assert_close(value, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(rotated_cayley_lower(B, X), value, atol=1e-13, rtol=0)


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
def test_rotated_cayley_lower_gradcheck_and_broadcasts(lu_from_small, dtype):
    B = _unitary(5, 5, seed=14, dtype=dtype)
    X = randn(2, 5, 5, seed=15, dtype=dtype).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: rotated_cayley_lower(B, X), (X,))
    # A batch of bases for one X: the gradient sums over the batch.
    bases = _unitary(3, 5, 5, seed=16, dtype=dtype)
    single = randn(5, 5, seed=17, dtype=dtype).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: rotated_cayley_lower(bases, X), (single,))
    # Both routes broadcast the same way and agree.
    expected = _lower_oracle(bases, single.detach())
    torch.testing.assert_close(rotated_cayley_lower(bases, single).detach(), expected)
    with torch.no_grad():
        torch.testing.assert_close(rotated_cayley_lower(bases, single), expected)


def test_rotated_cayley_lower_takes_no_base_gradient_nor_second_derivatives(lu_from_small):
    B = _unitary(6, 6, seed=18).requires_grad_()
    X = randn(6, 6, seed=19).requires_grad_()
    (grad,) = torch.autograd.grad(rotated_cayley_lower(B, X), X, randn(6, 6, seed=20), True)
    assert not grad.requires_grad
    rotated_cayley_lower(B, X).sum().backward()
    assert B.grad is None


@pytest.mark.parametrize("dtype", SINGLE)
@pytest.mark.parametrize("n", [256, 300])
def test_rotated_cayley_lower_in_single_precision(dtype, n):
    B = _unitary(n, n, seed=21, dtype=WIDE[dtype])
    X = randn(n, n, seed=22, dtype=WIDE[dtype]) * 0.1
    G = randn(n, n, seed=23, dtype=WIDE[dtype])
    reference, grad_reference = value_and_grad(lambda X: _lower_oracle(B, X), X, G)
    value, grad = value_and_grad(
        lambda X: rotated_cayley_lower(B.to(dtype), X), X.to(dtype), G.to(dtype)
    )
    eye = torch.eye(n, dtype=WIDE[dtype])
    Q = value.to(WIDE[dtype])
    assert (Q.mH @ Q - eye).abs().max().item() <= 10 * n * torch.finfo(torch.float32).eps
    assert relative_error(Q, reference) < 1e-5
    assert relative_error(grad.to(WIDE[dtype]), grad_reference) < 1e-5


def test_rotated_cayley_lower_vmap_and_compile(lu_from_small):
    B = _unitary(3, 6, 6, seed=24, dtype=torch.float32)
    X = randn(3, 6, 6, seed=25, dtype=torch.float32)
    G = randn(3, 6, 6, seed=26, dtype=torch.float32)
    assert_vmap_and_compile_agree(rotated_cayley_lower, B, X, G, backend="aot_eager")


def test_rotated_cayley_lower_half_precision_and_bad_shapes(lu_from_small):
    B = _unitary(6, 6, seed=27, dtype=torch.float32)
    X = randn(6, 6, seed=28, dtype=torch.float32)
    Q = rotated_cayley_lower(B.bfloat16(), X.bfloat16().requires_grad_())
    assert Q.dtype == torch.bfloat16
    torch.testing.assert_close(Q.float(), _lower_oracle(B, X.bfloat16().float()), atol=3e-2, rtol=0)
    with pytest.raises(ValueError, match="one size"):
        rotated_cayley_lower(torch.eye(5), X)
    with pytest.raises(ValueError, match="square matrices"):
        rotated_cayley_lower(torch.eye(6), torch.zeros(6, 5))
    assert rotated_cayley_lower(torch.eye(0), torch.zeros(0, 0)).shape == (0, 0)
