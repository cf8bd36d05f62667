"""Tests for geoparam.linalg.lyapunov: the Lyapunov equation A X + X Aᴴ = C by the sign function."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import randn, relative_error

from geoparam.linalg import solve_lyapunov

SIZES = [1, 2, 5, 64, 256]


def _stable(n: int, seed: int, dtype=torch.float64, margin: float = 0.5) -> torch.Tensor:
    """A dense random matrix shifted left: ``M - (max Re λ(M) + margin) I``."""
    M = randn(n, n, seed=seed, dtype=dtype)
    shift = torch.linalg.eigvals(M).real.max() + margin
    return M - shift * torch.eye(n, dtype=dtype)


def _non_normal(
    n: int, seed: int, dtype=torch.float64, margin: float = 0.5, strength: float = 2.0
) -> torch.Tensor:
    """A triangular matrix with a large off-diagonal part, in a random orthogonal basis.

    Its eigenvalues are those of the diagonal, in ``[-margin - 3, -margin]`` or so, but its
    eigenvectors are far from orthogonal (condition number 5e11 at n = 64, 7e15 at n = 256 for
    the default ``strength``), which makes the early sign iterates ill-conditioned.
    """
    eigenvalues = -margin - randn(n, seed=seed).abs()
    N = strength / n**0.5 * torch.triu(randn(n, n, seed=seed + 1), diagonal=1)
    Q, _ = torch.linalg.qr(randn(n, n, seed=seed + 2))
    return (Q @ (torch.diag(eigenvalues) + N) @ Q.T).to(dtype)


def _scipy(A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(scipy.linalg.solve_continuous_lyapunov(A.numpy(), C.numpy()))


def _residual(A: torch.Tensor, X: torch.Tensor, C: torch.Tensor) -> float:
    """``‖A X + X Aᴴ - C‖ / (2 ‖A‖ ‖X‖)``: of the order of rounding for a backward-stable solve."""
    R = A @ X + X @ A.mH - C
    return (torch.linalg.norm(R) / (2 * torch.linalg.norm(A) * torch.linalg.norm(X))).item()


def _loop(A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Each matrix solved alone: the batch oracle."""
    batch = torch.broadcast_shapes(A.shape[:-2], C.shape[:-2])
    n = A.size(-1)
    A_flat = A.expand(*batch, n, n).reshape(-1, n, n)
    C_flat = C.expand(*batch, n, n).reshape(-1, n, n)
    X = [solve_lyapunov(a, c) for a, c in zip(A_flat, C_flat, strict=True)]
    return torch.stack(X).reshape(*batch, n, n)


# ---------------------------------------------------------------------------------------------
# Against scipy


@pytest.mark.parametrize("make", [_stable, _non_normal])
@pytest.mark.parametrize("n", SIZES)
def test_matches_scipy(n, make):
    A = make(n, seed=n)
    C = randn(n, n, seed=n + 100)
    X = solve_lyapunov(A, C)
    assert X.dtype == torch.float64
    assert relative_error(X, _scipy(A, C)) < 1e-11
    assert _residual(A, X, C) < 1e-13


@pytest.mark.parametrize("n", [1, 5, 32])
def test_complex_matches_scipy(n):
    A = _stable(n, seed=n, dtype=torch.complex128)
    C = randn(n, n, seed=n + 100, dtype=torch.complex128)
    X = solve_lyapunov(A, C)
    assert X.dtype == torch.complex128
    assert relative_error(X, _scipy(A, C)) < 1e-11
    assert _residual(A, X, C) < 1e-13


@pytest.mark.parametrize("n", [5, 64])
def test_close_to_the_imaginary_axis(n):
    # Eigenvalues within 1e-3 of the axis: the Lyapunov operator is ill-conditioned, and the sign
    # function method is not backward stable: its residual can exceed scipy's (measured: 1e-16
    # here, as scipy's, but 2e-13 at n = 256 against scipy's 2e-16).
    A = _stable(n, seed=n, margin=1e-3)
    C = randn(n, n, seed=n + 100)
    X = solve_lyapunov(A, C)
    assert relative_error(X, _scipy(A, C)) < 1e-9
    assert _residual(A, X, C) < 1e-13


