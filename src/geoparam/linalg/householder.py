"""Products of Householder reflectors in the compact-WY (UT) form.

References:
    R. Schreiber and C. Van Loan, "A storage-efficient WY representation for products of
    Householder transformations", SIAM J. Sci. Stat. Comput. 10(1):53-57, 1989.

    T. Joffrain, T. M. Low, E. S. Quintana-Ortí, R. van de Geijn and F. G. Van Zee,
    "Accumulating Householder transformations, revisited", ACM TOMS 32(2):169-179, 2006.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._precision import working_dtype

__all__ = ["householder_product", "householder_square"]

# Low-precision inputs are accumulated in float32: the triangular solve needs the mantissa, and
# the CPU solvers do not take half types.


def _lapack_product(reflectors: Tensor) -> Tensor:
    # LAPACK's blocked orgqr: 4/3 n³ flops for a square input, and the rounding of torch's map.
    tails = reflectors.tril(diagonal=-1)
    return torch.linalg.householder_product(tails, 2.0 / (1.0 + (tails * tails).sum(dim=-2)))


# From this many reflectors on, the products below split V's columns in two and skip the blocks
# that V's triangle makes zero (about 40 % fewer flops at n = k); below it the extra operator
# calls cost more than they save.
_SPLIT_FROM = 192


def _split(k: int) -> int:
    return k // 2 if k >= _SPLIT_FROM else 0


def _with_zero_corner(top_left: Tensor, top_right: Tensor, bottom_right: Tensor) -> Tensor:
    """The block matrix ``[[top_left, top_right], [0, bottom_right]]``."""
    zeros = bottom_right.new_zeros(*bottom_right.shape[:-1], top_left.size(-1))
    top = torch.cat([top_left, top_right], dim=-1)
    return torch.cat([top, torch.cat([zeros, bottom_right], dim=-1)], dim=-2)


def _halve_diagonal(M: Tensor) -> Tensor:
    M.diagonal(dim1=-2, dim2=-1).mul_(0.5)
    return M


def _inverse_upper(U: Tensor) -> Tensor:
    eye = torch.eye(U.size(-1), dtype=U.dtype, device=U.device).expand_as(U)
    return torch.linalg.solve_triangular(U, eye, upper=True)


def _ut_product(reflectors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``Q = I_{n,k} - V W`` with ``W = T V₁ᵀ``, and ``V``, ``T``, ``W`` for the backward.

    When the columns are split (see :func:`_split`), the returned ``T`` holds ``S12 = V_lᵀ V_b``
    in place of its upper-right block.

    ``T⁻¹ = striu(VᵀV) + ½ diag(VᵀV)`` (the UT transform) is inverted once, so that every later
    use of ``T`` is a matrix product: a triangular solve runs at a third of a product's speed.
    """
    k = reflectors.size(-1)
    h = _split(k)
    V = reflectors.tril(diagonal=-1)
    # Each reflector is exactly orthogonal only when its τᵢ = 2/‖vᵢ‖² matches vᵢ; the diagonal of
    # VᵀV from a matrix product rounds the exact 1 in ‖vᵢ‖² = 1 + ‖tailᵢ‖² with the whole sum,
    # which alone made ‖QᵀQ - I‖ several times LAPACK's. Summed as torch forms τ, it matches it.
    halved_norms = (V * V).sum(dim=-2).add_(1.0).mul_(0.5)
    V.diagonal(dim1=-2, dim2=-1).fill_(1.0)

    def inverse_ut(gram: Tensor, halves: Tensor) -> Tensor:
        gram = gram.triu_()
        gram.diagonal(dim1=-2, dim2=-1).copy_(halves)
        return _inverse_upper(gram)

    if not h:
        T = inverse_ut(V.mT @ V, halved_norms)
        W = T @ V[..., :k, :].mT
        Q = (V @ W).neg_()
    else:
        # Columns h: of V vanish above row h: with V_a = V[:, :h], V_l = V[h:, :h] and
        # V_b = V[h:, h:], every product below skips the blocks that are zero.
        j = k - h
        V_a, V_l, V_b = V[..., :, :h], V[..., h:, :h], V[..., h:, h:]
        T11 = inverse_ut(V_a.mT @ V_a, halved_norms[..., :h])
        T22 = inverse_ut(V_b.mT @ V_b, halved_norms[..., h:])
        S12 = V_l.mT @ V_b
        # T = [[T11, -T11 S12 T22], [0, T22]], and W = T V₁ᵀ is upper triangular too; with
        # V₁ = V[:k] made of V[:h, :h], V_l[:j] and V_b[:j], its blocks are
        W11 = T11 @ V[..., :h, :h].mT
        W22 = T22 @ V_b[..., :j, :].mT
        W12 = T11 @ (V_l[..., :j, :].mT - S12 @ W22)
        # T's corner is never formed: the backward needs only S12 (k x k blocks are cheap to keep).
        T = _with_zero_corner(T11, S12, T22)
        W = _with_zero_corner(W11, W12, W22)
        top = V[..., :h, :h] @ W[..., :h, :]
        bottom_right = V_l @ W12
        bottom_right.add_(V_b @ W22)
        Q = torch.cat([top, torch.cat([V_l @ W11, bottom_right], dim=-1)], dim=-2).neg_()
    Q.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return Q, V, T, W


