"""The Cayley map of skew-symmetric and skew-Hermitian matrices."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._precision import working_dtype

__all__ = ["cayley", "rotated_cayley", "rotated_cayley_lower"]


def _half_inverse(A: Tensor, B: Tensor | None = None) -> Tensor:
    """``B (I - A/2)⁻¹`` (``B = I`` by default), from which the map is ``2 (I - A/2)⁻¹ - I``."""
    eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
    # Solved from the right (X M = B): LAPACK then takes torch's row-major M as it is, with no
    # transposing copy, measured 15-25 % faster than the same solve from the left. solve_ex skips
    # the singularity check (a host sync): for skew A, I - A/2 has eigenvalues 1 - iλ/2 with λ
    # real, so it is always invertible.
    M = torch.add(eye, A, alpha=-0.5)
    # The right-hand side is given M's batch shape: a bare (0, 0) identity against an empty batch
    # of 0 x 0 matrices would be read as a batch of vectors.
    rhs = eye if B is None else B
    return torch.linalg.solve_ex(M, rhs.expand_as(M), left=False)[0]


def _from_half_inverse(M_inv: Tensor) -> Tensor:
    Q = M_inv * 2.0
    Q.diagonal(dim1=-2, dim2=-1).sub_(1.0)
    return Q


class _Cayley(torch.autograd.Function):
    """``2 (I - A/2)⁻¹ - I`` with a solve-free backward; see :func:`cayley`.

    Written with ``setup_context`` (the form torch.func's transforms take).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor) -> tuple[Tensor, Tensor]:
        M_inv = _half_inverse(A)
        return _from_half_inverse(M_inv), M_inv

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
        # M⁻¹ is an output (the way setup_context keeps an intermediate) and a differentiable
        # one, so that double backward reaches A through the saved tensor as well.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, grad_Q: Tensor | None, grad_M_inv: Tensor | None) -> Tensor | None:
        (M_inv,) = ctx.saved_tensors
        # With M = I - A/2: d(M⁻¹) = M⁻¹ (dA/2) M⁻¹ and dQ = 2 d(M⁻¹), whose adjoints are
        # G ↦ M⁻ᴴ G M⁻ᴴ / 2 and G ↦ M⁻ᴴ G M⁻ᴴ: two products with a transposed view, no solve.
        if grad_Q is None and grad_M_inv is None:
            return None
        if grad_M_inv is None:
            G = grad_Q
        elif grad_Q is None:
            G = grad_M_inv * 0.5
        else:
            G = torch.add(grad_Q, grad_M_inv, alpha=0.5)
        M_inv_h = M_inv.mH
        return torch.matmul(M_inv_h @ G, M_inv_h)


def cayley(A: Tensor) -> Tensor:
    """Cayley transform ``(I - A/2)⁻¹ (I + A/2)`` of a batch of skew matrices.

    Since ``I + A/2 = 2I - (I - A/2)``, the transform is also ``Q = 2 (I - A/2)⁻¹ - I``, which is
    how it is computed: one LU solve for the inverse of ``M = I - A/2`` (the same cost as torch's
    solve with ``I + A/2`` on the right). For ``A = -Aᴴ`` the matrix ``M`` has eigenvalues
    ``1 - iλ/2`` (``λ`` real), so it is invertible with ``‖M⁻¹‖₂ ≤ 1``, and ``Q`` is orthogonal
    (unitary). The inverse form also rounds better far from the identity: when ``‖A‖`` is large,
    ``M⁻¹`` is small and ``Q ≈ -I``, and the rounding of ``M⁻¹`` is relative to its own size,
    whereas a solve with ``I + A/2`` on the right carries an error of ``≈ eps · ‖A‖/2`` into ``Q``.
    Measured in single precision at ``n = 512``: ``‖QᵀQ - I‖₂`` of ``2e-6 / 7e-5 / 2e-5`` at
    ``‖A‖ = 1 / 10³ / 10⁴`` against ``8e-7 / 3e-4 / 4e-4`` for the solve; ``10 · n · eps`` is
    ``6e-4``. Re-basing (``geoparam.update_base``) keeps ``‖A‖`` small anyway.

    The backward reuses that inverse: ``dQ = M⁻¹ dA M⁻¹`` with ``M = I - A/2``, so the gradient
    with respect to ``A`` is ``M⁻ᴴ G M⁻ᴴ`` for an incoming gradient ``G``; two matrix products, no
    solve. Both identities hold for any ``A`` with ``I - A/2`` invertible, so the gradient equals
    the one autograd gives for ``torch.linalg.solve(I - A/2, I + A/2)``; it is not projected onto
    the skew matrices (compose with ``X - X.mH`` for that).

    Args:
        A: real or complex tensor of shape ``(..., n, n)`` with ``A = -Aᴴ`` (not checked).
            ``float16``, ``bfloat16`` and ``complex32`` are computed in single precision and cast
            back.

    Returns:
        The orthogonal (unitary) matrix ``(I - A/2)⁻¹ (I + A/2)``, of the shape and dtype of ``A``.

    Raises:
        ValueError: if ``A`` is not a batch of square matrices.

    Example:
        >>> X = torch.randn(4, 4)
        >>> Q = cayley(X - X.mT)
        >>> torch.allclose(Q.mT @ Q, torch.eye(4), atol=1e-5)
        True
    """
    if A.dim() < 2 or A.size(-1) != A.size(-2):
        raise ValueError(f"cayley expects square matrices (..., n, n), got {tuple(A.shape)}")
    if working_dtype(A.dtype) != A.dtype:
        return cayley(A.to(working_dtype(A.dtype))).to(A.dtype)
    if torch.is_grad_enabled() and A.requires_grad:
        return _Cayley.apply(A)[0]
    # Without a backward to prepare for, skip the autograd.Function: its dispatch costs tens of
    # microseconds, as much as the whole map for small matrices.
    return _from_half_inverse(_half_inverse(A))


class _RotatedCayley(torch.autograd.Function):
    """``B (2 (I - A/2)⁻¹ - I)`` with ``B`` constant; see :func:`rotated_cayley`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(B: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
        X = _half_inverse(A, B)
        return 2.0 * X - B, X

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: tuple[Tensor, Tensor]) -> None:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inputs[0], output[1])

    @staticmethod
    def backward(ctx, grad_Q: Tensor | None, grad_X: Tensor | None) -> tuple[None, Tensor | None]:
        B, X = ctx.saved_tensors
        # X = B M⁻¹ with M = I - A/2, so dX = X (dA/2) M⁻¹ and dQ = 2 dX; with M⁻¹ = Bᴴ X (B
        # orthogonal), the adjoint of dA is ½ Xᴴ G M⁻ᴴ = ½ (Xᴴ G)(Xᴴ B) for G the gradient on X.
        if grad_Q is None and grad_X is None:
            return None, None
        if grad_X is None:
            G = grad_Q * 2.0
        elif grad_Q is None:
            G = grad_X
        else:
            G = torch.add(grad_X, grad_Q, alpha=2.0)
        X_h = X.mH
        return None, torch.matmul(X_h @ G, X_h @ B) * 0.5


def rotated_cayley(B: Tensor, A: Tensor) -> Tensor:
    """``B · cayley(A)`` for an orthogonal (unitary) ``B`` that takes no gradient, fused.

    The product of a dynamic trivialization's base with the Cayley map. Since
    ``cayley(A) = 2 M⁻¹ - I`` with ``M = I - A/2``, ``B cayley(A) = 2 X - B`` with ``X = B M⁻¹``,
    which one LU solve with ``B`` as its right-hand side gives: the solve that computes ``M⁻¹``
    computes ``X`` for the same cost, and the product with ``B`` is saved. The backward uses
    ``M⁻¹ = Bᴴ X``, which holds for a unitary ``B``: three products, as the unfused map's
    backward (one for the base, two for the map). No gradient reaches ``B``.

    Args:
        B: unitary tensor of shape ``(..., n, n)`` (broadcast against ``A``'s batch).
        A: skew tensor of shape ``(..., n, n)``; float32/64 or complex64/128 (half types are
            computed in single precision).

    Returns:
        ``B (I - A/2)⁻¹ (I + A/2)``, of ``A``'s batch shape and dtype.

    Raises:
        ValueError: ``A`` or ``B`` is not a batch of square matrices of the same size.

    Example:
        >>> B = torch.linalg.qr(torch.randn(4, 4)).Q
        >>> X = torch.randn(4, 4)
        >>> torch.allclose(rotated_cayley(B, X - X.mT), B @ cayley(X - X.mT), atol=1e-5)
        True
    """
    if A.dim() < 2 or A.size(-1) != A.size(-2) or B.shape[-2:] != A.shape[-2:]:
        raise ValueError(
            f"rotated_cayley expects square matrices (..., n, n) of one size, got B of shape "
            f"{tuple(B.shape)} and A of shape {tuple(A.shape)}"
        )
    if working_dtype(A.dtype) != A.dtype:
        work = working_dtype(A.dtype)
        return rotated_cayley(B.to(work), A.to(work)).to(A.dtype)
    if torch.is_grad_enabled() and A.requires_grad:
        return _RotatedCayley.apply(B.detach(), A)[0]
    return 2.0 * _half_inverse(A, B) - B


# From this size on, rotated_cayley_lower keeps the LU factors for its backward. Forward +
# backward with 2 threads, float32: 11.7 ms against 13.6 for rotated_cayley at n = 512, 104
# against 115 at 1024, a tie at 128 and 256, and 14 % slower for 64 matrices of 32 x 32 (LAPACK's
# solves go matrix by matrix, where the products are batched).
_LU_FROM = 256


def _doubled_system(X: Tensor) -> Tensor:
    """``2I - A`` for ``A = tril(X) - tril(X)ᴴ``: twice the Cayley map's ``I - A/2``."""
    L = X.tril()
    M = L.mH - L
    M.diagonal(dim1=-2, dim2=-1).add_(2.0)
    return M


class _RotatedCayleyLower(torch.autograd.Function):
    """``B cayley(tril(X) - tril(X)ᴴ)``, one LU for both passes; see :func:`rotated_cayley_lower`.

    Written with ``setup_context`` (the form torch.func's transforms take): ``Z``, the LU
    factors and the pivots are outputs so that the backward can have them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(B: Tensor, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # With N = 2I - A = 2M: B M⁻¹ = 2 B N⁻¹, so the map's 2 B M⁻¹ - B is 4 Z - B for
        # Z = B N⁻¹, kept as 4 Z. N is factored through its transpose (Z N = B is Nᵀ Zᵀ = Bᵀ):
        # LAPACK reads the row-major N's memory as Nᵀ in its own column-major order.
        N = _doubled_system(X)
        LU, pivots, _ = torch.linalg.lu_factor_ex(N.mT)
        Z = torch.linalg.lu_solve(LU, pivots, B.mT).mT.mul_(4.0)
        return Z - B, Z, LU, pivots

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: tuple[Tensor, ...]) -> None:
        _, Z, LU, pivots = output
        ctx.mark_non_differentiable(Z, LU, pivots)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(Z, LU, pivots)

    @staticmethod
    @once_differentiable  # the LU factors are built outside the graph: no second derivative.
    def backward(ctx, grad_Q: Tensor | None, *_unused: None) -> tuple[None, Tensor | None]:
        if grad_Q is None:
            return None, None
        Z, LU, pivots = ctx.saved_tensors
        # dQ = (4Z) dA N⁻¹ (from d(N⁻¹) = N⁻¹ dA N⁻¹), so A's cotangent is (4Z)ᴴ G N⁻ᴴ: one
        # product and one solve with the forward's factors (Y Nᴴ = K is N̄ Yᵀ = Kᵀ, with
        # N̄ = (Nᵀ)ᴴ); tril(X) enters A as L - Lᴴ, so X's cotangent is tril(Ā - Āᴴ).
        K = Z.mH @ grad_Q
        A_bar = torch.linalg.lu_solve(LU, pivots, K.mT, adjoint=True).mT
        return None, (A_bar - A_bar.mH).tril_()


def rotated_cayley_lower(B: Tensor, X: Tensor) -> Tensor:
    """``B · cayley(A)`` with ``A = tril(X) - tril(X)ᴴ``, for a ``B`` without gradient, fused.

    The dynamic trivialization's weight with the Cayley map, from its unconstrained tensor:
    :func:`rotated_cayley` with the skew matrix built inside. From ``n = 256`` on, ``2I - A`` is
    formed in one pass and factored once (LU); the forward solves with ``B`` as the
    right-hand side, and the backward reuses the factors for a second solve instead of forming
    ``(I - A/2)⁻ᴴ`` by a product: one product and one solve against ``rotated_cayley``'s three
    products, and fewer whole-matrix passes on either side (the skew matrix and its gradient
    are never stored apart). Measured forward + backward with 2 threads in float32: 11.7 ms
    against 13.6 ms at ``n = 512``. Smaller matrices, where LAPACK's per-matrix solves lose to
    batched products, go through :func:`rotated_cayley`. No gradient reaches ``B``.

    Args:
        B: unitary tensor of shape ``(..., n, n)`` (broadcast against ``X``'s batch).
        X: real or complex tensor of shape ``(..., n, n)``; only its lower triangle is read
            (its diagonal's imaginary part, for complex ``X``). float32/64 or complex64/128;
            half types are computed in single precision.

    Returns:
        ``B (I - A/2)⁻¹ (I + A/2)``, of ``X``'s dtype and the broadcast batch shape.

    Raises:
        ValueError: ``X`` or ``B`` is not a batch of square matrices of the same size.

    Example:
        >>> B = torch.linalg.qr(torch.randn(4, 4)).Q
        >>> X = torch.randn(4, 4)
        >>> A = X.tril() - X.tril().mT
        >>> torch.allclose(rotated_cayley_lower(B, X), B @ cayley(A), atol=1e-5)
        True
    """
    if X.dim() < 2 or X.size(-1) != X.size(-2) or B.dim() < 2 or B.shape[-2:] != X.shape[-2:]:
        raise ValueError(
            "rotated_cayley_lower expects square matrices (..., n, n) of one size, got B of "
            f"shape {tuple(B.shape)} and X of shape {tuple(X.shape)}"
        )
    work = working_dtype(X.dtype)
    if work != X.dtype:
        return rotated_cayley_lower(B.to(work), X.to(work)).to(X.dtype)
    if X.size(-1) < _LU_FROM:
        L = X.tril()
        return rotated_cayley(B, L - L.mH)
    B = B.detach()
    # X at the output's batch: a base shared by a batch broadcasts in the products and solves,
    # and the backward's cotangent of X is summed over what was broadcast.
    n = X.size(-1)
    X = X.expand(*torch.broadcast_shapes(B.shape[:-2], X.shape[:-2]), n, n)
    if torch.is_grad_enabled() and X.requires_grad:
        return _RotatedCayleyLower.apply(B, X)[0]
    N = _doubled_system(X)
    Z = torch.linalg.solve_ex(N, B.expand_as(N), left=False)[0]
    return Z.mul_(4.0).sub_(B)