def test_strongly_non_normal_a_keeps_a_small_residual():
    # ‖X‖ ≈ 1e9 for ‖C‖ ≈ 16. With A⁻¹ W A⁻ᴴ formed from the explicit inverse the residual was
    # 2e-7; with triangular solves it is 2e-11 (scipy's Bartels-Stewart: 1e-16).
    A = _non_normal(16, seed=16, strength=12.0)
    C = randn(16, 16, seed=116)
    X = solve_lyapunov(A, C)
    assert _residual(A, X, C) < 1e-9
    assert relative_error(X, _scipy(A, C)) < 1e-6


def test_closed_form_near_the_axis():
    # A = [[0, 1], [-1, -e]] has eigenvalues -e/2 ± i·sqrt(1 - e²/4); with C = -I the solution
    # is [[1/e + e/2, -1/2], [-1/2, 1/e]], of size 1/e.
    e = 1e-10
    A = torch.tensor([[0.0, 1.0], [-1.0, -e]], dtype=torch.float64)
    expected = torch.tensor([[1 / e + e / 2, -0.5], [-0.5, 1 / e]], dtype=torch.float64)
    X = solve_lyapunov(A, -torch.eye(2, dtype=torch.float64))
    assert relative_error(X, expected) < 1e-10


def test_large_double_precision_problem_runs():
    # The size the registration uses at most; the solve takes about 0.1 s on one thread.
    A = _stable(256, seed=7)
    C = randn(256, 256, seed=8)
    X = solve_lyapunov(A, C)
    assert X.shape == (256, 256)
    assert _residual(A, X, C) < 1e-13


@pytest.mark.parametrize("n", [1, 3, 6])
def test_diagonal_a_has_the_elementwise_solution(n):
    # With A = diag(a): X_ij (a_i + conj(a_j)) = C_ij.
    a = -1.0 - randn(n, seed=9).abs()
    C = randn(n, n, seed=10)
    expected = C / (a[:, None] + a[None, :])
    torch.testing.assert_close(solve_lyapunov(torch.diag(a), C), expected, rtol=1e-14, atol=0)


def test_gramian_of_a_stable_system_is_positive_definite():
    # The controllability Gramian: A X + X Aᵀ = -B Bᵀ with (A, B) controllable has X ≻ 0.
    A = _non_normal(8, seed=11)
    B = randn(8, 8, seed=12)
    X = solve_lyapunov(A, -B @ B.T)
    torch.testing.assert_close(X, X.T, rtol=0, atol=1e-12 * float(torch.linalg.norm(X)))
    assert float(torch.linalg.eigvalsh((X + X.T) / 2).min()) > 0


# ---------------------------------------------------------------------------------------------
# Dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_single_precision_is_solved_in_double_and_cast_back(dtype):
    A = _stable(16, seed=13, dtype=dtype)
    C = randn(16, 16, seed=14, dtype=dtype)
    X = solve_lyapunov(A, C)
    assert X.dtype == dtype
    # The reference is the exact solution for the rounded (single-precision) inputs: computed in
    # double precision, the result is that solution rounded once.
    double = torch.complex128 if dtype.is_complex else torch.float64
    reference = _scipy(A.to(double), C.to(double))
    torch.testing.assert_close(X, reference.to(dtype), rtol=1e-6, atol=1e-6)


def test_large_single_precision_problem_runs():
    A = _stable(256, seed=15, dtype=torch.float32)
    C = randn(256, 256, seed=16, dtype=torch.float32)
    X = solve_lyapunov(A, C)
    assert X.dtype == torch.float32
    assert relative_error(X.double(), _scipy(A.double(), C.double())) < 1e-6


def test_real_a_with_complex_c_gives_a_complex_solution():
    A = _stable(5, seed=17)
    C = randn(5, 5, seed=18, dtype=torch.complex128)
    X = solve_lyapunov(A, C)
    assert X.dtype == torch.complex128
    assert relative_error(X, _scipy(A.to(torch.complex128), C)) < 1e-12


# ---------------------------------------------------------------------------------------------
# Batches


