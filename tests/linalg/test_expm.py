"""Tests for geoparam.linalg.expm: the exponential of skew matrices and its backward."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import relative_error

from geoparam.linalg import expm as expm_module
from geoparam.linalg.expm import expm_skew

REAL_AND_COMPLEX = [torch.float64, torch.complex128]


def random_skew(*shape: int, norm: float, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A random skew matrix (batch) with spectral norm ``norm`` (per matrix)."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(*shape, generator=generator, dtype=dtype)
    A = (X - X.mH).to(torch.complex128 if dtype.is_complex else torch.float64)
    spectral = torch.linalg.matrix_norm(A, 2)[..., None, None]
    # A real 1×1 skew matrix is zero: leave it so.
    return (A * (norm / spectral.clamp_min(1e-300))).to(dtype)


def frechet_adjoint(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Gradient of Re⟨G, exp(A)⟩ in A: the Fréchet derivative at Aᴴ applied to G."""
    return scipy.linalg.expm_frechet(A.conj().T, G, compute_expm=False)


# Norms that land, in float64, in each branch: degree 8, 12, 18, and 18 with squarings.
NORMS = [0.03, 0.2, 0.9, 10.0]


@pytest.mark.parametrize(
    ("dtype", "norm", "degree", "squarings"),
    [
        (torch.float64, 0.02, 8, 0),
        (torch.float64, 0.2, 12, 0),
        (torch.float64, 0.9, 18, 0),
        (torch.float64, 10.0, 18, 4),
        # float32 tolerates larger steps.
        (torch.float32, 0.2, 8, 0),
        (torch.float32, 0.9, 12, 0),
        (torch.float32, 2.0, 18, 0),
        (torch.float32, 10.0, 18, 2),
    ],
)
def test_norms_reach_every_branch(dtype, norm, degree, squarings):
    A = random_skew(5, 5, norm=norm, dtype=dtype)
    _, _, plan = torch.ops.geoparam.expm_skew(A)
    assert plan.tolist() == [degree, squarings]


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("norm", NORMS)
def test_gradcheck(dtype, norm):
    X = random_skew(2, 5, 5, norm=norm, dtype=dtype, seed=1) / 2
    X = (X + torch.randn_like(X) * 0.01 * norm).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: expm_skew(X - X.mH), (X,))


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("norm", [*NORMS, 300.0])
def test_forward_matches_scipy(dtype, norm):
    A = random_skew(12, 12, norm=norm, dtype=dtype, seed=2)
    expected = torch.from_numpy(scipy.linalg.expm(A.numpy()))
    # exp(A) is unitary, so an absolute error is a relative one; squaring multiplies rounding.
    tolerance = 1e-14 * (1 + math.log2(1 + norm)) * 12
    assert (expm_skew(A) - expected).abs().max().item() < tolerance


def _skew_part(M: torch.Tensor) -> torch.Tensor:
    return (M - M.mH) / 2


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("norm", NORMS)
def test_backward_matches_scipy_frechet(dtype, norm):
    A = random_skew(12, 12, norm=norm, dtype=dtype, seed=3).requires_grad_(True)
    G = torch.randn(12, 12, dtype=dtype, generator=torch.Generator().manual_seed(4))
    expm_skew(A).backward(G)
    expected = torch.from_numpy(frechet_adjoint(A.detach().numpy(), G.numpy()))
    assert relative_error(A.grad, expected) < 1e-12 * (1 + norm)


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
@pytest.mark.parametrize("norm", [300.0, 1e3, 1e4])
def test_backward_at_large_norms_matches_frechet_along_skew_directions(dtype, norm):
    # At these norms the forward pass ends with a Newton-Schulz step (it keeps QᴴQ = I), whose
    # derivative is the identity on the tangent directions Q·skew that skew perturbations of A
    # produce: along skew directions, the only ones a parametrization A = L - Lᴴ moves in, the
    # gradient is exp's own. (Along the others the step projects back onto the tangent space.)
    A = random_skew(12, 12, norm=norm, dtype=dtype, seed=3).requires_grad_(True)
    G = torch.randn(12, 12, dtype=dtype, generator=torch.Generator().manual_seed(4))
    Q = expm_skew(A)
    Q.backward(G)
    expected = torch.from_numpy(frechet_adjoint(A.detach().numpy(), G.numpy()))
    assert relative_error(_skew_part(A.grad), _skew_part(expected)) < 1e-12 * (1 + norm)
    eye = torch.eye(12, dtype=dtype)
    assert (Q.detach().mH @ Q.detach() - eye).abs().max() < 10 * 12 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", REAL_AND_COMPLEX)
