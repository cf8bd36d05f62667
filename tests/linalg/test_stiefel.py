"""The O(nk²) Stiefel maps against torch's n x n route: values, gradients, accuracy, batching."""

from __future__ import annotations

import doctest
import functools

import numpy as np
import pytest
import scipy.linalg
import torch

import geoparam.linalg.stiefel as stiefel_module
from geoparam.linalg.stiefel import stiefel_cayley, stiefel_expm

MAPS = {"matrix_exp": stiefel_expm, "cayley": stiefel_cayley}
SHAPES = [(6, 2), (33, 5), (64, 16), (3, 2, 20, 4), (4, 4)]


def _embedded_skew(X: torch.Tensor) -> torch.Tensor:
    # Torch's embedding, written out again so the oracle shares no code with the kernel.
    n, k = X.shape[-2:]
    padded = torch.cat([X.tril(), X.new_zeros(*X.shape[:-2], n, n - k)], dim=-1)
    return padded - padded.mH


def _reference(name: str, X: torch.Tensor) -> torch.Tensor:
    """The ``n x n`` route of ``torch.nn.utils.parametrizations.orthogonal``."""
    A = _embedded_skew(X)
    if name == "matrix_exp":
        Q = torch.matrix_exp(A)
    else:
        eye = torch.eye(A.size(-1), dtype=A.dtype)
        Q = torch.linalg.solve(eye - 0.5 * A, eye + 0.5 * A)
    return Q[..., : X.size(-1)]


def _sample(shape, dtype, scale, seed=0):
    # Drawn in float64 and rounded, so every precision sees the same matrix.
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(shape, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        X = torch.complex(X, torch.randn(shape, generator=generator, dtype=torch.float64))
    return (scale * X).to(dtype)


def _gradient(f, X, G):
    X = X.detach().requires_grad_()
    # Re⟨G, f(X)⟩ is a real loss whose gradient is the vector-Jacobian product with G.
    (torch.real(G.conj() * f(X)).sum()).backward()
    return X.grad


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0])
def test_equals_reference_and_its_gradient(name, shape, dtype, scale):
    X = _sample(shape, dtype, scale)
    G = _sample(shape, dtype, 1.0, seed=1)
    f = MAPS[name]
    torch.testing.assert_close(f(X), _reference(name, X), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        _gradient(f, X, G), _gradient(lambda Y: _reference(name, Y), X, G), rtol=0, atol=1e-11
    )


@pytest.mark.parametrize("name", MAPS)
def test_zero_maps_to_identity_columns_with_identity_derivative(name):
    # Training starts at X = 0; the derivative there must be the reference's, finite and exact.
    X = torch.zeros(9, 3, dtype=torch.float64)
    torch.testing.assert_close(MAPS[name](X), torch.eye(9, 3, dtype=torch.float64))
    G = _sample((9, 3), torch.float64, 1.0)
    grad = _gradient(MAPS[name], X, G)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, _gradient(lambda Y: _reference(name, Y), X, G))


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_gradcheck(name, dtype, scale):
    # Full Jacobians on one matrix; the batched case in fast mode (random projections) for time.
    X = _sample((4, 2), dtype, scale).requires_grad_()
    assert torch.autograd.gradcheck(MAPS[name], (X,))
    X = _sample((2, 4, 3), dtype, scale).requires_grad_()
    assert torch.autograd.gradcheck(MAPS[name], (X,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_expm_exact_where_torch_matrix_exp_loses_digits(dtype):
    # At this size the 2k x 2k matrix has a 1-norm near 0.03, inside the band where
    # torch.matrix_exp loses up to ~4 digits in float64; scipy is the oracle here.
    X = _sample((64, 16), dtype, 1e-3)
    G = _sample((64, 16), dtype, 1.0, seed=1)
    A = _embedded_skew(X).numpy()
    G_square = np.zeros_like(A)
    G_square[:, :16] = G.numpy()
    W = scipy.linalg.expm_frechet(A.conj().T, G_square, compute_expm=False)
    expected_grad = torch.from_numpy(W - W.conj().T)[:, :16].tril()
    expected = torch.from_numpy(scipy.linalg.expm(A)[:, :16])
    torch.testing.assert_close(stiefel_expm(X), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(_gradient(stiefel_expm, X, G), expected_grad, rtol=0, atol=5e-14)


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 10.0])
def test_float32_orthonormal_columns(name, dtype, scale):
    n, k = 512, 32
    Q = MAPS[name](_sample((n, k), dtype, scale))
    error = (Q.mH @ Q - torch.eye(k, dtype=dtype)).abs().max()
    assert error <= 10 * n * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("scale", [1e-3, 1.0])
def test_float32_gradient_matches_float64(name, dtype, scale):
    shape, wide = (64, 16), torch.complex128 if dtype.is_complex else torch.float64
    X, G = _sample(shape, dtype, scale), _sample(shape, dtype, 1.0, seed=1)
    low = _gradient(MAPS[name], X, G)
    high = _gradient(MAPS[name], X.to(wide), G.to(wide))
    assert ((low.to(wide) - high).norm() / high.norm()).item() <= 1e-5


# torch's forward-mode AD scripts its decompositions on first use, which warns inside torch.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", MAPS)
def test_torch_func_transforms_match_reference(name):
    # vmap-based jacrev and forward-mode jvp go through the custom derivative rules too
    # (torch.func.jacrev takes real inputs only).
    X, V = _sample((5, 2), torch.float64, 1.0), _sample((5, 2), torch.float64, 1.0, seed=1)
    f, reference = MAPS[name], functools.partial(_reference, name)
    torch.testing.assert_close(
        torch.func.jacrev(f)(X), torch.func.jacrev(reference)(X), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        torch.func.jvp(f, (X,), (V,)), torch.func.jvp(reference, (X,), (V,)), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name", MAPS)
def test_batch_equals_loop(name):
    X = _sample((3, 2, 20, 4), torch.float64, 1.0)
    looped = torch.stack([MAPS[name](x) for x in X.reshape(6, 20, 4)]).reshape(X.shape)
    torch.testing.assert_close(MAPS[name](X), looped, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(name, dtype):
    X = _sample((16, 4), torch.float32, 1.0).to(dtype)
    Q = MAPS[name](X)
    assert Q.dtype == dtype
    torch.testing.assert_close(Q, MAPS[name](X.float()).to(dtype))


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("shape", [(3, 5), (4,)])
def test_rejects_non_tall_input(name, shape):
    with pytest.raises(ValueError, match=r"tall matrix of shape \(\.\.\., n, k\) with n >= k"):
        MAPS[name](torch.zeros(shape))


def test_docstring_examples_run():
    result = doctest.testmod(stiefel_module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
