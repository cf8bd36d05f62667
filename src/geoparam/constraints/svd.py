r"""Front doors of the constraints on singular values: ``W = U diag(s) Vᴴ`` with a map onto ``s``.

Low rank, fixed rank, almost orthogonal, spectrally bounded, invertible (``GL⁺``) and special
linear (``SL``) weights; see :mod:`geoparam.manifolds.svd` for the maps.
"""

from __future__ import annotations

from torch import nn

from ..manifolds import (
    AlmostOrthogonal,
    FixedRank,
    Invertible,
    LowRank,
    OrthogonalMap,
    SpecialLinear,
    SpectralBound,
)
from ..manifolds.spectrum import FunctionArgument
from ._front import constrain

__all__ = [
    "almost_orthogonal",
    "fixed_rank",
    "invertible",
    "low_rank",
    "sln",
    "spectral_bound",
]

MapArgument = OrthogonalMap | str | None


def low_rank(module: nn.Module, name: str, rank: int, *, triv: MapArgument = None) -> nn.Module:
    r"""Constrain ``module.<name>`` to matrices of rank at most ``rank``.

    ``W = U diag(s) Vᴴ`` with ``U`` (``n x r``) and ``V`` (``k x r``) orthonormal frames and
    ``s ∈ ℝʳ`` free. A weight of shape ``(..., n, k)`` is a batch of matrices; real and complex
    weights. A weight of rank ``≤ r`` is kept; another one is replaced by its truncated SVD (the
    nearest matrix of rank ``≤ r``), never resampled. geotorch: ``low_rank``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name.
        rank: ``r``, an ``int`` with ``1 <= r <= min(n, k)``.
        triv: the frames' orthogonal map, ``"matrix_exp"``, ``"cayley"`` or ``"householder"``
            (real only), or ``None`` for the fastest per frame (``"householder"`` for a real
            frame with ``r`` below its number of rows, ``"cayley"`` otherwise).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor ``name``; fewer than two dimensions; a rank out of range; an unknown
            map.
        TypeError: a rank that is not an ``int``.

    Example:
        >>> layer = low_rank(nn.Linear(8, 6), "weight", 2)
        >>> int(torch.linalg.matrix_rank(layer.weight))
        2
    """
    return constrain(module, name, "low_rank", LowRank, rank, triv)


