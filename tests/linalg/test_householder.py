"""Tests for geoparam.linalg.householder: the compact-WY product of reflectors and its backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import assert_vmap_and_compile_agree, randn, relative_error, value_and_grad

from geoparam.linalg import householder
from geoparam.linalg.householder import householder_product, rotated_householder

SHAPES = [(1, 1), (4, 4), (6, 3), (7, 1), (2, 5, 3), (2, 3, 6, 6)]


def torch_householder(reflectors: torch.Tensor) -> torch.Tensor:
    """The oracle: LAPACK's sequential product, with the same τᵢ = 2 / ‖vᵢ‖²."""
    tails = reflectors.tril(diagonal=-1)
    tau = 2.0 / (1.0 + (tails * tails).sum(dim=-2))
    return torch.linalg.householder_product(tails, tau)


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (2, 5, 3)])
def test_gradcheck(shape):
    A = randn(*shape, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(householder_product, (A,))


# From 192 reflectors on, both passes split V's columns and skip the blocks its triangle zeroes:
# square, tall, odd and batched shapes on either side of the split are among these.
SPLIT_SHAPES = [(191, 191), (192, 192), (200, 193), (300, 250), (2, 256, 256)]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("shape", SHAPES + SPLIT_SHAPES)
def test_matches_torch_in_double(shape, scale):
    A = scale * randn(*shape, seed=2)
    G = randn(*shape, seed=3)
    Q, grad = value_and_grad(householder_product, A, G)
    expected_Q, expected_grad = value_and_grad(torch_householder, A, G)
    assert (Q - expected_Q).abs().max().item() < 1e-13
    # A 1 × 1 input has no free entry: both gradients are zero.
    assert (grad - expected_grad).abs().max().item() <= 1e-12 * expected_grad.abs().max().item()


def test_split_products_gradcheck():
    A = randn(196, 194, seed=15).requires_grad_(True)
    assert torch.autograd.gradcheck(householder_product, (A,), fast_mode=True)


def test_gradient_reaches_only_the_strictly_lower_part():
    A = randn(6, 4, seed=4).requires_grad_(True)
    Q = householder_product(A)
    Q.backward(randn(6, 4, seed=5))
    assert torch.equal(A.grad.triu(), torch.zeros(6, 4, dtype=A.dtype))
    # The diagonal and the upper triangle are ignored by the forward too.
    assert torch.equal(householder_product(A.detach().tril(-1).requires_grad_(True)), Q)


def test_batches_match_single_matrices():
    A = randn(3, 4, 9, 5, seed=6, dtype=torch.float32).requires_grad_(True)
    G = randn(3, 4, 9, 5, seed=7, dtype=torch.float32)
    Q = householder_product(A)
    Q.backward(G)
    for index in np.ndindex(3, 4):
        single_Q, single_grad = value_and_grad(householder_product, A[index], G[index])
        torch.testing.assert_close(Q[index].detach(), single_Q)
        torch.testing.assert_close(A.grad[index], single_grad)


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("shape", [(256, 256), (256, 32), (512, 512), (1024, 64), (300, 250)])
def test_orthonormal_in_single_precision(shape, requires_grad):
    A = randn(*shape, seed=8, dtype=torch.float32).requires_grad_(requires_grad)
    Q = householder_product(A).detach()
    eye = torch.eye(shape[1])
    n = shape[0]
    assert torch.linalg.matrix_norm(Q.mT @ Q - eye, 2).item() <= 10 * n * torch.finfo().eps


@pytest.mark.parametrize("shape", [(1024, 64), (300, 250), (512, 512)])
def test_orthonormal_as_lapacks_product(shape):
    # The UT form's weak spot is τᵢ = 2/‖vᵢ‖² taken from a rounded VᵀV; with the norms summed as
    # torch forms τ, the product is as orthonormal as orgqr's (measured: 0.3-1.6x its error).
    n = shape[0]
    A = randn(*shape, seed=16, dtype=torch.float32) / (2 * n**0.5)
    Q = householder_product(A.requires_grad_(True)).detach().double()
    expected = torch_householder(A.detach()).double()
    eye = torch.eye(shape[1], dtype=torch.float64)

    def error(W):
        return torch.linalg.matrix_norm(W.mT @ W - eye, 2).item()

    assert error(Q) <= 2.5 * error(expected)


# Without a gradient, square-ish inputs go to orgqr and tall panels (n >= 4k) to the UT form.
@pytest.mark.parametrize("shape", [(3, 40, 24), (3, 100, 20)])
def test_no_grad_route_agrees_with_the_differentiable_one(shape):
    A = randn(*shape, seed=12, dtype=torch.float32).requires_grad_(True)
    with torch.no_grad():
        inference = householder_product(A)
    assert inference.grad_fn is None
    torch.testing.assert_close(inference, householder_product(A).detach())


@pytest.mark.parametrize("shape", [(128, 128), (128, 16), (256, 256), (400, 200)])
def test_gradient_accuracy_in_single_precision(shape):
    A = randn(*shape, seed=9, dtype=torch.float32)
    G = randn(*shape, seed=10, dtype=torch.float32)
    _, expected = value_and_grad(torch_householder, A.double(), G.double())

    def error(scale: float) -> float:
        _, grad = value_and_grad(householder_product, A, G * scale)
        return relative_error(grad.double() / scale, expected)

    base = error(1.0)
    assert base <= 1e-5
    # An AMP-style loss scale changes nothing: the backward is linear in G, with no G-dependent
    # steps, so the relative error stays put.
    assert error(65536.0) <= 1.01 * base


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    A = randn(2, 12, 8, seed=11, dtype=torch.float32).to(dtype).requires_grad_(True)
    Q = householder_product(A)
    Q.sum().backward()
    assert Q.dtype == A.grad.dtype == dtype
    expected = householder_product(A.detach().float())
    assert (Q.float() - expected).abs().max().item() <= torch.finfo(dtype).eps


def test_second_derivatives_are_refused():
    A = randn(5, 3, seed=13).requires_grad_(True)
    (grad,) = torch.autograd.grad(
        householder_product(A), A, randn(5, 3, seed=14), create_graph=True
    )
    # The backward uses factors built outside the graph: it must not pretend to be differentiable.
    assert not grad.requires_grad


@pytest.mark.parametrize("requires_grad", [True, False])
def test_empty_inputs(requires_grad):
    for shape in [(3, 0), (0, 4, 3)]:
        A = torch.zeros(shape, requires_grad=requires_grad)
        assert householder_product(A).shape == shape


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n >= k"):
        householder_product(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="n >= k"):
        householder_product(torch.zeros(3))
    with pytest.raises(ValueError, match="real"):
        householder_product(torch.zeros(4, 3, dtype=torch.complex64))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 8),
    k_fraction=st.floats(0.0, 1.0),
    batch=st.integers(1, 3),
    log_scale=st.floats(-3.0, 2.0),
    seed=st.integers(0, 2**16),
)
def test_property_orthonormal_and_matches_torch(n, k_fraction, batch, log_scale, seed):
    k = max(1, round(k_fraction * n))
    A = 10.0**log_scale * randn(batch, n, k, seed=seed)
    G = randn(batch, n, k, seed=seed + 1)
    Q, grad = value_and_grad(householder_product, A, G)
    expected_Q, expected_grad = value_and_grad(torch_householder, A, G)
    assert (Q.mT @ Q - torch.eye(k, dtype=Q.dtype)).abs().max().item() < 1e-13
    assert (Q - expected_Q).abs().max().item() < 1e-13
    assert (grad - expected_grad).abs().max().item() < 1e-11 * (1 + expected_grad.abs().max())


