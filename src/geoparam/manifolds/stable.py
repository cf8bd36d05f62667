r"""Stable matrices: every eigenvalue's real part at most ``-alpha``.

The parametrization behind :func:`geoparam.alpha_stable`: ``W = (J - R) Q - αI`` with ``J``
skew-Hermitian and ``R``, ``Q`` Hermitian positive semidefinite, all built from triangular
factors with matrix products only (no exponentials, no eigendecompositions in the forward pass).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..linalg import solve_lyapunov
from ._base import Parametrization

__all__ = ["AlphaStable"]

# A value off the set is shifted until its rightmost eigenvalue lies this far (relative to the
# RMS singular value ‖W‖_F / √n) left of -alpha: far enough from the boundary for the Lyapunov
# solve to be well conditioned (condition number about 1e3), close enough not to matter.
_PROJECTION_MARGIN = 1e-3


def _double(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _sqrt_eps(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).eps)


def _rms_scale(A: Tensor) -> Tensor:
    """‖A‖_F / √n per matrix, 1 for a zero matrix, shaped ``(..., 1, 1)``."""
    scale = torch.linalg.matrix_norm(A) / math.sqrt(A.size(-1))
    return torch.where(scale > 0, scale, torch.ones_like(scale))[..., None, None]


def _default_tolerance(A: Tensor) -> Tensor:
    """``sqrt(eps) · ‖A‖_F`` per matrix, in double precision.

    Not a multiple of eps: the map's output is exact up to rounding (about eps · ‖A‖), but an
    eigenvalue moves by the square root of a perturbation where two eigenvalues meet (a 2 x 2
    Jordan block), which is where training pushes them, on the boundary. Measured: a weight
    trained towards +2I with alpha = 2 in single precision had a real part 1.8e-4 above -alpha,
    where eps · ‖A‖_F was 6e-7.
    """
    return _sqrt_eps(A.dtype) * torch.linalg.matrix_norm(A).to(torch.float64)


def _rightmost(A: Tensor) -> Tensor:
    """The largest real part of an eigenvalue of each matrix, in double precision."""
    return torch.linalg.eigvals(A.to(_double(A.dtype))).real.amax(-1)


def _lyapunov(B: Tensor) -> Tensor | None:
    """``X ≻ 0`` with ``B X + X Bᴴ = -2I``, or ``None`` where the solve or ``X ≻ 0`` fails."""
    eye = torch.eye(B.size(-1), dtype=B.dtype, device=B.device)
    try:
        X = solve_lyapunov(B, -2 * eye)
    except ValueError:  # B is not (numerically) stable
        return None
    X = (X + X.mH) / 2
    return X if bool((torch.linalg.cholesky_ex(X).info == 0).all()) else None


def _norm_bound(X: Tensor) -> Tensor:
    """``‖X‖_F``, shaped ``(..., 1, 1)``: below ``1 / m``, it proves ``B`` ``m``-stable.

    For an eigenvalue ``λ`` of ``B`` with left eigenvector ``y``, ``yᴴ(B X + X Bᴴ)y`` gives
    ``2 Re λ · yᴴXy = -2‖y‖²``, so ``‖X‖_F >= ‖X‖₂ >= 1 / |Re λ|``: no eigenvalues needed.
    """
    return torch.linalg.matrix_norm(X)[..., None, None]


def _factors(B: Tensor, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stored tensors ``(K, N, L)`` of ``B = (J - R) Q`` from ``X ≻ 0``, ``B X + X Bᴴ = -2I``.

    ``R = I``, ``Q = X⁻¹ = LᴴL`` with ``L`` the inverse of ``X``'s Cholesky factor (lower
    triangular), ``J = (B X - X Bᴴ) / 2`` (skew), for which ``(J - I) X⁻¹ = B``; then
    ``(J - R, Q)`` is rescaled to ``(c (J - R), Q / c)`` so that both have the same norm.
    """
    eye = torch.eye(B.size(-1), dtype=B.dtype, device=B.device)
    C = torch.linalg.cholesky(X)
    L = torch.linalg.solve_triangular(C, eye.expand_as(C), upper=False)
    J = (B @ X - X @ B.mH) / 2
    ratio = torch.linalg.matrix_norm(L.mH @ L) / torch.linalg.matrix_norm(J - eye)
    c = ratio.sqrt()[..., None, None]
    J, N, L = c * J, c.sqrt() * eye, L / c.sqrt()
    K = J.tril(-1) + torch.diag_embed(J.diagonal(dim1=-2, dim2=-1) / 2)
    return K, N, L


