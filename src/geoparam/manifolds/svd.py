r"""Constraints on singular values: low rank, fixed rank, almost orthogonal, bounded, GL⁺, SL.

Every class here is a :class:`Product` of three factors, a weight of shape ``(..., n, k)`` being

    W = U diag(s) Vᴴ,     U: n x r and V: k x r with orthonormal columns,  s = f(x) ∈ ℝʳ,

with ``r`` the rank (``min(n, k)`` for the full-rank classes). Both frames are tall, so the
orthogonal maps of :class:`Orthogonal` run their ``O(nr²)`` Stiefel kernels (a frame with
``r < n`` never exponentiates or inverts an ``n x n`` matrix), its base costs one ``n x n`` by
``n x r`` product, and the weight is assembled in ``O(nkr)``. Each frame keeps its own base
(dynamic trivialization), which :func:`geoparam.update_base` re-bases. What the classes differ in
is the map ``f`` onto the singular values, and, for the groups of square matrices, frames in
``SO(n)`` that fix the sign of the determinant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg._precision import working_dtype
from ._validation import check_rank
from .orthogonal import Orthogonal, OrthogonalMap, check_map, default_map
from .product import Product
from .spectrum import (
    BOUNDED_FUNCTIONS,
    POSITIVE_FUNCTIONS,
    ElementwiseMap,
    FunctionArgument,
    FunctionPair,
    Spectrum,
    _identity,
    inset,
    require_inverse,
)

__all__ = [
    "AlmostOrthogonal",
    "FixedRank",
    "Invertible",
    "LowRank",
    "SpecialLinear",
    "SpectralBound",
]


def _where(shape: torch.Size, label: str) -> str:
    return f"{label} of shape {tuple(shape)}"


class _Affine:
    """``x ↦ 1 + lam · f(x)`` and its inverse (a class, not a closure, so modules pickle)."""

    def __init__(self, f: ElementwiseMap, f_inverse: ElementwiseMap, lam: float) -> None:
        self.f, self.f_inverse, self.lam = f, f_inverse, lam

    def __call__(self, x: Tensor) -> Tensor:
        return 1.0 + self.lam * self.f(x)

    def inverse(self, s: Tensor) -> Tensor:
        if self.lam == 0:
            return torch.zeros_like(s)  # every x is a pre-image of s = 1
        # Clamped after the division: s - 1 cancels digits, so (s - 1) / lam can round past ±1
        # (a NaN for asin); just inside, tanh's and the scaled sigmoid's inverses are finite.
        margin = inset(s.dtype)
        return self.f_inverse(((s - 1.0) / self.lam).clamp(margin - 1.0, 1.0 - margin))


class _ScaledSigmoid:
    """``x ↦ c · sigmoid(x)`` onto ``(0, c)``, and its inverse."""

    def __init__(self, c: float) -> None:
        self.c = c

    def __call__(self, x: Tensor) -> Tensor:
        return self.c * torch.sigmoid(x)

    def inverse(self, s: Tensor) -> Tensor:
        margin = inset(s.dtype)  # the logit is infinite at 0 and 1
        return torch.logit((s / self.c).clamp(margin, 1.0 - margin))


class _UnitProduct:
    """``x ↦ g(x) / (∏ g(x))^(1/r)``: positive values whose product is 1, and a pre-image."""

    def __init__(self, g: ElementwiseMap, g_inverse: ElementwiseMap) -> None:
        self.g, self.g_inverse = g, g_inverse

    def __call__(self, x: Tensor) -> Tensor:
        y = self.g(x)
        # Divided by the geometric mean, taken in the log domain so that no product overflows.
        return y * torch.exp(-y.log().mean(dim=-1, keepdim=True))

    def inverse(self, s: Tensor) -> Tensor:
        # For s with ∏ s = 1 the geometric mean of g(g⁻¹(s)) = s is 1: g⁻¹(s) is a pre-image.
        return self.g_inverse(s)


def _check_matrix(shape: torch.Size, label: str, what: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} needs a matrix or a batch of matrices "
            f"(at least 2 dimensions), got {len(shape)}."
        )
    if 0 in shape[-2:]:
        raise ValueError(f"{label} of shape {tuple(shape)}: {what} needs non-empty matrices.")
    return shape[-2], shape[-1]


def _check_square(shape: torch.Size, label: str, what: str) -> int:
    n, k = _check_matrix(shape, label, what)
    if n != k:
        raise ValueError(f"{label} of shape {tuple(shape)}: {what} needs square matrices.")
    return n


def _check_real(dtype: torch.dtype | None, shape: torch.Size, label: str, what: str) -> None:
    if dtype is not None and dtype.is_complex:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} needs a real weight (the sign of a "
            f"determinant), got {dtype}."
        )


def _check_number(value: object, name: str, shape: torch.Size, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{label} of shape {tuple(shape)}: {name} must be a number, got {value!r}.")
    return float(value)


def _tolerance(value: Tensor) -> float:
    """The default relative tolerance on singular values: ``10 · max(n, k) · eps``.

    ``eps`` is that of ``value``'s dtype. Rounding in the frames and in the product
    ``U diag(s) Vᴴ`` moves a singular value by far less, relative to ``σ₁``: measured after
    training in float32, at most ``0.6 · n · eps`` for ``n`` from 4 to 256.
    """
    return 10.0 * max(value.shape[-2:]) * torch.finfo(value.dtype).eps


def _singular_values(value: Tensor) -> Tensor:
    """Descending singular values, computed in a LAPACK-supported precision."""
    return torch.linalg.svdvals(value.to(working_dtype(value.dtype)))


def _relative_singular_values(value: Tensor) -> Tensor:
    """Singular values divided by ``σ₁`` (by ``1`` for a zero matrix), descending."""
    s = _singular_values(value)
    return s / _scale(s)


def _svd(value: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, s, V)`` of the truncated SVD ``value ≈ U diag(s) Vᴴ``, ``U``: n x r, ``V``: k x r."""
    U, s, Vh = torch.linalg.svd(value.to(working_dtype(value.dtype)), full_matrices=False)
    return U[..., :rank], s[..., :rank], Vh[..., :rank, :].mH