def fixed_rank(
    module: nn.Module,
    name: str,
    rank: int,
    *,
    f: FunctionArgument = "softplus",
    triv: MapArgument = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to matrices of rank exactly ``rank``.

    ``W = U diag(f(x)) Vᴴ`` with ``f > 0`` (``"softplus"``: ``softplus(x) + 10⁻⁶``; ``"exp"``; or a
    pair ``(f, f_inverse)``). Real and complex weights. A weight of rank ``r`` is kept, another one
    projected (truncated SVD, with vanishing singular values raised to a small multiple of
    ``eps · σ₁``). geotorch: ``fixed_rank``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name.
        rank: ``r``, an ``int`` with ``1 <= r <= min(n, k)``.
        f: the map onto the singular values. Default: ``"softplus"``.
        triv: the frames' map, as for :func:`low_rank`.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: as :func:`low_rank`; an unknown ``f``, or a callable without an inverse (the
            weight could not be kept).
        TypeError: a rank that is not an ``int``.

    Example:
        >>> layer = fixed_rank(nn.Linear(8, 6), "weight", 3)
        >>> int(torch.linalg.matrix_rank(layer.weight))
        3
    """
    return constrain(module, name, "fixed_rank", FixedRank, rank, f, triv)


def almost_orthogonal(
    module: nn.Module,
    name: str = "weight",
    lam: float = 0.1,
    *,
    f: FunctionArgument = "sin",
    triv: MapArgument = None,
) -> nn.Module:
    r"""Constrain the singular values of ``module.<name>`` to ``[1 - lam, 1 + lam]``.

    ``W = U diag(1 + lam · f(x)) Vᴴ`` with ``f`` onto ``[-1, 1]`` (``"sin"``, ``"tanh"``,
    ``"scaled_sigmoid"`` or a pair ``(f, f_inverse)``). Tall, square and wide weights, real and
    complex. A weight inside the band is kept; another one has its singular values clamped into it.
    geotorch: ``almost_orthogonal`` (which fails on wide weights).

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        lam: the band's half-width, in ``[0, 1]``. Default: ``0.1``.
        f: the map onto ``[-1, 1]``. Default: ``"sin"``.
        triv: the frames' map, as for :func:`low_rank`.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor ``name``; fewer than two dimensions; ``lam`` outside ``[0, 1]``; an
            unknown ``f`` or one without an inverse; an unknown map.

    Example:
        >>> layer = almost_orthogonal(nn.Linear(8, 4), lam=0.5)
        >>> s = torch.linalg.svdvals(layer.weight)
        >>> bool((s >= 0.5 - 1e-5).all() and (s <= 1.5 + 1e-5).all())
        True
    """
    return constrain(module, name, "almost_orthogonal", AlmostOrthogonal, lam, f, triv)


def spectral_bound(
    module: nn.Module, name: str = "weight", c: float = 1.0, *, triv: MapArgument = None
) -> nn.Module:
    r"""Constrain the spectral norm of ``module.<name>`` to at most ``c``, exactly.

    ``W = U diag(c · sigmoid(x)) Vᴴ``: every singular value in ``[0, c]`` for every input, unlike
    :func:`geoparam.spectral_norm`, which divides by a power-iteration estimate. Real and complex
    weights. A weight with ``σ₁ ≤ c`` is kept (singular values at ``0`` or ``c`` are moved inside
    by ``10⁻⁶ c`` in single precision, where the logit is finite); another one has its singular
    values clamped to ``c``. geotorch has no counterpart.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        c: the bound, ``> 0``. Default: ``1.0``.
        triv: the frames' map, as for :func:`low_rank`.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor ``name``; fewer than two dimensions; ``c <= 0``; an unknown map.

    Example:
        >>> layer = spectral_bound(nn.Linear(6, 6), c=0.5)
        >>> bool(torch.linalg.matrix_norm(layer.weight, 2) <= 0.5 + 1e-6)
        True
    """
    return constrain(module, name, "spectral_bound", SpectralBound, c, triv)


def invertible(
    module: nn.Module,
    name: str = "weight",
    *,
    f: FunctionArgument = "softplus",
    triv: MapArgument = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to square matrices of positive determinant (``GL⁺(n)``).

    ``W = U diag(f(x)) Vᵀ`` with ``f > 0`` and rotations ``U``, ``V`` (``SO(n)``): ``det W > 0``
    for every input. A weight of positive determinant is kept; one of negative determinant has
    its smallest singular direction flipped. Real weights. geotorch: ``invertible``, whose
    frames are in ``O(n)``, so that about half of its registrations have ``det W < 0``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        f: the map onto the singular values, as for :func:`fixed_rank`. Default: ``"softplus"``.
        triv: ``"matrix_exp"``, ``"cayley"`` or ``None`` (``"cayley"``).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor ``name``; not square; complex; an unknown ``f`` or one without an
            inverse; an unknown map or ``"householder"``.

    Example:
        >>> layer = invertible(nn.Linear(5, 5))
        >>> bool(torch.linalg.det(layer.weight) > 0)
        True
    """
    return constrain(module, name, "invertible", Invertible, f, triv)


def sln(
    module: nn.Module,
    name: str = "weight",
    *,
    f: FunctionArgument = "softplus",
    triv: MapArgument = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to square matrices of determinant one (``SL(n)``).

    ``W = U diag(s) Vᵀ`` with ``s = f(x) / (∏ f(x))^(1/n)`` and rotations ``U``, ``V``:
    ``det W = 1`` for every input (with any ``f``, unlike geotorch, where only the default keeps
    it). A weight of determinant 1 is kept; another one is projected onto ``GL⁺`` (as by
    :func:`invertible`) and divided by ``det^(1/n)``. Real weights. geotorch: ``sln``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        f: the positive map, as for :func:`fixed_rank`. Default: ``"softplus"``.
        triv: ``"matrix_exp"``, ``"cayley"`` or ``None`` (``"cayley"``).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: as for :func:`invertible`.

    Example:
        >>> layer = sln(nn.Linear(5, 5))
        >>> round(float(torch.linalg.det(layer.weight.detach())), 4)
        1.0
    """
    return constrain(module, name, "sln", SpecialLinear, f, triv)
