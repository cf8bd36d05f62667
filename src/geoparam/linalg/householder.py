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

__all__ = ["householder_product"]

# Low-precision inputs are accumulated in float32: the triangular solve needs the mantissa, and
# the CPU solvers do not take half types.
_COMPUTE_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _unit_lower(reflectors: Tensor) -> Tensor:
    """``V``: the strictly lower part of ``reflectors`` with ones on the diagonal."""
    V = reflectors.tril(diagonal=-1)
    V.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return V


class _HouseholderProduct(torch.autograd.Function):
    """``Q = I_{n,k} - V T V₁ᵀ`` with an explicit backward; see :func:`householder_product`."""

    @staticmethod
    def forward(ctx, reflectors: Tensor) -> Tensor:
        k = reflectors.size(-1)
        V = _unit_lower(reflectors)
        # T⁻¹ = striu(VᵀV) + ½ diag(VᵀV): the UT transform; T itself is never formed.
        T_inv = torch.matmul(V.mT, V).triu_()
        T_inv.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        # W = T V₁ᵀ (upper triangular, k × k), so the product is one more GEMM.
        W = torch.linalg.solve_triangular(T_inv, V[..., :k, :].mT, upper=True)
        Q = torch.matmul(V, W).neg_()
        Q.diagonal(dim1=-2, dim2=-1).add_(1.0)
        ctx.save_for_backward(V, T_inv, W)
        return Q

    @staticmethod
    def backward(ctx, grad_Q: Tensor) -> Tensor:
        V, T_inv, W = ctx.saved_tensors
        k = V.size(-1)
        # With H = VᵀG and K = TᵀH, the cotangent of V is
        #   -G Wᵀ + V (P + Pᵀ) - [Kᵀ; 0],   P = striu(K Wᵀ) + ½ diag(K Wᵀ),
        # from differentiating Q = I - V T V₁ᵀ, T = (striu(VᵀV) + ½ diag(VᵀV))⁻¹.
        K = torch.linalg.solve_triangular(T_inv.mT, V.mT @ grad_Q, upper=False)
        R = K @ W.mT
        P = R.triu(diagonal=1)
        P = P + P.mT
        P.diagonal(dim1=-2, dim2=-1).copy_(R.diagonal(dim1=-2, dim2=-1))
        grad_V = torch.matmul(V, P)
        grad_V.sub_(grad_Q @ W.mT)
        grad_V[..., :k, :].sub_(K.mT)
        # Only the strictly lower part is a free parameter.
        return grad_V.tril_(diagonal=-1)


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

    so the first ``k`` columns are ``I_{n,k} - V (T V₁ᵀ)`` with ``V₁`` the top ``k × k`` block:
    one GEMM, one triangular solve and one GEMM instead of ``k`` rank-one updates. The backward is
    explicit (three GEMMs on ``n × k`` panels, one ``k × k`` product and one triangular solve);
    the gradient reaches only the strictly lower part of ``reflectors``.

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
    compute_dtype = _COMPUTE_DTYPE.get(reflectors.dtype, reflectors.dtype)
    Q = _HouseholderProduct.apply(reflectors.to(compute_dtype))
    return Q.to(reflectors.dtype)
