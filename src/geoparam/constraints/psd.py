"""Front doors of the positive (semi)definite family: ``W = Q diag(λ) Qᴴ``."""

from __future__ import annotations

from torch import nn

from ..manifolds import PositiveDefinite, PositiveSemidefinite, PSDFixedRank, PSDLowRank
from ..manifolds.spectrum import FunctionArgument
from ._front import constrain

__all__ = [
    "positive_definite",
    "positive_semidefinite",
    "positive_semidefinite_fixed_rank",
    "positive_semidefinite_low_rank",
]


def positive_definite(
    module: nn.Module,
    name: str = "weight",
    *,
    f: FunctionArgument = "softplus",
    triv: str | None = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be symmetric (Hermitian) positive definite.

    ``W = Q diag(f(x)) Qᴴ`` with ``Q`` orthogonal (unitary, for a complex weight) and
    ``f(x) > 0``; see :class:`geoparam.manifolds.PositiveDefinite`. Leading dimensions are a
    batch. The weight is kept if it is already positive definite; otherwise it is projected
    (its Hermitian part, eigenvalues clamped to the floor of ``f``). geotorch's
    ``positive_definite``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        f: ``"softplus"`` (``softplus + 1e-6``, so eigenvalues are at least ``1e-6``), ``"exp"``,
            or a pair ``(f, f_inverse)`` onto the positive reals (a lone callable is refused:
            without its inverse the weight cannot be kept). Default: ``"softplus"``.
        triv: the map of the eigenvectors, ``"matrix_exp"``, ``"cayley"`` or ``"householder"``
            (real only). Default: ``"cayley"``, the fastest measured.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor that is not ``(..., n, n)``; an unknown
            ``f`` or ``triv``.

    Example:
        >>> layer = positive_definite(nn.Linear(4, 4))
        >>> bool(torch.linalg.eigvalsh(layer.weight).min() > 0)
        True
    """
    return constrain(module, name, "positive_definite", PositiveDefinite, f=f, triv=triv)


def positive_semidefinite(
    module: nn.Module, name: str = "weight", *, triv: str | None = None
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be symmetric (Hermitian) positive semidefinite.

    ``W = Q diag(|x|) Qᴴ`` with ``Q`` orthogonal (unitary); see
    :class:`geoparam.manifolds.PositiveSemidefinite`. The weight is kept if it is already
    positive semidefinite (singular ones included); otherwise it is projected onto the nearest
    such matrix (its Hermitian part, negative eigenvalues set to 0). geotorch's
    ``positive_semidefinite``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        triv: the map of the eigenvectors. Default: ``"cayley"``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor that is not ``(..., n, n)``; an unknown
            ``triv``.

    Example:
        >>> layer = positive_semidefinite(nn.Linear(4, 4))
        >>> bool(torch.linalg.eigvalsh(layer.weight).min() > -1e-6)
        True
    """
    return constrain(module, name, "positive_semidefinite", PositiveSemidefinite, triv=triv)


def positive_semidefinite_low_rank(
    module: nn.Module, name: str, rank: int, *, triv: str | None = None
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be positive semidefinite of rank at most ``rank``.

    ``W = Q diag(|x|) Qᴴ`` with ``Q`` an ``n x rank`` matrix with orthonormal columns; see
    :class:`geoparam.manifolds.PSDLowRank`. A weight off the set is projected onto its best
    such approximation (Hermitian part, ``rank`` largest eigenvalues, negative ones set to 0).
    geotorch's ``positive_semidefinite_low_rank``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name.
        rank: the largest rank, ``1 <= rank <= n``.
        triv: the map of the eigenvectors. Default: ``"householder"`` for a real weight with
            ``rank < n``, ``"cayley"`` otherwise.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor that is not ``(..., n, n)``; a rank
            outside ``[1, n]``; an unknown ``triv``.
        TypeError: a rank that is not an int.

    Example:
        >>> layer = positive_semidefinite_low_rank(nn.Linear(6, 6), "weight", rank=2)
        >>> torch.linalg.matrix_rank(layer.weight).item()
        2
    """
    return constrain(module, name, "positive_semidefinite_low_rank", PSDLowRank, rank, triv=triv)


def positive_semidefinite_fixed_rank(
    module: nn.Module,
    name: str,
    rank: int,
    *,
    f: FunctionArgument = "softplus",
    triv: str | None = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be positive semidefinite of rank exactly ``rank``.

    ``W = Q diag(f(x)) Qᴴ`` with ``Q`` an ``n x rank`` matrix with orthonormal columns and
    ``f(x) > 0``; see :class:`geoparam.manifolds.PSDFixedRank`. A weight off the set is projected
    (Hermitian part, ``rank`` largest eigenvalues clamped to the floor of ``f``). geotorch's
    ``positive_semidefinite_fixed_rank``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name.
        rank: the rank, ``1 <= rank <= n``.
        f: ``"softplus"`` (``softplus + 1e-6``), ``"exp"`` or a pair ``(f, f_inverse)`` (a lone
            callable is refused). Default: ``"softplus"``.
        triv: the map of the eigenvectors. Default: ``"householder"`` for a real weight with
            ``rank < n``, ``"cayley"`` otherwise.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor that is not ``(..., n, n)``; a rank
            outside ``[1, n]``; an unknown ``f`` or ``triv``.
        TypeError: a rank that is not an int.

    Example:
        >>> layer = positive_semidefinite_fixed_rank(nn.Linear(6, 6), "weight", rank=3)
        >>> torch.linalg.matrix_rank(layer.weight).item()
        3
    """
    return constrain(
        module, name, "positive_semidefinite_fixed_rank", PSDFixedRank, rank, f=f, triv=triv
    )