def _ut_backward(G: Tensor, V: Tensor, T: Tensor, W: Tensor) -> Tensor:
    """The cotangent of the reflectors for the cotangent ``G`` of ``Q`` (see householder_product).

    Differentiating ``Q = I - V T V₁ᵀ`` with ``T = (striu(VᵀV) + ½ diag(VᵀV))⁻¹`` gives, with
    ``X = V₁Tᵀ = Wᵀ``, ``Kᵀ = GᵀV T`` and ``R = K X``, the cotangent of ``V``

    ``V (P + Pᵀ) - G X - [Kᵀ; 0]``,   ``P = striu(R) + ½ diag(R)``,

    of which only the strictly lower part is a free parameter.
    """
    k = V.size(-1)
    h = _split(k)
    if not h:
        K_t = (G.mT @ V) @ T
        P = _halve_diagonal((K_t.mT @ W.mT).triu_())
        grad = V @ (P + P.mT)
        grad.sub_(G @ W.mT)
        grad[..., :k, :].sub_(K_t)
        return grad.tril_(diagonal=-1)
    # The blocks of the forward pass again; the blocks of the result above the diagonal are
    # not formed, and P + Pᵀ is assembled per block (a transposed sum of a whole k x k matrix is
    # a slow strided pass).
    j = k - h
    V_a, V_l, V_b = V[..., :, :h], V[..., h:, :h], V[..., h:, h:]
    C_a = G.mT @ V_a
    C_b = G[..., h:, :].mT @ V_b
    T11, S12, T22 = T[..., :h, :h], T[..., :h, h:], T[..., h:, h:]
    # K = [C_a, C_b] T with T12 = -T11 S12 T22: K_a = C_a T11, K_b = (C_b - K_a S12) T22.
    K_a = C_a @ T11
    K_b = torch.matmul(C_b - K_a @ S12, T22)
    W_top, W22 = W[..., :h, :], W[..., h:, h:]
    P11 = _halve_diagonal((K_a.mT @ W_top.mT).triu_())
    # R[:, h:] = K[h:]ᵀ W22ᵀ, since W[h:, :h] = 0.
    P12 = K_a[..., h:, :].mT @ W22.mT
    P22 = _halve_diagonal((K_b[..., h:, :].mT @ W22.mT).triu_())
    Y11 = P11 + P11.mT
    Y22 = P22 + P22.mT
    GX_a = G @ W_top.mT
    top = V[..., :h, :h] @ Y11
    top.sub_(GX_a[..., :h, :]).sub_(K_a[..., :h, :])
    left = V_l @ Y11
    left.add_(V_b @ P12.mT).sub_(GX_a[..., h:, :])
    left[..., :j, :].sub_(K_a[..., h:, :])
    right = V_l @ P12
    right.add_(V_b @ Y22).sub_(G[..., h:, h:] @ W22.mT)
    right[..., :j, :].sub_(K_b[..., h:, :])
    zeros = top.new_zeros(*top.shape[:-1], j)
    grad = torch.cat([torch.cat([top, zeros], dim=-1), torch.cat([left, right], dim=-1)], dim=-2)
    return grad.tril_(diagonal=-1)


