"""The Cayley map of skew-symmetric and skew-Hermitian matrices."""

from __future__ import annotations

import torch
from torch import Tensor

from ._precision import working_dtype

__all__ = ["cayley"]


def _cayley(A: Tensor) -> Tensor:
    """``(I - A/2)⁻¹ (I + A/2)`` by one LU solve, with no autograd bookkeeping."""
    eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
    # A solve rounds better than forming the inverse (getri) and costs no more. solve_ex skips
    # the singularity check (a host sync): for skew A, I - A/2 has eigenvalues 1 - iλ/2 with λ
    # real, so it is always invertible.
    return torch.linalg.solve_ex(torch.add(eye, A, alpha=-0.5), torch.add(eye, A, alpha=0.5))[0]


class _Cayley(torch.autograd.Function):
    """:func:`_cayley` with a solve-free backward; see :func:`cayley`.

    Written with ``setup_context`` (the form torch.func's transforms take).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor) -> Tensor:
        return _cayley(A)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: Tensor) -> None:
        # M⁻¹ = (Q + I)/2 is recovered from the output to rounding, so nothing else is kept.
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_Q: Tensor) -> Tensor:
        (Q,) = ctx.saved_tensors
        # dQ = 2 d(M⁻¹) = -2 M⁻¹ dM M⁻¹ = M⁻¹ dA M⁻¹, whose adjoint is G ↦ M⁻ᴴ G M⁻ᴴ, and
        # M⁻ᴴ = (Qᴴ + I)/2. The factor ¼ is a power of two, applied once at the end.
        M_inv_h = Q.mH.clone()
        M_inv_h.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return torch.matmul(M_inv_h @ grad_Q, M_inv_h).mul_(0.25)


def cayley(A: Tensor) -> Tensor:
    """Cayley transform ``(I - A/2)⁻¹ (I + A/2)`` of a batch of skew matrices.

    The forward is one LU solve, as in torch. Since ``I + A/2 = 2I - (I - A/2)``, the transform
    is also ``Q = 2 (I - A/2)⁻¹ - I``, so ``(I - A/2)⁻¹ = (Q + I)/2`` comes free with the output.
    For ``A = -Aᴴ`` the matrix ``I - A/2`` has eigenvalues ``1 - iλ/2`` (``λ`` real), so it is
    invertible with ``‖(I - A/2)⁻¹‖₂ ≤ 1``, and ``Q`` is orthogonal (unitary). In floating point
    its departure from orthogonality follows the conditioning of the solve, ``≈ ‖A‖/2``: measured
    within ``10 · n · eps`` up to ``‖A‖ = 10³`` and up to 1.5 times that at ``10⁴`` (single
    precision, ``n = 64``). Re-basing (``geoparam.update_base``) keeps ``‖A‖`` small.

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
        return _Cayley.apply(A)
    # Without a backward to prepare for, skip the autograd.Function: its dispatch costs tens of
    # microseconds, as much as the whole map for small matrices.
    return _cayley(A)
