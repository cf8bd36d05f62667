"""Orthogonal maps for tall matrices (the Stiefel manifold) in ``O(nk² + k³)``.

Torch's ``orthogonal`` parametrization maps an ``n x k`` weight ``X`` through the skew ``n x n``
matrix ``A = [L, 0] - [L, 0]ᴴ`` (``L = X.tril()``) and keeps the first ``k`` columns of ``exp(A)``
or of its Cayley transform, at ``O(n³)``. Splitting ``L = [L₁; X₂]`` with ``L₁`` the ``k x k``
lower-triangular top block gives

    A = [[A₁₁, -X₂ᴴ],
         [X₂,    0 ]],      A₁₁ = L₁ - L₁ᴴ,

and ``A`` maps every ``[P; X₂ S]`` (``P``, ``S`` of size ``k x k``) to
``[A₁₁ P - C S; X₂ P]`` with ``C = X₂ᴴ X₂``. So the span of the first ``k`` columns of ``I`` and
the columns of ``[0; X₂]`` is invariant under ``A``, and ``A`` acts on the coordinates ``(P, S)``
as the ``2k x 2k`` matrix ``M = [[A₁₁, -C], [I, 0]]``: for any function ``f`` analytic on the
spectrum, ``f(A)[:, :k] = [P; X₂ S]`` with ``[P; S] = f(M)[:, :k]``. Every eigenvalue of ``M`` is
imaginary (``λ² - λ sᴴA₁₁s + sᴴCs = 0`` for a unit eigenvector's lower half ``s``), like ``A``'s.
No factorisation of ``X₂`` is needed, so the maps stay smooth at ``X₂ = 0``, where training starts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._precision import working_dtype

__all__ = ["stiefel_cayley", "stiefel_expm"]

# 1-norms where torch.matrix_exp loses digits in float64/complex128: measured on torch 2.13 CPU
# against scipy.linalg.expm, up to ~6e4 ulp for norms in (0.006, 0.049], a few ulp outside. Its
# low-degree Taylor branches are taken there beyond their double-precision accuracy. Scaling by
# 2^-s below the band and squaring s times (Higham 2005, Sec. 2) sidesteps them; s <= 4.
_TORCH_EXPM_BAND = (2.0**-8, 2.0**-4)
_MAX_HALVINGS = 4
_DOUBLE = (torch.float64, torch.complex128)


def _one_norm(M: Tensor) -> Tensor:
    return M.abs().sum(dim=-2).amax(dim=-1)


def _expm_outside_band(M: Tensor) -> Tensor:
    """``torch.matrix_exp``, rescaled by powers of two around its inaccurate float64 band."""
    if M.dtype not in _DOUBLE:
        return torch.matrix_exp(M)
    low, high = _TORCH_EXPM_BAND
    norm = _one_norm(M)
    inside = (norm > low) & (norm < high)
    halvings = torch.where(inside, torch.ceil(torch.log2(norm / low)), torch.zeros_like(norm))
    E = torch.matrix_exp(M * torch.exp2(-halvings)[..., None, None])
    # A fixed count of masked squarings keeps the function free of data-dependent control flow,
    # so torch.func.vmap can batch it; the spare 2k x 2k products are negligible next to O(nk²).
    for step in range(_MAX_HALVINGS):
        E = torch.where((halvings > step)[..., None, None], E @ E, E)
    return E


def _expm_frechet(M: Tensor, E: Tensor) -> Tensor:
    """Fréchet derivative ``L(M, E)`` of ``exp`` at ``M`` in the direction ``E``.

    Read off the upper-right block of ``exp([[M, E], [0, M]])`` (Higham, *Functions of
    Matrices*, Thm. 3.6), as torch's own derivative does, but with ``E`` first scaled to unit
    1-norm (``L`` is linear in ``E``): the block matrix then has 1-norm at least 1, above the
    inaccurate band, however large or small the direction is.
    """
    size = _one_norm(E)[..., None, None]
    scale = torch.where(size > 0, size, torch.ones_like(size))
    block = torch.cat(
        [torch.cat([M, E / scale], dim=-1), torch.cat([torch.zeros_like(M), M], dim=-1)], dim=-2
    )
    n = M.size(-1)
    return torch.matrix_exp(block)[..., :n, n:] * scale


class _MatrixExpReverse(torch.autograd.Function):
    """``exp(M)`` whose value and gradient both avoid torch's inaccurate float64 band."""

    generate_vmap_rule = True

    @staticmethod
    def forward(M: Tensor) -> Tensor:
        return _expm_outside_band(M)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, G: Tensor) -> Tensor:
        # The adjoint of E -> L(M, E) is G -> L(Mᴴ, G), for real and complex M alike.
        (M,) = ctx.saved_tensors
        return _expm_frechet(M.mH, G)