def test_batch_solves_each_matrix_as_alone():
    A = torch.stack([_stable(5, seed=s) for s in range(6)]).reshape(2, 3, 5, 5)
    A[1, 2] = _non_normal(5, seed=19)  # a slower matrix: the others stop earlier
    C = randn(2, 3, 5, 5, seed=20)
    torch.testing.assert_close(solve_lyapunov(A, C), _loop(A, C), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("a_batch", "c_batch"), [((), (4,)), ((4,), ()), ((3, 1), (2,)), ((1,), (2, 1))]
)
def test_batch_dimensions_broadcast(a_batch, c_batch):
    A = _stable(4, seed=21).expand(*a_batch, 4, 4).clone()
    if A.dim() > 2:
        A = A + 0.1 * randn(*A.shape, seed=22)  # distinct (still stable) matrices
    C = randn(*c_batch, 4, 4, seed=23)
    X = solve_lyapunov(A, C)
    assert X.shape == (*torch.broadcast_shapes(a_batch, c_batch), 4, 4)
    torch.testing.assert_close(X, _loop(A, C), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("a_shape", "c_shape"), [((0, 3, 3), (3, 3)), ((0, 0), (0, 0))])
def test_empty_input_gives_an_empty_solution(a_shape, c_shape):
    X = solve_lyapunov(torch.zeros(a_shape), torch.zeros(c_shape))
    assert X.shape == torch.broadcast_shapes(a_shape, c_shape)


# ---------------------------------------------------------------------------------------------
# Property


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    margin=st.sampled_from([1e-2, 0.1, 1.0, 10.0]),
    complex_=st.booleans(),
)
def test_solution_satisfies_the_equation_property(n, seed, margin, complex_):
    dtype = torch.complex128 if complex_ else torch.float64
    A = _stable(n, seed=seed, dtype=dtype, margin=margin)
    C = randn(n, n, seed=seed + 1, dtype=dtype)
    X = solve_lyapunov(A, C)
    assert _residual(A, X, C) < 1e-13
    assert relative_error(X, _scipy(A, C)) < 1e-9


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("a_shape", "c_shape", "match"),
    [
        ((3, 4), (3, 4), r"square A .* \(3, 4\)"),
        ((3,), (3,), r"square A .* \(3,\)"),
        ((3, 3), (3, 4), r"same n x n .* \(3, 3\) .* \(3, 4\)"),
        ((3, 3), (3,), r"same n x n"),
        ((2, 3, 3), (4, 3, 3), r"do not broadcast, .* \(2, 3, 3\) .* \(4, 3, 3\)"),
    ],
)
def test_rejects_mismatched_shapes(a_shape, c_shape, match):
    with pytest.raises(ValueError, match=match):
        solve_lyapunov(-torch.ones(a_shape), torch.ones(c_shape))


@pytest.mark.parametrize("which", ["A", "C"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_rejects_non_finite_input(which, value):
    A, C = -torch.eye(3), torch.eye(3)
    (A if which == "A" else C)[1, 2] = value
    with pytest.raises(ValueError, match=f"{which} .* not finite"):
        solve_lyapunov(A, C)


def test_rejects_integer_input():
    with pytest.raises(ValueError, match="floating or complex A"):
        solve_lyapunov(-torch.eye(3, dtype=torch.long), torch.eye(3))


@pytest.mark.parametrize(
    "A",
    [
        torch.diag(torch.tensor([-1.0, 0.5, -2.0])),  # a positive eigenvalue
        torch.tensor([[0.0, 1.0], [-1.0, 0.0]]),  # eigenvalues ±i, on the axis
        torch.tensor([[0.0, 2.0], [-0.5, 0.0]]),  # ±i, not orthogonal
        torch.zeros(3, 3),  # singular
        torch.eye(4),  # antistable: sign(A) = I
        torch.tensor([[-1.0, 100.0], [0.0, 1e-3]]),  # barely unstable and non-normal
    ],
)
def test_rejects_unstable_a(A):
    with pytest.raises(ValueError, match="eigenvalue with non-negative real part"):
        solve_lyapunov(A, torch.eye(A.size(-1)))


def test_unstable_error_names_the_batch_index():
    A = torch.stack([_stable(3, seed=s) for s in range(4)])
    A[2] = -A[2]
    with pytest.raises(ValueError, match=r"batch index \(2,\)"):
        solve_lyapunov(A, torch.eye(3))


def test_random_unstable_matrices_are_rejected():
    # A random matrix shifted so that its rightmost eigenvalue sits at +0.1.
    for seed in range(5):
        A = _stable(6, seed=seed, margin=-0.1)
        assert float(np.linalg.eigvals(A.numpy()).real.max()) > 0
        with pytest.raises(ValueError, match="non-negative real part"):
            solve_lyapunov(A, torch.eye(6, dtype=torch.float64))