class AlphaStable(Parametrization):
    r"""Square matrices whose eigenvalues all have real part at most ``-alpha``.

    .. math::

        W = (J - R)\,Q - \alpha I, \qquad J = K - K^\mathsf{H},\quad R = N N^\mathsf{H},\quad
        Q = L^\mathsf{H} L,

    with ``K = tril(X₀)``, ``N = tril(X₁)`` and ``L = tril(X₂)`` read from the three stored
    tensors: ``J`` is skew-Hermitian and ``R``, ``Q`` are Hermitian positive semidefinite (the
    form of Gillis & Sharma, "On computing the distance to stability for matrices using linear
    dissipative Hamiltonian systems", Automatica 85, 2017). Three ``n x n`` products; no
    exponential, inverse or eigendecomposition.

    Why the eigenvalues satisfy ``Re λ <= -α``: ``B = (J - R) Q^{1/2} · Q^{1/2}`` has the same
    nonzero eigenvalues as ``M = Q^{1/2} (J - R) Q^{1/2}`` (``XY`` and ``YX`` do), and the
    Hermitian part of ``M`` is ``-Q^{1/2} R Q^{1/2} ⪯ 0``. For ``Mv = λv``,
    ``Re λ · ‖v‖² = Re(vᴴMv) = -vᴴQ^{1/2} R Q^{1/2} v <= 0``; so every eigenvalue of ``B`` has
    ``Re λ <= 0`` and every eigenvalue of ``W = B - αI`` has ``Re λ <= -α``. Conversely every
    ``B`` whose eigenvalues have negative real parts is of this form, with ``Q`` invertible (see
    the right inverse), so the map reaches every strictly stable matrix.

    Right inverse (what keeping or assigning a weight ``A`` runs; float64 throughout, ``O(n³)``):
    with ``B = A + αI``, solve the Lyapunov equation ``B X + X Bᴴ = -2I``
    (:func:`geoparam.linalg.solve_lyapunov`; ``X ≻ 0`` since ``B`` is stable), and take
    ``R = I``, ``Q = X⁻¹`` and ``J = (B X - X Bᴴ) / 2``, skew by construction, for which
    ``(J - R) Q = B``. ``L`` is the inverse of the Cholesky factor of ``X`` (a triangular solve),
    and ``(J - R, Q)`` is rescaled to ``(c(J - R), Q/c)`` so that both have the same norm. A
    matrix only marginally stable, for which the equation is singular or nearly so (its rightmost
    real part is above ``-α - sqrt(eps) · s``, with ``s = ‖A‖_F / √n`` and ``eps`` of the
    weight's dtype), is first shifted left to that bound: such a weight moves by at most about
    ``2 sqrt(eps) · s``. Eigenvalues are computed for this only when the solution does not
    already prove the bound.

    Projection (registration of a weight off the set): ``A - (μ + α + 10⁻³ s) I``, with ``μ`` the
    largest real part of an eigenvalue of ``A``: the same matrix, with every eigenvalue moved left
    until the rightmost lies just inside the set.

    A matrix is on the set when its rightmost eigenvalue (``torch.linalg.eigvals`` in double
    precision) has real part at most ``-α + atol``; the default ``atol`` is ``sqrt(eps) · ‖A‖_F``.
    That is looser than rounding (``eps · ‖A‖``) because eigenvalues are not that accurate where
    they meet: a double eigenvalue moves by the square root of a perturbation, and training
    gathers eigenvalues on the boundary. In single precision, a trained weight ``≈ -2I`` had
    a real part ``1.8e-4`` above ``-α`` (``W`` is exact only up to rounding).

    Args:
        shape: the weight's shape ``(..., n, n)``; leading dimensions are a batch.
        alpha: the decay rate ``α >= 0``. Default: ``1e-3`` (geotorch's).
        label: how messages name the tensor.
        dtype: the weight's dtype (real or complex).
        device: the weight's device.

    Raises:
        ValueError: a shape that is not ``(..., n, n)``; ``alpha`` negative or not finite.
        TypeError: ``alpha`` not a real number.

    Example:
        >>> param = AlphaStable(torch.Size([4, 4]), alpha=0.5, dtype=torch.float64)
        >>> A = torch.tensor([[-1.0, 5.0], [0.0, -2.0]], dtype=torch.float64)
        >>> A = torch.block_diag(A, A)
        >>> W = param(*param.right_inverse(A))
        >>> torch.allclose(W, A)
        True
        >>> param.in_manifold(torch.eye(4, dtype=torch.float64))
        False
    """

    def __init__(
        self,
        shape: torch.Size,
        alpha: float = 1e-3,
        *,
        label: str = "weight",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        shape = torch.Size(shape)
        where = f"{label} of shape {tuple(shape)}"
        if len(shape) < 2 or shape[-2] != shape[-1]:
            raise ValueError(
                f"{where}: an alpha-stable matrix must be a square matrix or a batch of square "
                "matrices (..., n, n)."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"{where}: alpha must be a real number, got {alpha!r}.")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"{where}: alpha must be finite and >= 0, got {alpha!r}.")
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"n={self.shape[-1]}, alpha={self.alpha}"

    def _evaluate(self, X0: Tensor, X1: Tensor, X2: Tensor) -> Tensor:
        K, N, L = X0.tril(), X1.tril(), X2.tril()
        B = (K - K.mH - N @ N.mH) @ (L.mH @ L)
        # In place: the product's backward reads its inputs, not its output.
        B.diagonal(dim1=-2, dim2=-1).sub_(self.alpha)
        return B

    def _violation(self, A: Tensor, atol: float | None) -> str | None:
        mu = _rightmost(A)
        tol = _default_tolerance(A) if atol is None else torch.full_like(mu, atol)
        if bool((mu > -self.alpha + tol).any()):
            return (
                f"its rightmost eigenvalue has real part {float(mu.max()):.4g}, above "
                f"-alpha = {-self.alpha:.4g}"
            )
        return None

    @torch.no_grad()
    def _project(self, A: Tensor) -> Tensor:
        """``A`` shifted left just enough to be on the set (see the class docstring)."""
        mu = _rightmost(A).to(A.real.dtype)[..., None, None]
        target = -self.alpha - _PROJECTION_MARGIN * _rms_scale(A)
        shift = (mu - target).clamp_min(0)
        eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
        return A - shift * eye

    @torch.no_grad()
    def _right_inverse(self, A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if A.device.type == "meta":
            # A module built on the meta device: shapes only; the values come with its
            # initialisation after to_empty().
            return torch.empty_like(A), torch.empty_like(A), torch.empty_like(A)
        work = A.to(_double(A.dtype))
        eye = torch.eye(A.size(-1), dtype=work.dtype, device=A.device)
        B = work + self.alpha * eye
        margin = _sqrt_eps(A.dtype) * _rms_scale(work)
        X = _lyapunov(B)
        if X is None or bool((_norm_bound(X) * margin >= 1).any()):
            # Possibly marginally stable, where the equation is singular or nearly so: shift
            # the matrices whose rightmost real part is above -margin to -margin.
            shift = (_rightmost(B)[..., None, None] + margin).clamp_min(0)
            if X is None or bool((shift > 0).any()):
                B = B - shift * eye
                X = _lyapunov(B)
        if X is None:
            raise ValueError(
                f"{self.label}: cannot factor the assigned matrix: the solution of its Lyapunov "
                "equation is not numerically positive definite."
            )
        return tuple(t.to(A.dtype).contiguous() for t in _factors(B, X))

    def stack_after_(self, value: Tensor) -> None:
        raise ValueError(
            f"{self.label} is already constrained: alpha_stable stores three tensors and can only "
            "be a tensor's first constraint (torch's parametrize allows several stored tensors "
            "for the first parametrization only). Remove the other constraint first."
        )

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A random matrix of the set: ``(J - R) Q - αI`` with random ``J``, ``R`` and ``Q``.

        ``J = (G₀ - G₀ᴴ) / (2√n)``, ``R = I + G₁G₁ᴴ / n`` and ``Q = I + G₂G₂ᴴ / n`` for standard
        normal ``Gᵢ``: since ``R, Q ⪰ I``, every eigenvalue has real part at most ``-α - 1``,
        well inside the set.
        """
        n = self.shape[-1]
        G0, G1, G2 = (
            torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
            / math.sqrt(n)
            for _ in range(3)
        )
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        J = (G0 - G0.mH) / 2
        return (J - eye - G1 @ G1.mH) @ (eye + G2 @ G2.mH) - self.alpha * eye