class _HouseholderProduct(torch.autograd.Function):
    """The UT-form product with an explicit backward (see householder_product).

    Written with ``setup_context`` (the form torch.func's transforms take); ``V``, ``T`` and ``W``
    are outputs only so that the backward can have them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(reflectors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _ut_product(reflectors)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: tuple[Tensor, ...]) -> None:
        _, V, T, W = output
        ctx.mark_non_differentiable(V, T, W)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(V, T, W)

    @staticmethod
    @once_differentiable  # V, T and W are built outside the graph: no second derivative.
    def backward(ctx, grad_Q: Tensor | None, *_unused: None) -> Tensor | None:
        if grad_Q is None:
            return None
        return _ut_backward(grad_Q, *ctx.saved_tensors)


def householder_product(reflectors: Tensor) -> Tensor:
    """First ``k`` columns of ``H₁ ⋯ H_k`` for reflectors stored below the diagonal.

    Column ``i`` of ``reflectors`` (shape ``(..., n, k)``, ``n >= k``, real) holds, strictly below
    its diagonal, the tail of the vector ``vᵢ = eᵢ + aᵢ``; the diagonal and the upper triangle are
    ignored. Each ``Hᵢ = I - τᵢ vᵢvᵢᵀ`` with ``τᵢ = 2 / ‖vᵢ‖²`` is an exact reflection, so the
    result has orthonormal columns for any input. This is the map of
    ``torch.nn.utils.parametrizations.orthogonal(..., "householder")`` before its sign correction,
    and equals ``torch.linalg.householder_product(A.tril(-1), τ)``.

    The product is accumulated in the UT form of Schreiber & Van Loan (1989) as revisited by
    Joffrain et al. (2006): with ``V = [v₁ ⋯ v_k]`` unit lower trapezoidal,

    ``H₁ ⋯ H_k = I - V T Vᵀ``,   ``T⁻¹ = striu(VᵀV) + ½ diag(VᵀV)``,

    so the first ``k`` columns are ``I_{n,k} - V W`` with ``W = T V₁ᵀ``. When a backward will
    follow, the product is formed that way: ``VᵀV``, one triangular inversion (after which every
    use of ``T`` is a matrix product; a triangular solve runs at a third of a product's speed),
    ``W`` and ``V W``, and ``V``, ``T``, ``W`` are kept. The backward then differentiates the UT
    form explicitly with matrix products only, in place of torch's ``k`` sequential rank-one
    updates. From 192 reflectors on, both passes split ``V``'s columns in two and skip the blocks
    that its triangle makes zero (about 40 % fewer flops for a square input). Without a gradient,
    tall panels (``n >= 4k``) use the same products, and square-ish inputs LAPACK's blocked
    ``orgqr``, which needs the fewest flops there. The gradient reaches only the strictly lower
    part of ``reflectors``; the two routes agree to rounding, both within a few ``n · eps`` of
    orthonormal columns.

    Args:
        reflectors: real tensor of shape ``(..., n, k)`` with ``n >= k``. ``float16`` and
            ``bfloat16`` are computed in ``float32`` and cast back.

    Returns:
        Tensor of shape ``(..., n, k)`` and the dtype of ``reflectors``, with orthonormal columns.

    Raises:
        ValueError: if ``reflectors`` is complex, has fewer than two dimensions, or ``n < k``.

    Example:
        >>> Q = householder_product(torch.randn(5, 3))
        >>> torch.allclose(Q.mT @ Q, torch.eye(3), atol=1e-5)
        True
    """
    if reflectors.is_complex():
        raise ValueError(f"householder_product expects a real tensor, got {reflectors.dtype}")
    if reflectors.dim() < 2 or reflectors.size(-2) < reflectors.size(-1):
        raise ValueError(
            "householder_product expects shape (..., n, k) with n >= k, "
            f"got {tuple(reflectors.shape)}"
        )
    if working_dtype(reflectors.dtype) != reflectors.dtype:
        wide = reflectors.to(working_dtype(reflectors.dtype))
        return householder_product(wide).to(reflectors.dtype)
    if torch.is_grad_enabled() and reflectors.requires_grad:
        return _HouseholderProduct.apply(reflectors)[0]
    if reflectors.size(-2) >= 4 * reflectors.size(-1):
        # Tall panels: the UT form's products beat orgqr's narrow blocked updates (1.6-2x).
        return _ut_product(reflectors)[0]
    # Square-ish, without a backward to prepare for: orgqr's 4/3 n³ flops are the fewest.
    return _lapack_product(reflectors)


@torch.no_grad()
def householder_square(reflectors: Tensor) -> Tensor:
    """All ``n`` columns of ``H₁ ⋯ H_k``, for reflectors stored as in :func:`householder_product`.

    The ``n x n`` orthogonal matrix whose first ``k`` columns :func:`householder_product` returns;
    the remaining columns complete them. Used when a base absorbs the current rotation
    (re-basing), so it is computed without a gradient, by LAPACK's ``orgqr`` with ``τ = 0`` (an
    identity reflector) for the missing columns.

    Args:
        reflectors: real tensor of shape ``(..., n, k)`` with ``n >= k``.

    Returns:
        Orthogonal tensor of shape ``(..., n, n)``.

    Example:
        >>> R = torch.randn(5, 2)
        >>> H = householder_square(R)
        >>> torch.allclose(H[:, :2], householder_product(R), atol=1e-6)
        True
    """
    n, k = reflectors.size(-2), reflectors.size(-1)
    tails = reflectors.tril(diagonal=-1)
    tau = 2.0 / (1.0 + (tails * tails).sum(dim=-2))
    tau = torch.cat([tau, tau.new_zeros(*tau.shape[:-1], n - k)], dim=-1)
    tails = torch.cat([tails, tails.new_zeros(*tails.shape[:-1], n - k)], dim=-1)
    return torch.linalg.householder_product(tails, tau)