class _MatrixExp(_MatrixExpReverse):
    """:class:`_MatrixExpReverse` with forward-mode AD too (``torch.func.jvp``, ``jacfwd``)."""

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def jvp(ctx, dM: Tensor) -> Tensor:
        (M,) = ctx.saved_tensors
        return _expm_frechet(M, dM)


def _matrix_exp(M: Tensor) -> Tensor:
    # torch.compile cannot trace a custom forward-mode rule: compiled code gets the same
    # function and gradient without it (forward-mode AD is an eager-mode tool).
    if torch.compiler.is_compiling():
        return _MatrixExpReverse.apply(M)
    return _MatrixExp.apply(M)


def _split(X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Blocks ``A₁₁``, ``X₂`` and ``C = X₂ᴴ X₂`` of the skew embedding of a tall ``X``."""
    if X.dim() < 2 or X.size(-2) < X.size(-1):
        raise ValueError(
            f"expected a tall matrix of shape (..., n, k) with n >= k, got shape {tuple(X.shape)}"
        )
    k = X.size(-1)
    L1 = X[..., :k, :].tril()
    # Rows k.. of X.tril() are whole rows of X: row i >= k keeps columns j <= k - 1 < i.
    X2 = X[..., k:, :]
    return L1 - L1.mH, X2, X2.mH @ X2


def stiefel_expm(X: Tensor) -> Tensor:
    """First ``k`` columns of ``exp(A)``, with ``A`` the skew embedding of a tall ``X``.

    The map of ``torch.nn.utils.parametrizations.orthogonal(..., orthogonal_map="matrix_exp")``
    on an ``n x k`` weight, computed in ``O(nk² + k³)`` instead of ``O(n³)``. With the blocks of
    the module docstring, ``exp(A)[:, :k] = [P; X₂ S]`` where ``[P; S] = exp(M)[:, :k]`` and
    ``M = [[A₁₁, -C], [I, 0]]``. Scaling the coordinate ``S`` by ``c = √‖C‖_F`` gives the
    similar matrix ``M_c = [[A₁₁, -C/c], [c I, 0]]`` whose off-diagonal blocks both have the
    size of ``X₂``, so ``‖M_c‖ ≈ ‖A‖`` and :func:`torch.matrix_exp` (Taylor scaling and squaring)
    needs no more squarings than on ``A`` itself; then ``S = (exp(M_c)[k:, :k]) / c``. A final
    Newton-Schulz step in these coordinates, ``[P; S] ← [P; S] (3I - QᴴQ)/2`` with the ``k x k``
    ``QᴴQ = PᴴP + SᴴCS``, keeps the columns orthonormal to ``10 · n · eps`` at any norm.
    ``M_c`` is not skew, hence the general exponential; it costs ``O(k³)``. In float64 it
    sidesteps the range of 1-norms where :func:`torch.matrix_exp` loses up to five digits.

    Args:
        X: tensor of shape ``(..., n, k)`` with ``n >= k``; float32/64, complex64/128, or
            float16/bfloat16 (computed in float32 and cast back).

    Returns:
        Tensor of shape ``(..., n, k)`` with orthonormal columns, equal to
        ``torch.matrix_exp(A)[..., :k]`` up to rounding.

    Raises:
        ValueError: if ``X`` is not a (batch of) tall matrices.

    Example:
        >>> X = torch.randn(6, 2)
        >>> Q = stiefel_expm(X)
        >>> torch.allclose(Q.mT @ Q, torch.eye(2), atol=1e-5)
        True
        >>> A = torch.cat([X.tril(), torch.zeros(6, 4)], dim=-1)
        >>> torch.allclose(Q, torch.matrix_exp(A - A.mT)[:, :2], atol=1e-5)
        True
    """
    if working_dtype(X.dtype) != X.dtype:
        return stiefel_expm(X.to(working_dtype(X.dtype))).to(X.dtype)
    if X.size(-1) == 0:  # no columns: nothing to map (and empty reductions would fail)
        return X.clone()
    A11, X2, C = _split(X)
    k = X.size(-1)
    # c only rescales a coordinate, so the result does not depend on it: detach it, which also
    # keeps the infinite derivative of the square root at C = 0 out of the graph.
    norm = torch.linalg.matrix_norm(C.detach()).unsqueeze(-1).unsqueeze(-1)
    c = torch.where(norm > 0, norm.sqrt(), torch.ones_like(norm))
    eye = torch.eye(k, dtype=X.dtype, device=X.device).expand_as(A11)
    M = torch.cat(
        [torch.cat([A11, -C / c], dim=-1), torch.cat([c * eye, torch.zeros_like(A11)], dim=-1)],
        dim=-2,
    )
    E = _matrix_exp(M)[..., :k]
    P, S = E[..., :k, :], E[..., k:, :] / c
    # One Newton-Schulz step in the coordinates: with Q = [P; X₂ S], QᴴQ = PᴴP + Sᴴ C S is a
    # k x k product, and Q (3I - QᴴQ)/2 = [P R; X₂ S R] with R = (3I - QᴴQ)/2. It costs O(k³),
    # nothing next to the O(nk²) map, so it is always taken: the exponential's scaling and
    # squaring leaves QᴴQ - I at ~2^s units of roundoff for large ‖A‖ (1e-3 in float32 at 10⁴),
    # and the step brings it back to ~n·eps (at ‖A‖ ≲ 1 it changes Q by roundoff only).
    R = (P.mH @ P + S.mH @ (C @ S)) * -0.5
    R.diagonal(dim1=-2, dim2=-1).add_(1.5)
    return torch.cat([P @ R, X2 @ (S @ R)], dim=-2)


def stiefel_cayley(X: Tensor) -> Tensor:
    """First ``k`` columns of the Cayley transform of the skew embedding of a tall ``X``.

    The map of ``torch.nn.utils.parametrizations.orthogonal(..., orthogonal_map="cayley")``
    on an ``n x k`` weight, ``(I - A/2)⁻¹ (I + A/2)[:, :k]``, computed in ``O(nk² + k³)``.
    Since ``(I - A/2)⁻¹ (I + A/2) = 2 (I - A/2)⁻¹ - I``, only ``Z = (I - A/2)⁻¹ [I; 0]`` is
    needed. Its lower block row reads ``Z₂ = X₂ Z₁ / 2``; eliminating it from the upper one (the
    Woodbury identity for the rank-``2k`` part of ``A``) leaves the ``k x k`` system

        K Z₁ = I,      K = I - A₁₁/2 + C/4,

    whose Hermitian part ``I + C/4`` is ``≥ I``, so ``K`` is always invertible. Hence
    ``Q = [K⁻¹ (2I - K); X₂ K⁻¹]``.

    Args:
        X: tensor of shape ``(..., n, k)`` with ``n >= k``; float32/64, complex64/128, or
            float16/bfloat16 (computed in float32 and cast back).

    Returns:
        Tensor of shape ``(..., n, k)`` with orthonormal columns, equal to the ``n x n``
        Cayley transform's first ``k`` columns up to rounding.

    Raises:
        ValueError: if ``X`` is not a (batch of) tall matrices.

    Example:
        >>> X = torch.randn(6, 2)
        >>> Q = stiefel_cayley(X)
        >>> torch.allclose(Q.mT @ Q, torch.eye(2), atol=1e-5)
        True
        >>> A = torch.cat([X.tril(), torch.zeros(6, 4)], dim=-1)
        >>> I = torch.eye(6)
        >>> Q_ref = torch.linalg.solve(I - (A - A.mT) / 2, I + (A - A.mT) / 2)[:, :2]
        >>> torch.allclose(Q, Q_ref, atol=1e-5)
        True
    """
    if working_dtype(X.dtype) != X.dtype:
        return stiefel_cayley(X.to(working_dtype(X.dtype))).to(X.dtype)
    if X.size(-1) == 0:
        return X.clone()
    A11, X2, C = _split(X)
    eye = torch.eye(X.size(-1), dtype=X.dtype, device=X.device)
    K = eye - 0.5 * A11 + 0.25 * C
    # One factorisation for both blocks: right-hand sides [I, 2I - K] give [K⁻¹, K⁻¹ (2I - K)].
    # solve_ex: no singularity check, which would synchronise a GPU with the host (K is always
    # invertible, see above).
    Kinv = torch.linalg.solve_ex(K, torch.cat([eye.expand_as(K), 2 * eye - K], dim=-1))[0]
    k = X.size(-1)
    return torch.cat([Kinv[..., k:], X2 @ Kinv[..., :k]], dim=-2)
