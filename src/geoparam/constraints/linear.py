"""Front doors of linear subspaces: skew-symmetric, symmetric and Hermitian weights."""

from __future__ import annotations

from torch import nn

from ..manifolds import Skew, Symmetric
from ._front import constrain

__all__ = ["hermitian", "skew", "symmetric"]


def skew(module: nn.Module, name: str = "weight", *, lower: bool = True) -> nn.Module:
    r"""Constrain ``module.<name>`` to be skew-symmetric (``W = -Wᵀ``; skew-Hermitian if complex).

    ``W = L - Lᴴ`` with ``L`` the strict lower (or upper) triangle of the stored tensor, plus, for
    complex weights, the imaginary part of its diagonal (see :class:`geoparam.manifolds.Skew`).
    The same map as geotorch's ``skew``. The weight is kept when it is skew (within
    ``1000 · eps`` of its largest entry) and replaced by its skew part ``(W - Wᴴ)/2`` otherwise.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        lower: read the strict lower triangle (else the upper one). Default: ``True``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, fewer than 2 dimensions, non-square matrices.
        TypeError: ``lower`` is not a bool.

    Example:
        >>> layer = skew(nn.Linear(4, 4))
        >>> torch.equal(layer.weight, -layer.weight.T)
        True
    """
    return constrain(module, name, "skew", Skew, lower=lower)


def symmetric(module: nn.Module, name: str = "weight", *, lower: bool = True) -> nn.Module:
    r"""Constrain ``module.<name>`` to be symmetric: ``W = Wᵀ`` (complex symmetric if complex).

    ``W`` is the lower (or upper) triangle of the stored tensor, mirrored (see
    :class:`geoparam.manifolds.Symmetric`): the same map as geotorch's ``symmetric``. For complex
    Hermitian weights use :func:`hermitian`. The weight is kept when it is symmetric (within
    ``1000 · eps`` of its largest entry) and replaced by ``(W + Wᵀ)/2`` otherwise.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        lower: read the lower triangle (else the upper one). Default: ``True``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, fewer than 2 dimensions, non-square matrices.
        TypeError: ``lower`` is not a bool.

    Example:
        >>> layer = symmetric(nn.Linear(4, 4))
        >>> torch.equal(layer.weight, layer.weight.T)
        True
    """
    return constrain(module, name, "symmetric", Symmetric, lower=lower)


def hermitian(module: nn.Module, name: str = "weight", *, lower: bool = True) -> nn.Module:
    r"""Constrain ``module.<name>`` to be Hermitian: ``W = Wᴴ`` (symmetric if real).

    ``W = L + Lᴴ + diag(Re X)`` with ``L`` the strict lower (or upper) triangle of the stored
    tensor ``X`` (see :class:`geoparam.manifolds.Symmetric` with ``hermitian=True``); for a real
    weight this is :func:`symmetric`. The weight is kept when it is Hermitian (within
    ``1000 · eps`` of its largest entry) and replaced by ``(W + Wᴴ)/2`` otherwise.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        lower: read the lower triangle (else the upper one). Default: ``True``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, fewer than 2 dimensions, non-square matrices.
        TypeError: ``lower`` is not a bool.

    Example:
        >>> layer = hermitian(nn.Linear(3, 3, dtype=torch.complex64))
        >>> torch.equal(layer.weight, layer.weight.mH)
        True
    """
    return constrain(module, name, "hermitian", Symmetric, lower=lower, hermitian=True)