def test_gradcheck_at_large_norm(dtype):
    # ‖A‖ = 10³: 10 squarings and the Newton-Schulz step, differentiated as a whole.
    X = random_skew(2, 5, 5, norm=500.0, dtype=dtype, seed=6)
    X = (X + 0.01 * torch.randn_like(X)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: expm_skew(X - X.mH), (X,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_batches_match_single_matrices(dtype):
    n = 7
    # Mixed norms in one batch: every matrix is computed with the largest one's scaling.
    norms = torch.logspace(-2, 1.5, 12, dtype=torch.float64).reshape(3, 4)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    A = random_skew(3, 4, n, n, norm=1.0, dtype=wide)
    A = (A * norms[..., None, None]).to(dtype).requires_grad_(True)
    G = torch.randn(3, 4, n, n, dtype=dtype, generator=torch.Generator().manual_seed(5))
    Q = expm_skew(A)
    Q.backward(G)
    assert Q.shape == A.grad.shape == (3, 4, n, n)
    A64 = A.detach().to(wide)
    for index in np.ndindex(3, 4):
        expected_Q = scipy.linalg.expm(A64[index].numpy())
        expected_grad = frechet_adjoint(A64[index].numpy(), G[index].to(A64.dtype).numpy())
        assert np.abs(Q[index].detach().numpy() - expected_Q).max() < 1e-5
        # The largest norm takes the Newton-Schulz step: compare along skew directions.
        got = _skew_part(A.grad[index].to(A64.dtype))
        assert relative_error(got, _skew_part(torch.from_numpy(expected_grad))) < 1e-5


@pytest.mark.parametrize("n", [8, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_orthogonal_in_single_precision(n, dtype):
    X = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(n))
    Q = expm_skew(X - X.mH)  # ‖A‖₂ ≈ 2√(2n): several squarings
    eye = torch.eye(n, dtype=dtype)
    eps = torch.finfo(Q.real.dtype).eps
    assert torch.linalg.matrix_norm(Q.mH @ Q - eye, 2).item() <= 10 * n * eps


@pytest.mark.parametrize("scale", [1.0, 8.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_gradient_accuracy_in_single_precision(scale, dtype):
    n = 64
    X = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(6))
    A = (X - X.mH) * (scale / math.sqrt(n))
    G = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(7))
    A.requires_grad_(True)
    expm_skew(A).backward(G)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    expected = frechet_adjoint(A.detach().to(wide).numpy(), G.to(wide).numpy())
    # At scale 8 (‖A‖ ≈ 23) the Newton-Schulz step is taken: compare along skew directions.
    got, expected = _skew_part(A.grad.to(wide)), _skew_part(torch.from_numpy(expected))
    assert relative_error(got, expected) <= 1e-5


def test_gradient_error_independent_of_gradient_scale():
    n = 64
    X = torch.randn(n, n, generator=torch.Generator().manual_seed(8))
    A = X - X.mT  # large norm: the squaring chain is long
    G = torch.randn(n, n, generator=torch.Generator().manual_seed(9))
    expected = _skew_part(torch.from_numpy(frechet_adjoint(A.double().numpy(), G.double().numpy())))

    def error(scale: float) -> float:
        leaf = A.clone().requires_grad_(True)
        expm_skew(leaf).backward(G * scale)
        return relative_error(_skew_part(leaf.grad.double()) / scale, expected)

    # An AMP-style loss scale, and one that is not a power of two.
    base = error(1.0)
    assert error(65536.0) <= 1.5 * base
    assert error(65536.0 * math.pi) <= 1.5 * base


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    X = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(10))
    A = (X - X.mT).to(dtype).requires_grad_(True)
    Q = expm_skew(A)
    Q.sum().backward()
    assert Q.dtype == A.grad.dtype == dtype
    expected = torch.matrix_exp(A.detach().float())
    assert (Q.float() - expected).abs().max().item() <= 2 * torch.finfo(dtype).eps


def scheme_polynomial(B: torch.Tensor, degree: int) -> torch.Tensor:
    """The degree-``degree`` scheme evaluated on a batch ``B``, through a workspace it fills."""
    B2 = B @ B
    powers = {8: (B, B2), 12: (B, B2, B2 @ B), 18: (B, B2, B2 @ B, B2 @ B @ B2 @ B)}[degree]
    workspace = B.new_zeros((expm_module._SLOTS, *B.shape))
    workspace[: len(powers)] = torch.stack(powers)
    return expm_module._SCHEMES[degree](workspace, into_workspace=False)


@pytest.mark.parametrize("degree", [8, 12, 18])
def test_schemes_are_the_taylor_polynomials(degree):
    """On the nilpotent shift N, row 0 of p(N) lists the coefficients of the polynomial p."""
    shift = torch.diag(torch.ones(degree + 3, dtype=torch.float64), 1)[None]
    T = scheme_polynomial(shift, degree)
    coefficients = [1 / math.factorial(k) for k in range(degree + 1)] + [0.0] * 3
    expected = torch.tensor(coefficients, dtype=torch.float64)
    torch.testing.assert_close(T[0, 0], expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("degree", [8, 12, 18])
def test_schemes_reach_unit_roundoff_at_their_threshold(degree):
    """The coefficient tables and thresholds: at ‖B‖₂ = θ, T_m(B) ≈ exp(B) to ~unit roundoff."""
    theta = expm_module._THETA[torch.float64][degree]
    B = random_skew(1, 10, 10, norm=theta, seed=11)
    T = scheme_polynomial(B, degree)
    assert (T[0] - torch.from_numpy(scipy.linalg.expm(B[0].numpy()))).abs().max() < 1e-14


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 6),
    log_norm=st.floats(-4.0, 2.5),
    complex_=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_scipy(n, log_norm, complex_, seed):
    dtype = torch.complex128 if complex_ else torch.float64
    norm = 10.0**log_norm
    A = random_skew(n, n, norm=norm, dtype=dtype, seed=seed).requires_grad_(True)
    G = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
    Q = expm_skew(A)
    Q.backward(G)
    A_np = A.detach().numpy()
    tolerance = 1e-13 * (1 + norm)
    assert np.abs(Q.detach().numpy() - scipy.linalg.expm(A_np)).max() < tolerance
    expected = _skew_part(torch.from_numpy(frechet_adjoint(A_np, G.numpy()))).numpy()
    got = _skew_part(A.grad).numpy()
    # (A real 1 x 1 skew matrix is zero, and so is the skew part of its gradient.)
    assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()


def test_zero_and_empty_inputs():
    assert torch.equal(expm_skew(torch.zeros(3, 3)), torch.eye(3))
    assert expm_skew(torch.zeros(2, 0, 0)).shape == (2, 0, 0)
    assert expm_skew(torch.zeros(0, 4, 4)).shape == (0, 4, 4)


def test_non_finite_matrix_leaves_the_rest_of_the_batch_accurate():
    A = random_skew(3, 6, 6, norm=20.0, seed=12)
    A[1, 0, 1] = float("nan")
    A[2, 2, 3] = float("inf")
    Q = expm_skew(A)
    assert Q[1:].isnan().any(dim=(-2, -1)).all()
    assert (Q[0] - torch.from_numpy(scipy.linalg.expm(A[0].numpy()))).abs().max() < 1e-13


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        expm_skew(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        expm_skew(torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point or complex"):
        expm_skew(torch.zeros(3, 3, dtype=torch.int64))


def test_docstring_example_runs():
    failures, _ = doctest.testmod(expm_module, extraglobs={"torch": torch}, verbose=False)
    assert failures == 0