# ---------------------------------------------------------------------------------------------
# householder_square: all n columns of the product, for re-basing.


def _explicit_product(reflectors: torch.Tensor) -> torch.Tensor:
    """The oracle, in numpy: H₁ ⋯ H_k multiplied out one reflector at a time."""
    X = reflectors.numpy()
    n, k = X.shape
    H = np.eye(n)
    for i in range(k):
        v = np.zeros(n)
        v[i] = 1.0
        v[i + 1 :] = X[i + 1 :, i]
        H = H @ (np.eye(n) - 2.0 / (v @ v) * np.outer(v, v))
    return torch.from_numpy(H)


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (6, 3), (7, 1)])
def test_householder_square_matches_explicit_product(shape):
    from geoparam.linalg import householder_square

    reflectors = randn(*shape, seed=20)
    H = householder_square(reflectors)
    torch.testing.assert_close(H, _explicit_product(reflectors), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H[:, : shape[1]], householder_product(reflectors))


def test_householder_square_batches_as_a_loop():
    from geoparam.linalg import householder_square

    reflectors = randn(2, 3, 6, 4, seed=21)
    H = householder_square(reflectors)
    assert H.shape == (2, 3, 6, 6)
    for index in np.ndindex(2, 3):
        torch.testing.assert_close(H[index], _explicit_product(reflectors[index]))


# ---------------------------------------------------------------------------------------------
# rotated_householder: B · H₁⋯H_n accumulated from the left in blocks of reflectors.