def _compose(U: Tensor, s: Tensor, V: Tensor) -> Tensor:
    return (U * s.unsqueeze(-2)) @ V.mH


def _scale(s: Tensor) -> Tensor:
    """``σ₁`` per matrix (``1`` for a zero matrix), the scale relative tolerances refer to."""
    top = s[..., :1]
    return torch.where(top > 0, top, torch.ones_like(top))


class _SingularValueProduct(Product):
    """``W = U diag(s) Vᴴ`` with frames ``U`` (n x r), ``V`` (k x r) and ``s`` a :class:`Spectrum`.

    The subclasses choose ``r``, the spectrum's map and interval, and the set's checks.
    """

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        spectrum: tuple[ElementwiseMap, ElementwiseMap],
        triv: str | None,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        label: str,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        shape = torch.Size(shape)
        batch, (n, k) = shape[:-2], shape[-2:]
        real = (dtype or torch.get_default_dtype()).to_real()
        left, right = (triv or default_map(rows, rank, dtype) for rows in (n, k))
        factors = [
            Orthogonal((*batch, n, rank), left, label=f"{label} (U)", dtype=dtype, device=device),
            Spectrum(
                (*batch, rank),
                spectrum,
                low=low,
                high=high,
                label=f"{label} (singular values)",
                dtype=real,
                device=device,
            ),
            Orthogonal((*batch, k, rank), right, label=f"{label} (V)", dtype=dtype, device=device),
        ]
        super().__init__(shape, factors, label=label, dtype=dtype, device=device)
        self.rank = rank

    def extra_repr(self) -> str:
        return f"rank={self.rank}"

    def _combine(self, U: Tensor, s: Tensor, V: Tensor) -> Tensor:
        return _compose(U, s, V)

    def _split(self, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        U, s, V = self._factorize(value)
        dtype = value.dtype
        return U.to(dtype), s.to(dtype.to_real()), V.to(dtype)

    def _factorize(self, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The truncated SVD of a point of the set, in the working precision."""
        return _svd(value, self.rank)


class LowRank(_SingularValueProduct):
    r"""Matrices of rank at most ``r``: ``W = U diag(s) Vᴴ`` with ``s ∈ ℝʳ`` unconstrained.

    ``U`` (``n x r``) and ``V`` (``k x r``) have orthonormal columns; the entries of ``s`` may be
    of either sign and zero, so every matrix of rank ``≤ r`` is a value. A weight of shape
    ``(..., n, k)`` is a batch of such matrices.

    *Right inverse*: the SVD, truncated to ``r``. *Projection*: the same truncation, the nearest
    matrix of rank ``≤ r`` in every unitarily invariant norm (Eckart-Young-Mirsky).
    *Tolerance*: ``W`` has rank ``≤ r`` when ``σ_{r+1} ≤ atol · σ₁``; by default
    ``atol = 10 · max(n, k) · eps`` of ``W``'s dtype.

    Args:
        shape: the weight's shape ``(..., n, k)``.
        rank: ``r``, with ``1 <= r <= min(n, k)``.
        triv: the frames' orthogonal map (``"matrix_exp"``, ``"cayley"``, ``"householder"``), or
            ``None``: for each frame the fastest, ``"householder"`` for a real tall frame
            (``r`` below its number of rows), ``"cayley"`` for a square or complex one.
        label: how messages name the weight, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype, real or complex. Default: torch's default dtype.
        device: the weight's device. Default: the CPU.

    Raises:
        ValueError: fewer than two dimensions; a rank out of range; an unknown map, or
            ``"householder"`` for a complex weight.
        TypeError: a rank that is not an ``int``.

    Example:
        >>> param = LowRank(torch.Size([6, 4]), 2, label="W")
        >>> W = param.sample()
        >>> int(torch.linalg.matrix_rank(W))
        2
        >>> torch.allclose(param(*param.right_inverse(W)), W, atol=1e-5)
        True
    """

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the low-rank tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        _check_matrix(shape, label, "low_rank")
        rank = check_rank(rank, min(shape[-2], shape[-1]), _where(shape, label))
        triv = check_map(triv, _where(shape, label), dtype)
        super().__init__(
            shape, rank, (_identity, _identity), triv, label=label, dtype=dtype, device=device
        )

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        tol = _tolerance(value) if atol is None else atol
        return _rank_above(_relative_singular_values(value), self.rank, tol)

    def _project(self, value: Tensor) -> Tensor:
        return _compose(*_svd(value, self.rank)).to(value.dtype)


def _rank_above(relative: Tensor, rank: int, tol: float) -> str | None:
    """What says that singular values ``σ/σ₁`` beyond the first ``rank`` exceed ``tol``."""
    tail = relative[..., rank:]
    if tail.numel() and float(tail.max()) > tol:
        return (
            f"its singular value number {rank + 1} is {float(tail.max()):.3g} times its largest, "
            f"above the tolerance {tol:.3g}: its rank exceeds {rank}"
        )
    return None


class FixedRank(_SingularValueProduct):
    r"""Matrices of rank exactly ``r``: ``W = U diag(f(x)) Vᴴ`` with ``f > 0``.

    ``f`` maps the reals onto the positive reals: ``"softplus"`` (``softplus(x) + 10⁻⁶``,
    geotorch's default, so a singular value never reaches zero) or ``"exp"``, or a pair
    ``(f, f_inverse)``. A lone callable is refused: without an inverse the weight the constraint
    is registered on could not be kept.

    *Right inverse*: the truncated SVD, then ``x = f⁻¹(s)``. *Projection*: the truncated SVD,
    with the ``r`` kept singular values raised to at least ``2 · atol · σ₁`` (a rank-deficient
    matrix has no nearest matrix of rank ``r``; this is a close one). *Tolerance*: the numerical
    rank is ``r``: ``σ_{r+1} ≤ atol · σ₁ < σ_r``, with the default ``atol`` of :class:`LowRank`.

    Args:
        shape: the weight's shape ``(..., n, k)``.
        rank: ``r``, with ``1 <= r <= min(n, k)``.
        f: ``"softplus"``, ``"exp"`` or a pair of callables. Default: ``"softplus"``.
        triv: the frames' map, as for :class:`LowRank`.
        label: how messages name the weight.
        dtype: the weight's dtype, real or complex.
        device: the weight's device.

    Raises:
        ValueError: as :class:`LowRank`; an unknown ``f``, or one without an inverse.
        TypeError: a rank that is not an ``int``.

    Example:
        >>> param = FixedRank(torch.Size([5, 5]), 3, f="exp", label="W")
        >>> W = param(*param.right_inverse(param.sample()))
        >>> int(torch.linalg.matrix_rank(W))
        3
    """

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        f: FunctionArgument = "softplus",
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the fixed-rank tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        _check_matrix(shape, label, "fixed_rank")
        rank = check_rank(rank, min(shape[-2], shape[-1]), _where(shape, label))
        spectrum = require_inverse(f, POSITIVE_FUNCTIONS, _where(shape, label))
        triv = check_map(triv, _where(shape, label), dtype)
        super().__init__(
            shape, rank, spectrum, triv, low=0.0, label=label, dtype=dtype, device=device
        )

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        tol = _tolerance(value) if atol is None else atol
        relative = _relative_singular_values(value)
        smallest = float(relative[..., self.rank - 1].min())
        if smallest <= tol:
            return (
                f"its singular value number {self.rank} is {smallest:.3g} times its largest, not "
                f"above the tolerance {tol:.3g}: its rank is below {self.rank}"
            )
        return _rank_above(relative, self.rank, tol)

    def _project(self, value: Tensor) -> Tensor:
        U, s, V = _svd(value, self.rank)
        s = s.clamp_min(2 * _tolerance(value) * _scale(s))
        return _compose(U, s, V).to(value.dtype)


class AlmostOrthogonal(_SingularValueProduct):
    r"""Matrices whose singular values lie in ``[1 - lam, 1 + lam]``: ``s = 1 + lam · f(x)``.

    ``f`` maps onto ``[-1, 1]``: ``"sin"``, ``"tanh"``, ``"scaled_sigmoid"`` (``2 sigmoid - 1``)
    or a pair ``(f, f_inverse)``. ``lam = 0`` gives orthogonal matrices, ``lam = 1`` singular
    values in ``[0, 2]``. ``r = min(n, k)``: tall, square and wide weights alike.

    *Right inverse*: the SVD, then ``x = f⁻¹((s - 1) / lam)``, with ``(s - 1) / lam`` clamped to
    ``[-1 + δ, 1 - δ]`` (``δ = 10⁻⁶``, ``10⁻¹²`` in double precision), where the inverses of
    ``tanh`` and ``scaled_sigmoid`` are finite: a kept singular value at an end of the interval
    moves inside by ``lam · δ``. *Projection*: singular values clamped
    to the interval. *Tolerance*: ``|σᵢ - 1| ≤ lam + atol``, by default
    ``atol = 10 · max(n, k) · eps``.

    Args:
        shape: the weight's shape ``(..., n, k)``.
        lam: the half-width of the interval, in ``[0, 1]``.
        f: ``"sin"``, ``"tanh"``, ``"scaled_sigmoid"`` or a pair. Default: ``"sin"``.
        triv: the frames' map, as for :class:`LowRank`.
        label: how messages name the weight.
        dtype: the weight's dtype, real or complex.
        device: the weight's device.

    Raises:
        ValueError: fewer than two dimensions; ``lam`` outside ``[0, 1]``; an unknown ``f`` or one
            without an inverse; an unknown map.
        TypeError: a ``lam`` that is not a number.

    Example:
        >>> param = AlmostOrthogonal(torch.Size([3, 5]), 0.5, label="W")
        >>> s = torch.linalg.svdvals(param.sample())
        >>> bool(((s - 1).abs() <= 0.5 + 1e-5).all())
        True
    """

    def __init__(
        self,
        shape: torch.Size,
        lam: float = 0.1,
        f: FunctionArgument = "sin",
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the almost orthogonal tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        n, k = _check_matrix(shape, label, "almost_orthogonal")
        lam = _check_number(lam, "lam", shape, label)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"{label} of shape {tuple(shape)}: lam must be in [0, 1], got {lam}.")
        g, g_inverse = require_inverse(f, BOUNDED_FUNCTIONS, _where(shape, label))
        affine = _Affine(g, g_inverse, lam)
        rank = min(n, k)
        triv = check_map(triv, _where(shape, label), dtype)
        super().__init__(
            shape,
            rank,
            (affine, affine.inverse),
            triv,
            low=1.0 - lam,
            high=1.0 + lam,
            label=label,
            dtype=dtype,
            device=device,
        )
        self.lam = lam

    def extra_repr(self) -> str:
        return f"lam={self.lam}"

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        tol = _tolerance(value) if atol is None else atol
        s = _singular_values(value)
        high, low = 1.0 + self.lam, 1.0 - self.lam
        if float(s.max()) > high + tol:
            return f"its largest singular value is {float(s.max()):.4g}, above 1 + lam = {high:.4g}"
        if float(s.min()) < low - tol:
            return f"its smallest singular value is {float(s.min()):.4g}, below 1 - lam = {low:.4g}"
        return None

    def _project(self, value: Tensor) -> Tensor:
        U, s, V = _svd(value, self.rank)
        return _compose(U, s.clamp(1.0 - self.lam, 1.0 + self.lam), V).to(value.dtype)


class SpectralBound(_SingularValueProduct):
    r"""Matrices with spectral norm at most ``c``: singular values ``s = c · sigmoid(x)``.

    Every singular value lies in ``[0, c]``, exactly: the bound holds for the weight itself, not
    for an estimate of its norm (unlike :func:`geoparam.spectral_norm`, which divides by a power
    iteration's estimate). ``r = min(n, k)``.

    *Right inverse*: the SVD, then ``x = logit(s / c)``, with ``s / c`` clamped to ``[δ, 1 - δ]``
    (``δ = 10⁻⁶``, ``10⁻¹²`` in double precision), where the logit is finite: a kept singular
    value at ``0`` or ``c`` (a rank-deficient weight, or one on the bound) moves inside by
    ``c · δ``.
    *Projection*: singular values clamped to ``[0, c]``. *Tolerance*: ``σ₁ ≤ c · (1 + atol)``,
    by default ``atol = 10 · max(n, k) · eps``.

    Args:
        shape: the weight's shape ``(..., n, k)``.
        c: the bound, ``c > 0``.
        triv: the frames' map, as for :class:`LowRank`.
        label: how messages name the weight.
        dtype: the weight's dtype, real or complex.
        device: the weight's device.

    Raises:
        ValueError: fewer than two dimensions; ``c <= 0`` or not finite; an unknown map.
        TypeError: a ``c`` that is not a number.

    Example:
        >>> param = SpectralBound(torch.Size([4, 4]), 2.0, label="W")
        >>> param.right_inverse(3 * torch.eye(4))
        Traceback (most recent call last):
          ...
        ValueError: W: cannot assign a value off the constraint: its largest singular value ...
        >>> W = param(*param.right_inverse(torch.diag(torch.tensor([1.5, 1.0, 0.5, 0.1]))))
        >>> torch.linalg.svdvals(W)
        tensor([1.5000, 1.0000, 0.5000, 0.1000])
    """

    def __init__(
        self,
        shape: torch.Size,
        c: float = 1.0,
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the spectrally bounded tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        n, k = _check_matrix(shape, label, "spectral_bound")
        c = _check_number(c, "c", shape, label)
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(
                f"{label} of shape {tuple(shape)}: c must be a finite number > 0, got {c}."
            )
        bound = _ScaledSigmoid(c)
        rank = min(n, k)
        triv = check_map(triv, _where(shape, label), dtype)
        super().__init__(
            shape,
            rank,
            (bound, bound.inverse),
            triv,
            low=0.0,
            high=c,
            label=label,
            dtype=dtype,
            device=device,
        )
        self.c = c

    def extra_repr(self) -> str:
        return f"c={self.c}"

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        tol = _tolerance(value) if atol is None else atol
        top = float(_singular_values(value).max())
        if top > self.c * (1.0 + tol):
            return f"its largest singular value is {top:.4g}, above c = {self.c}"
        return None

    def _project(self, value: Tensor) -> Tensor:
        U, s, V = _svd(value, self.rank)
        return _compose(U, s.clamp(0.0, self.c), V).to(value.dtype)


def _determinant_sign(Q: Tensor) -> Tensor:
    """``det Q`` (``±1`` for an orthogonal ``Q``), shaped ``(..., 1)`` to scale a column."""
    return torch.linalg.det(Q.to(working_dtype(Q.dtype))).sign().unsqueeze(-1).to(Q.dtype)


def _rotations(U: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
    """``U``, ``V`` in ``SO(n)``, for ``U diag(s) Vᵀ`` with ``det U = det V``, same product.

    Where both determinants are ``-1``, the last column of both flips sign: the matrix keeps
    its value, and the frames then stay in ``SO(n)`` under every map but Householder's.
    """
    sign = _determinant_sign(U)
    U, V = U.clone(), V.clone()
    U[..., -1] *= sign
    V[..., -1] *= sign
    return U, V


class _RotatedFrames(_SingularValueProduct):
    """Frames in ``SO(n)``, so ``det W = ∏ s > 0`` for a positive spectrum ``s``.

    Square real weights; ``f`` positive with an inverse; a map that stays in ``SO(n)``.
    ``front_door`` names the constraint in messages.
    """

    def __init__(
        self,
        shape: torch.Size,
        f: FunctionArgument,
        triv: OrthogonalMap | str | None,
        front_door: str,
        *,
        label: str,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        n = _check_square(shape, label, front_door)
        _check_real(dtype, shape, label, front_door)
        spectrum = self._spectrum(require_inverse(f, POSITIVE_FUNCTIONS, _where(shape, label)))
        triv = check_map(triv, _where(shape, label), dtype, rotations=True)
        super().__init__(shape, n, spectrum, triv, low=0.0, label=label, dtype=dtype, device=device)

    @staticmethod
    def _spectrum(f: FunctionPair) -> FunctionPair:
        """The spectrum's function pair made from the user's positive ``f``."""
        return f

    def _factorize(self, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        U, s, V = _svd(value, self.rank)
        U, V = _rotations(U, V)
        return U, s, V

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``U diag(s) Vᵀ`` for Haar-distributed ``U``, ``V`` in ``SO(n)`` and a sampled ``s``."""
        U, s, V = (f.sample(generator) for f in self.factors)
        # A column flip of a Haar-distributed O(n) matrix of determinant -1 gives SO(n)'s Haar
        # measure (a bijection of the two cosets that preserves the measure).
        U[..., -1] *= _determinant_sign(U)
        V[..., -1] *= _determinant_sign(V)
        return _compose(U, s, V)

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        relative = _relative_singular_values(value)
        tol = _invertibility_floor(value) if atol is None else atol
        smallest = float(relative[..., -1].min())
        if smallest <= tol:
            return (
                f"its smallest singular value is {smallest:.3g} times its largest, not above "
                f"{tol:.3g}: it is not (numerically) invertible"
            )
        sign = torch.linalg.slogdet(value.to(working_dtype(value.dtype))).sign
        if float(sign.min()) <= 0:
            count = int((sign <= 0).sum())
            return f"its determinant is negative (in {count} of {sign.numel()} matrices)"
        return None

    def _positive_parts(self, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The SVD of a matrix of positive determinant close to ``value``, frames in ``SO(n)``.

        Where ``det value < 0``, the direction of the smallest singular value flips sign (its
        column of ``U`` does), which changes the matrix least; then singular values below twice
        the invertibility floor are raised to it.
        """
        U, s, V = _svd(value, self.rank)
        U = U.clone()
        U[..., -1] *= _determinant_sign(U) * _determinant_sign(V)
        s = s.clamp_min(2 * _invertibility_floor(value) * _scale(s))
        U, V = _rotations(U, V)
        return U, s, V


def _invertibility_floor(value: Tensor) -> float:
    """``n · eps``: a ratio ``σ_n / σ₁`` below it is a singular matrix (as for ``matrix_rank``)."""
    return max(value.shape[-2:]) * torch.finfo(value.dtype).eps


class Invertible(_RotatedFrames):
    r"""Square matrices of positive determinant (``GL⁺(n)``): ``W = U diag(f(x)) Vᵀ``, ``f > 0``.

    ``U`` and ``V`` are rotations (``SO(n)``), so ``det W = ∏ f(x) > 0`` for every input: the
    constraint holds by construction, not only at initialisation. (geotorch's ``invertible`` uses
    frames in ``O(n)`` and so keeps whatever sign of the determinant it started from.) Real
    weights only; the frames' map is ``"matrix_exp"`` or ``"cayley"`` (a product of Householder
    reflections can leave ``SO(n)``).

    *Right inverse*: the SVD with the frames' last columns flipped where both determinants are
    ``-1``, then ``x = f⁻¹(s)``. *Projection*: a matrix of negative determinant has its
    smallest singular direction flipped (``s_n → -s_n``), then singular values below
    ``2 · n · eps · σ₁`` are raised to it. *Tolerance*: ``det W > 0`` and ``σ_n > atol · σ₁``,
    by default ``atol = n · eps`` (the numerical rank of :func:`torch.linalg.matrix_rank`).

    Args:
        shape: the weight's shape ``(..., n, n)``.
        f: ``"softplus"``, ``"exp"`` or a pair ``(f, f_inverse)``. Default: ``"softplus"``.
        triv: ``"matrix_exp"``, ``"cayley"`` or ``None`` (``"cayley"``).
        label: how messages name the weight.
        dtype: the weight's dtype, real.
        device: the weight's device.

    Raises:
        ValueError: not a (batch of) square matrices; a complex dtype; an unknown ``f`` or one
            without an inverse; an unknown map or ``"householder"``.

    Example:
        >>> param = Invertible(torch.Size([3, 3]), label="W")
        >>> W = param(*param.right_inverse(torch.diag(torch.tensor([2.0, -1.0, -0.5]))))
        >>> round(float(torch.linalg.det(W)), 5)
        1.0
        >>> param.right_inverse(torch.diag(torch.tensor([2.0, 1.0, -0.5])))
        Traceback (most recent call last):
          ...
        ValueError: W: cannot assign a value off the constraint: its determinant is negative ...
    """

    def __init__(
        self,
        shape: torch.Size,
        f: FunctionArgument = "softplus",
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the invertible tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, f, triv, "invertible", label=label, dtype=dtype, device=device)

    def _project(self, value: Tensor) -> Tensor:
        return _compose(*self._positive_parts(value)).to(value.dtype)


class SpecialLinear(_RotatedFrames):
    r"""Square matrices of determinant one (``SL(n)``): ``W = U diag(s) Vᵀ``, ``∏ s = 1``.

    ``s = f(x) / (∏ f(x))^(1/n)``, a positive ``f`` divided by its geometric mean, with ``U``, ``V``
    rotations (``SO(n)``), so ``det W = 1`` for every input. Real weights only; the frames' map
    is ``"matrix_exp"`` or ``"cayley"``.

    *Right inverse*: as for :class:`Invertible` (for ``∏ s = 1``, ``x = f⁻¹(s)`` is a pre-image;
    a kept weight whose determinant is 1 within the tolerance comes out rescaled to exactly 1).
    *Projection*: the projection onto ``GL⁺`` of :class:`Invertible`, divided by
    ``|det|^(1/n)``. *Tolerance*: ``det W > 0``, ``σ_n > n · eps · σ₁`` and
    ``|log det W| ≤ atol``, by default ``atol = 10 n · eps · σ₁/σ_n`` (the rounding of a matrix
    moves its determinant more the worse it is conditioned; measured after training in float32,
    at most ``0.4 · eps · σ₁/σ_n``).

    Args:
        shape: the weight's shape ``(..., n, n)``.
        f: ``"softplus"``, ``"exp"`` or a pair ``(f, f_inverse)``. Default: ``"softplus"``.
        triv: ``"matrix_exp"``, ``"cayley"`` or ``None`` (``"cayley"``).
        label: how messages name the weight.
        dtype: the weight's dtype, real.
        device: the weight's device.

    Raises:
        ValueError: as for :class:`Invertible`.

    Example:
        >>> param = SpecialLinear(torch.Size([3, 3]), label="W")
        >>> W = param(*param.right_inverse(torch.diag(torch.tensor([2.0, -1.0, -0.5]))))
        >>> round(float(torch.linalg.det(W)), 5)
        1.0
    """

    def __init__(
        self,
        shape: torch.Size,
        f: FunctionArgument = "softplus",
        triv: OrthogonalMap | str | None = None,
        *,
        label: str = "the special linear tensor",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, f, triv, "sln", label=label, dtype=dtype, device=device)

    @staticmethod
    def _spectrum(f: FunctionPair) -> FunctionPair:
        # f divided by its geometric mean, so that ∏ s = 1.
        unit = _UnitProduct(*f)
        return unit, unit.inverse

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        problem = super()._violation(value, None)
        if problem is not None:
            return problem
        s = _singular_values(value)
        log_det = s.log().sum(dim=-1)  # log |det W| = Σ log σᵢ
        if atol is None:
            tol = _tolerance(value) * s[..., 0] / s[..., -1]
        else:
            tol = torch.full_like(log_det, atol)
        excess = (log_det.abs() - tol).flatten()
        if float(excess.max()) > 0:
            worst = int(excess.argmax())
            det = math.exp(float(log_det.flatten()[worst]))
            tolerance = float(tol.flatten()[worst])
            return f"its determinant is {det:.6g}, not 1 (tolerance {tolerance:.3g} on log |det|)"
        return None

    def _project(self, value: Tensor) -> Tensor:
        U, s, V = self._positive_parts(value)
        s = s * torch.exp(-s.log().mean(dim=-1, keepdim=True))
        return _compose(U, s, V).to(value.dtype)
