"""Positive (semi)definite matrices: ``W = Q diag(λ) Qᴴ`` with an orthonormal ``Q``, ``λ >= 0``.

The parametrizations behind :func:`geoparam.positive_definite`,
:func:`geoparam.positive_semidefinite`, :func:`geoparam.positive_semidefinite_low_rank` and
:func:`geoparam.positive_semidefinite_fixed_rank`: each is a :class:`Product` of an eigenbasis
(an :class:`Orthogonal` factor of ``n x r`` matrices) and a spectrum (a :class:`Spectrum` of
``r`` eigenvalues), so the eigenvectors are trained on their manifold and the eigenvalues as
plain numbers, and no eigendecomposition runs in the forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg._precision import working_dtype
from ._validation import check_rank
from .orthogonal import Orthogonal, check_map, default_map
from .product import Product
from .spectrum import (
    _SOFTPLUS_FLOOR,
    POSITIVE_FUNCTIONS,
    FunctionArgument,
    FunctionPair,
    Spectrum,
    require_inverse,
)

__all__ = ["PSDFixedRank", "PSDLowRank", "PositiveDefinite", "PositiveSemidefinite"]

# The default tolerance is 10 · n · eps of the weight's dtype (the orthonormality tolerance of
# geoparam.linalg.is_orthogonal) times the largest |eigenvalue|: a point of the map is off by
# rounding in Q (orthonormal to that tolerance) and in the product, and eigh is backward stable.
_TOLERANCE_PER_ROW = 10


def _absolute_inverse(lam: Tensor) -> Tensor:
    # |λ|, but a zero eigenvalue is stored as the smallest positive number: |x| has gradient 0 at
    # x = 0 exactly, where the eigenvalue could never move again; at x = tiny it is 1, and the
    # weight is the same to rounding.
    return lam.abs().clamp_min(torch.finfo(lam.dtype).tiny)


# λ = |x|: geotorch's map onto [0, ∞) for the semidefinite constraints. Unlike x² or softplus it
# reaches 0 exactly, and its inverse is finite there, so singular weights are kept.
_ABSOLUTE = (torch.abs, _absolute_inverse)


def _matrix_size(shape: torch.Size, label: str, what: str) -> int:
    """``n`` for a shape ``(..., n, n)``; ``ValueError`` for anything else."""
    if len(shape) < 2 or shape[-2] != shape[-1]:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} must be a square matrix or a batch of "
            "square matrices (..., n, n)."
        )
    if shape[-1] == 0:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} must have at least one row and column."
        )
    return shape[-1]


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


class _EigenProduct(Product):
    r"""``W = Q diag(λ) Qᴴ``, ``Q`` of shape ``(..., n, r)`` orthonormal and ``λ = f(x) >= low``.

    The shared machinery of the positive semidefinite family; the subclasses fix ``r`` and ``f``.
    """

    #: What the set is called in messages.
    _noun = "a positive semidefinite matrix"

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        f: FunctionPair,
        low: float,
        triv: str | None,
        *,
        label: str,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        shape = torch.Size(shape)
        n = _matrix_size(shape, label, self._noun)
        where = f"{label} of shape {tuple(shape)}"
        rank = check_rank(rank, n, where)
        triv = check_map(triv, where, dtype) or default_map(n, rank, dtype)
        real = dtype.to_real() if dtype is not None else None
        batch = shape[:-2]
        factors = [
            Orthogonal(
                (*batch, n, rank), triv, label=f"{label} (eigenvectors)", dtype=dtype, device=device
            ),
            Spectrum(
                (*batch, rank),
                f,
                low=low,
                includes_low=f[0] is torch.abs,
                label=f"{label} (eigenvalues)",
                dtype=real,
                device=device,
            ),
        ]
        super().__init__(shape, factors, label=label, dtype=dtype, device=device)
        self.n, self.rank = n, rank

    @property
    def triv(self) -> str:
        """The map of the eigenvector factor."""
        return self.factors[0].orthogonal_map

    @property
    def low(self) -> float:
        """The smallest eigenvalue the map produces (``f``'s floor)."""
        return self.factors[1].low

    def extra_repr(self) -> str:
        return f"n={self.n}, rank={self.rank}, triv={self.triv!r}"

    def _combine(self, Q: Tensor, lam: Tensor) -> Tensor:
        return (Q * lam.unsqueeze(-2)) @ Q.mH

    def _eigh(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """Eigenvalues (ascending) and eigenvectors of the Hermitian part, in working precision."""
        W = W.to(working_dtype(W.dtype))
        return torch.linalg.eigh((W + W.mH) / 2)

    def _split(self, W: Tensor) -> tuple[Tensor, Tensor]:
        # The r largest eigenpairs. Rounding leaves eigenvalues of about -1e-17 where a singular
        # weight has 0: |x| reaches 0, so they become 0 and the weight is kept exactly. Other
        # maps' spectra clamp them just inside their range (f⁻¹ may be infinite at the floor).
        lam, Q = self._eigh(W)
        lam = lam[..., -self.rank :]
        if self.factors[1].includes_low:
            lam = lam.clamp_min(self.low)
        return Q[..., -self.rank :].to(self.dtype), lam.to(self.factors[1].dtype)

    def _project(self, W: Tensor) -> Tensor:
        """The Hermitian part, truncated to its ``r`` largest eigenvalues, clamped to ``>= low``.

        For ``low = 0`` this is the nearest point of the set in the Frobenius norm.
        """
        lam, Q = self._eigh(W)
        lam, Q = lam[..., -self.rank :].clamp_min(self.low), Q[..., -self.rank :]
        return self._combine(Q, lam).to(W.dtype)

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        work = W.to(working_dtype(W.dtype))
        asymmetry = (work - work.mH).abs().amax(dim=(-2, -1))
        lam = torch.linalg.eigvalsh((work + work.mH) / 2)
        if atol is None:
            eps = torch.finfo(W.dtype).eps
            tol = _TOLERANCE_PER_ROW * self.n * eps * lam.abs().amax(-1)
        else:
            tol = torch.full_like(lam[..., 0], atol)
        if bool((asymmetry > tol).any()):
            kind, transpose = ("Hermitian", "Wᴴ") if W.is_complex() else ("symmetric", "Wᵀ")
            return f"it is not {kind}: max |W - {transpose}| is {float(asymmetry.max()):.3g}"
        return self._spectrum_violation(lam, tol)

    def _spectrum_violation(self, lam: Tensor, tol: Tensor) -> str | None:
        """What is wrong with ascending eigenvalues ``lam`` (of a Hermitian matrix), or ``None``."""
        smallest = lam[..., 0]
        if bool((smallest < -tol).any()):
            return f"its smallest eigenvalue is {float(smallest.min()):.3g}, below 0"
        kept = lam[..., -self.rank]
        if self.low > 0 and bool((kept < self.low - tol).any()):
            which = "smallest" if self.rank == self.n else f"{_ordinal(self.rank)} largest"
            return (
                f"its {which} eigenvalue is {float(kept.min()):.3g}, below the floor "
                f"{self.low:.3g} of f"
            )
        if self.rank < self.n:
            beyond = lam[..., -self.rank - 1]
            if bool((beyond > tol).any()):
                return (
                    f"its rank is above {self.rank}: its {_ordinal(self.rank + 1)} largest "
                    f"eigenvalue is {float(beyond.max()):.3g}, not 0"
                )
        return None


class PSDLowRank(_EigenProduct):
    r"""Hermitian positive semidefinite matrices of rank at most ``r``.

    .. math::

        W = Q \operatorname{diag}(|x|)\, Q^\mathsf{H},

    with ``Q`` an ``n x r`` matrix with orthonormal columns (an :class:`Orthogonal` factor with
    its own base) and ``x`` a vector of ``r`` reals, so the eigenvalues of ``W`` are ``|xᵢ|`` and
    ``n - r`` zeros. ``|x|`` is geotorch's choice: it reaches 0, so singular weights are kept
    exactly. Real weights give symmetric matrices, complex ones Hermitian matrices.

    Assigning ``W`` keeps the eigenvectors of its ``r`` largest eigenvalues as the base of ``Q``
    (``torch.linalg.eigh``, in the weight's precision) and the eigenvalues as ``x``. A matrix
    off the set is projected (at registration) onto the truncation of its Hermitian part to its
    ``r`` largest eigenvalues, negative ones set to 0: the nearest point in the Frobenius norm.

    A matrix is on the set when ``max |W - Wᴴ| <= atol``, its smallest eigenvalue is at least
    ``-atol`` and its ``(r+1)``-th largest at most ``atol``; the default ``atol`` is
    ``10 · n · eps`` of the dtype times the largest ``|eigenvalue|``. :meth:`sample` draws a
    Haar-distributed ``Q`` and a standard normal ``x``.

    Args:
        shape: the weight's shape ``(..., n, n)``; leading dimensions are a batch.
        rank: ``r``, with ``1 <= r <= n``.
        triv: the map of the eigenvector factor, ``"matrix_exp"``, ``"cayley"`` or
            ``"householder"`` (real only). Default: ``"householder"`` for a real weight with
            ``r < n`` and ``"cayley"`` otherwise (the fastest measured).
        label: how messages name the tensor.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: a shape that is not ``(..., n, n)``, a rank outside ``[1, n]``, an unknown
            ``triv`` or ``"householder"`` for a complex weight.
        TypeError: a rank that is not an int.

    Example:
        >>> param = PSDLowRank(torch.Size([4, 4]), rank=2)
        >>> W = param.sample()
        >>> torch.linalg.matrix_rank(W).item(), bool(torch.linalg.eigvalsh(W).min() > -1e-5)
        (2, True)
    """

    _noun = "a positive semidefinite matrix of low rank"

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        triv: str | None = None,
        *,
        label: str = "weight",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, rank, _ABSOLUTE, 0.0, triv, label=label, dtype=dtype, device=device)


class PositiveSemidefinite(PSDLowRank):
    r"""Hermitian positive semidefinite matrices: :class:`PSDLowRank` with ``r = n``.

    ``W = Q diag(|x|) Qᴴ`` with ``Q`` orthogonal (unitary); see :class:`PSDLowRank`.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        triv: the map of the eigenvector factor. Default: ``"cayley"``.
        label: how messages name the tensor.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: a shape that is not ``(..., n, n)``, an unknown ``triv``.

    Example:
        >>> param = PositiveSemidefinite(torch.Size([3, 3]))
        >>> param.in_manifold(torch.ones(3, 3)), param.in_manifold(-torch.eye(3))
        (True, False)
    """

    _noun = "a positive semidefinite matrix"

    def __init__(
        self,
        shape: torch.Size,
        triv: str | None = None,
        *,
        label: str = "weight",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        n = _matrix_size(torch.Size(shape), label, self._noun)
        super().__init__(shape, n, triv, label=label, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"n={self.n}, triv={self.triv!r}"


class PSDFixedRank(_EigenProduct):
    r"""Hermitian positive semidefinite matrices of rank exactly ``r``.

    .. math::

        W = Q \operatorname{diag}(f(x))\, Q^\mathsf{H},

    as :class:`PSDLowRank` but with eigenvalues ``f(xᵢ) > 0``, so the rank never drops:
    ``f = softplus + 1e-6`` by default (geotorch's), whose values are at least ``1e-6``.

    Assigning ``W`` keeps the eigenvectors of its ``r`` largest eigenvalues as the base of ``Q``
    and ``x = f⁻¹(λ)`` (so ``f`` needs an inverse: a name or a pair). Off the set, registration
    projects onto the truncation of the Hermitian part to its ``r`` largest eigenvalues, clamped
    to at least the floor of ``f`` (``1e-6`` for ``"softplus"``, 0 otherwise).

    On the set: as :class:`PSDLowRank`, and the ``r``-th largest eigenvalue is at least the floor
    minus the tolerance.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        rank: ``r``, with ``1 <= r <= n``.
        f: ``"softplus"`` or ``"exp"`` (:data:`POSITIVE_FUNCTIONS`), a callable onto the positive
            reals (then no value can be assigned) or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: the map of the eigenvector factor (see :class:`PSDLowRank`).
        label: how messages name the tensor.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: as :class:`PSDLowRank`, and an unknown name of ``f``.
        TypeError: a rank that is not an int.

    Example:
        >>> param = PSDFixedRank(torch.Size([4, 4]), rank=2, dtype=torch.float64)
        >>> W = param.sample()
        >>> bool(torch.linalg.eigvalsh(W)[-2] >= 1e-6), torch.linalg.matrix_rank(W).item()
        (True, 2)
    """

    _noun = "a positive semidefinite matrix of fixed rank"

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        f: FunctionArgument = "softplus",
        triv: str | None = None,
        *,
        label: str = "weight",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        pair = require_inverse(f, POSITIVE_FUNCTIONS, f"{label} of shape {tuple(shape)}")
        floor = _SOFTPLUS_FLOOR if isinstance(f, str) and f == "softplus" else 0.0
        super().__init__(shape, rank, pair, floor, triv, label=label, dtype=dtype, device=device)


class PositiveDefinite(PSDFixedRank):
    r"""Hermitian positive definite matrices: :class:`PSDFixedRank` with ``r = n``.

    ``W = Q diag(f(x)) Qᴴ`` with ``Q`` orthogonal (unitary) and ``f(x) > 0``:
    ``softplus + 1e-6`` by default, so every eigenvalue is at least ``1e-6``. A matrix is on the
    set when it is Hermitian and its smallest eigenvalue is at least that floor, both within the
    tolerance (by default ``10 · n · eps`` times the largest eigenvalue). In single precision the
    floor is usually within the tolerance (unless ``10 · n · eps · λ_max < 1e-6``), so a matrix
    with a zero eigenvalue is accepted; assigning it sets that eigenvalue to the floor.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        f: ``"softplus"``, ``"exp"``, a callable or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: the map of the eigenvector factor. Default: ``"cayley"``.
        label: how messages name the tensor.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: a shape that is not ``(..., n, n)``, an unknown ``triv`` or name of ``f``.

    Example:
        >>> param = PositiveDefinite(torch.Size([3, 3]))
        >>> X = param.right_inverse(torch.diag(torch.tensor([1.0, 2.0, 3.0])))
        >>> torch.allclose(torch.linalg.eigvalsh(param(*X)), torch.tensor([1.0, 2.0, 3.0]))
        True
        >>> singular = torch.diag(torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
        >>> param.in_manifold(singular), param.in_manifold(singular.float())
        (False, True)
    """

    _noun = "a positive definite matrix"

    def __init__(
        self,
        shape: torch.Size,
        f: FunctionArgument = "softplus",
        triv: str | None = None,
        *,
        label: str = "weight",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        n = _matrix_size(torch.Size(shape), label, self._noun)
        super().__init__(shape, n, f, triv, label=label, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"n={self.n}, triv={self.triv!r}"