def _orthogonal_base(*shape: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.linalg.qr(randn(*shape, seed=seed, dtype=dtype)).Q


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 reflectors, so that matrices small enough for gradcheck use several."""
    monkeypatch.setattr(householder, "_BLOCK", 3)


# At the real block size (64): two blocks, three with a short last one, and a batch; 128 is the
# smallest size that uses the blocks. Tall reflectors take the map, then the base product: a
# single reflector, one row more than columns, a batch, panels on either side of
# householder_product's split.
BLOCK_SHAPES = [(128, 128), (200, 200), (2, 150, 150)]
TALL_SHAPES = [(5, 1), (7, 6), (2, 9, 4), (300, 191), (400, 200)]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("shape", BLOCK_SHAPES + TALL_SHAPES)
def test_rotated_householder_matches_the_base_times_lapacks_product(shape, scale):
    n = shape[-2]
    B = _orthogonal_base(*shape[:-2], n, n, seed=30)
    A = scale * randn(*shape, seed=31)
    G = randn(*shape, seed=32)
    Q, grad = value_and_grad(lambda X: rotated_householder(B, X), A, G)
    expected_Q, expected_grad = value_and_grad(lambda X: B @ torch_householder(X), A, G)
    assert (Q - expected_Q).abs().max().item() < 1e-13
    assert (grad - expected_grad).abs().max().item() <= 1e-12 * expected_grad.abs().max().item()
    with torch.no_grad():
        torch.testing.assert_close(rotated_householder(B, A), Q, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(7, 7), (6, 6), (2, 9, 9)])
def test_rotated_householder_gradcheck_across_blocks(small_blocks, shape):
    n = shape[-1]
    B = _orthogonal_base(*shape[:-2], n, n, seed=33)
    A = randn(*shape, seed=34).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(B, X), (A,))


def test_rotated_householder_broadcasts_the_base(small_blocks):
    B = _orthogonal_base(8, 8, seed=35)
    A = randn(2, 8, 8, seed=36).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(B, X), (A,))
    batched_base = _orthogonal_base(2, 8, 8, seed=37)
    single = randn(8, 8, seed=38).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(batched_base, X), (single,))


def test_rotated_householder_gradient_reaches_only_the_strictly_lower_part(small_blocks):
    B = _orthogonal_base(10, 10, seed=39)
    A = randn(10, 10, seed=40).requires_grad_(True)
    rotated_householder(B, A).backward(randn(10, 10, seed=41))
    assert torch.equal(A.grad.triu(), torch.zeros(10, 10, dtype=A.dtype))
    assert torch.equal(
        rotated_householder(B, A.detach().tril(-1)), rotated_householder(B, A.detach())
    )


@pytest.mark.parametrize("shape", [(6, 2), (2, 7, 3)])
def test_rotated_householder_tall_gradcheck(shape):
    n = shape[-2]
    B = _orthogonal_base(*shape[:-2], n, n, seed=61)
    A = randn(*shape, seed=62).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(B, X), (A,))
    # A base shared by a batch of tall weights.
    A = randn(3, 6, 2, seed=63).requires_grad_(True)
    shared = _orthogonal_base(6, 6, seed=64)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(shared, X), (A,))


@pytest.mark.parametrize("shape", [(64, 64), (2, 30, 30), (40, 12)])
def test_rotated_householder_outside_the_blocks_is_the_plain_product(shape):
    # Squares below two blocks, and tall reflectors: B @ householder_product, to rounding.
    n = shape[-2]
    B = _orthogonal_base(*shape[:-2], n, n, seed=42)
    A = randn(*shape, seed=43)
    G = randn(*shape, seed=44)
    Q, grad = value_and_grad(lambda X: rotated_householder(B, X), A, G)
    expected_Q, expected_grad = value_and_grad(lambda X: B @ householder_product(X), A, G)
    torch.testing.assert_close(Q, expected_Q, rtol=0, atol=1e-13)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)


def _random_signs(*shape: int, seed: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.float64).copysign_(randn(*shape, seed=seed))


# The signs scale the result's columns: in the blocks (folded into the result and the incoming
# cotangent), at the real block sizes (64, and 128 from n = 256 on, with a short last block),
# and outside them.
@pytest.mark.parametrize("shape", [(200, 200), (300, 300), (2, 150, 150), (40, 12), (2, 9, 4)])
def test_rotated_householder_with_signs_matches_lapack(shape):
    n, k = shape[-2:]
    B = _orthogonal_base(*shape[:-2], n, n, seed=70)
    A = randn(*shape, seed=71)
    G = randn(*shape, seed=72)
    signs = _random_signs(*shape[:-2], k, seed=73)
    Q, grad = value_and_grad(lambda X: rotated_householder(B, X, signs), A, G)
    expected_Q, expected_grad = value_and_grad(
        lambda X: B @ torch_householder(X) * signs.unsqueeze(-2), A, G
    )
    assert (Q - expected_Q).abs().max().item() < 1e-13
    assert (grad - expected_grad).abs().max().item() <= 1e-12 * expected_grad.abs().max().item()
    with torch.no_grad():
        torch.testing.assert_close(rotated_householder(B, A, signs), Q, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(7, 7), (2, 7, 3)])
def test_rotated_householder_with_signs_gradcheck_and_broadcasts(small_blocks, shape):
    n, k = shape[-2:]
    B = _orthogonal_base(n, n, seed=74)
    A = randn(*shape, seed=75).requires_grad_(True)
    signs = _random_signs(k, seed=76)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(B, X, signs), (A,))
    # A batch of signs for one set of reflectors: the gradient sums over the batch.
    single = randn(n, k, seed=77).requires_grad_(True)
    batched_signs = _random_signs(2, k, seed=78)
    assert rotated_householder(B, single, batched_signs).shape == (2, n, k)
    assert torch.autograd.gradcheck(lambda X: rotated_householder(B, X, batched_signs), (single,))


def test_rotated_householder_signs_are_checked_and_take_no_gradient(small_blocks):
    A = randn(7, 7, seed=80).requires_grad_(True)
    B = _orthogonal_base(7, 7, seed=81)
    with pytest.raises(ValueError, match=r"signs of shape \(\.\.\., 7\)"):
        rotated_householder(B, A, torch.ones(4, dtype=A.dtype))
    signs = _random_signs(7, seed=82).requires_grad_(True)
    rotated_householder(B, A, signs).sum().backward()
    assert signs.grad is None and A.grad is not None


@pytest.mark.parametrize("n", [128, 256, 512])
def test_rotated_householder_in_single_precision(n):
    B = _orthogonal_base(n, n, seed=45)
    A = randn(n, n, seed=46)
    G = randn(n, n, seed=47)
    Q, grad = value_and_grad(lambda X: rotated_householder(B.float(), X), A.float(), G.float())
    expected_Q, expected_grad = value_and_grad(lambda X: B @ torch_householder(X), A, G)
    eps = torch.finfo(torch.float32).eps
    eye = torch.eye(n, dtype=torch.float64)
    assert (Q.double().mT @ Q.double() - eye).abs().max().item() <= 10 * n * eps
    assert relative_error(Q.double(), expected_Q) <= 1e-5
    assert relative_error(grad.double(), expected_grad) <= 1e-5


def test_rotated_householder_no_grad_route_agrees_with_the_differentiable_one():
    B = _orthogonal_base(200, 200, seed=48, dtype=torch.float32)
    A = randn(200, 200, seed=49, dtype=torch.float32).requires_grad_(True)
    with torch.no_grad():
        inference = rotated_householder(B, A)
    assert inference.grad_fn is None
    torch.testing.assert_close(inference, rotated_householder(B, A).detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rotated_householder_half_precision_computes_in_float32(small_blocks, dtype):
    B = _orthogonal_base(9, 9, seed=50, dtype=torch.float32)
    A = randn(9, 9, seed=51, dtype=torch.float32).to(dtype).requires_grad_(True)
    Q = rotated_householder(B.to(dtype), A)
    Q.sum().backward()
    assert Q.dtype == A.grad.dtype == dtype
    expected = rotated_householder(B.to(dtype).float(), A.detach().float())
    assert (Q.float() - expected).abs().max().item() <= torch.finfo(dtype).eps


def test_rotated_householder_refuses_second_derivatives_and_takes_no_base_gradient(small_blocks):
    B = _orthogonal_base(7, 7, seed=52).requires_grad_(True)
    A = randn(7, 7, seed=53).requires_grad_(True)
    (grad,) = torch.autograd.grad(rotated_householder(B, A), A, randn(7, 7, seed=54), True)
    assert not grad.requires_grad
    rotated_householder(B, A).sum().backward()
    assert B.grad is None


def test_rotated_householder_vmap_and_compile(small_blocks):
    B = _orthogonal_base(3, 8, 8, seed=55, dtype=torch.float32)
    A = randn(3, 8, 8, seed=56, dtype=torch.float32)
    G = randn(3, 8, 8, seed=57, dtype=torch.float32)
    assert_vmap_and_compile_agree(rotated_householder, B, A, G, backend="eager")


def test_rotated_householder_empty_and_bad_inputs():
    B = torch.eye(130).expand(0, 130, 130)
    A = torch.zeros(0, 130, 130, requires_grad=True)
    assert rotated_householder(B, A).shape == (0, 130, 130)
    assert rotated_householder(torch.eye(0), torch.zeros(0, 0)).shape == (0, 0)
    with pytest.raises(ValueError, match="real"):
        rotated_householder(torch.eye(4), torch.zeros(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"base of shape \(\.\.\., n, n\)"):
        rotated_householder(torch.eye(3), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="n >= k"):
        rotated_householder(torch.eye(3), torch.zeros(3, 4))
