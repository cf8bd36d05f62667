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


def _unit_lower(reflectors: Tensor) -> Tensor:
    """``V``: the strictly lower part of ``reflectors`` with ones on the diagonal."""
    V = reflectors.tril(diagonal=-1)
    V.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return V


def _lapack_product(reflectors: Tensor) -> Tensor:
    # LAPACK's blocked orgqr: 4/3 n³ flops for a square input, and the accuracy of torch's map.
    tails = reflectors.tril(diagonal=-1)
    return torch.linalg.householder_product(tails, 2.0 / (1.0 + (tails * tails).sum(dim=-2)))


class _HouseholderProduct(torch.autograd.Function):
    """The product by LAPACK, differentiated through the UT form (see householder_product).

    Written with ``setup_context`` (the form torch.func's transforms take).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(reflectors: Tensor) -> Tensor:
        return _lapack_product(reflectors)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: Tensor) -> None:
        # The UT form would cost 5 n³ in the forward pass and round slightly worse than orgqr;
        # the backward rebuilds the two factors it needs (V and T V₁ᵀ) for 3 n³ more.
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable  # V, T⁻¹ and X are built outside the graph: no second derivative.
    def backward(ctx, grad_Q: Tensor) -> Tensor:
        (reflectors,) = ctx.saved_tensors
        k = reflectors.size(-1)
        V = _unit_lower(reflectors)
        # T⁻¹ = striu(VᵀV) + ½ diag(VᵀV): the UT transform; T itself is never formed.
        T_inv = torch.matmul(V.mT, V).triu_()
        T_inv.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        # X = (T V₁ᵀ)ᵀ solves X (T⁻¹)ᵀ = V₁ and is lower triangular, so that Q = I - V Xᵀ. Both
        # triangular solves here are posed from the right on row-major operands, which LAPACK
        # takes with no transposing copy: measured 1.4-3× faster than the same solves from the left.
        X = torch.linalg.solve_triangular(T_inv.mT, V[..., :k, :], upper=False, left=False)
        # Differentiating Q = I - V Xᵀ with Xᵀ = T V₁ᵀ and T = (striu(VᵀV) + ½ diag(VᵀV))⁻¹
        # gives, with Kᵀ = GᵀV T and R = K X, the cotangent of V
        #   V (P + Pᵀ) - G X - [Kᵀ; 0],   P = striu(R) + ½ diag(R).
        K_t = torch.linalg.solve_triangular(T_inv, grad_Q.mT @ V, upper=True, left=False)
        P = torch.matmul(K_t.mT, X).triu_()
        P.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        grad_V = torch.matmul(V, P + P.mT)
        grad_V.sub_(grad_Q @ X)
        grad_V[..., :k, :].sub_(K_t)
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

    so the first ``k`` columns are ``I_{n,k} - V (T V₁ᵀ)``. The forward product is formed by
    LAPACK's blocked ``orgqr`` (fewest flops, and torch's rounding); the backward differentiates
    the UT form explicitly: one GEMM and one triangular solve rebuild ``T⁻¹`` and ``V₁Tᵀ``, then
    three GEMMs on ``n × k`` panels, one ``k × k`` product and one more triangular solve give the
    gradient, in place of torch's ``k`` sequential rank-one updates. The gradient reaches only
    the strictly lower part of ``reflectors``.

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
        return _HouseholderProduct.apply(reflectors)
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
