"""Front doors of entrywise constraints: positive, bounded, stochastic, doubly stochastic."""

from __future__ import annotations

from torch import nn

from ..manifolds import Bounded, DoublyStochastic, Positive, Simplex
from ..manifolds.spectrum import FunctionArgument
from ._front import constrain

__all__ = ["bounded", "doubly_stochastic", "positive", "simplex"]


def positive(
    module: nn.Module,
    name: str = "weight",
    *,
    f: FunctionArgument = "softplus",
) -> nn.Module:
    r"""Constrain every entry of ``module.<name>`` to be positive: ``W = f(X)`` entry by entry.

    ``f`` is ``"softplus"`` (``softplus + 1e-6``), ``"exp"`` or a pair ``(f, f_inverse)``; a
    lone callable is refused at registration (without its inverse the weight cannot be kept).
    The weight is kept when its entries are positive; otherwise entries below
    ``10⁻³ · max |W|`` are raised to that floor. See :class:`geoparam.manifolds.Positive`.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        f: the map onto the positive reals. Default: ``"softplus"``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, an unknown name ``f``, a lone callable ``f``.
        UnsupportedDtypeError: a complex or integer tensor.

    Example:
        >>> layer = positive(nn.Linear(4, 3), f="exp")
        >>> bool((layer.weight > 0).all())
        True
    """
    return constrain(module, name, "positive", Positive, f)


def bounded(
    module: nn.Module, name: str = "weight", low: float = 0.0, high: float = 1.0
) -> nn.Module:
    r"""Constrain every entry of ``module.<name>`` to ``[low, high]``.

    ``W = low + (high - low) · sigmoid(X)`` (see :class:`geoparam.manifolds.Bounded`). The
    weight is kept when its entries are in the interval; otherwise they are clamped to
    ``10⁻³ · (high - low)`` inside it.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        low: the lower bound, finite and below ``high``. Default: ``0.0``.
        high: the upper bound, finite. Default: ``1.0``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, ``low >= high``, an infinite bound.
        TypeError: a bound that is not a real number.
        UnsupportedDtypeError: a complex or integer tensor.

    Example:
        >>> layer = bounded(nn.Linear(4, 3), low=-0.1, high=0.1)
        >>> bool((layer.weight.abs() <= 0.1).all())
        True
    """
    return constrain(module, name, "bounded", Bounded, low, high)


def simplex(module: nn.Module, name: str = "weight", *, dim: int = -1) -> nn.Module:
    r"""Constrain the slices of ``module.<name>`` along ``dim`` to the probability simplex.

    Entries are non-negative and sum to 1 along ``dim`` (each row of a matrix by default):
    ``W = softmax(X, dim)`` (see :class:`geoparam.manifolds.Simplex`). The weight is kept when it
    is stochastic (within ``1000 · eps``); otherwise it is projected onto the simplex (Duchi et
    al. 2008) with every entry kept at least ``10⁻³ / n``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        dim: the dimension that sums to 1. Default: ``-1``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, ``dim`` out of range.
        TypeError: ``dim`` is not an int.
        UnsupportedDtypeError: a complex or integer tensor.

    Example:
        >>> layer = simplex(nn.Linear(4, 3))
        >>> torch.allclose(layer.weight.sum(dim=-1), torch.ones(3))
        True
    """
    return constrain(module, name, "simplex", Simplex, dim)


def doubly_stochastic(
    module: nn.Module, name: str = "weight", *, n_iterations: int = 50
) -> nn.Module:
    r"""Constrain ``module.<name>`` to doubly stochastic matrices: rows and columns sum to 1.

    ``W`` is the Sinkhorn normalisation of ``exp(X)`` with a fixed number of iterations, ending
    with the rows (see :class:`geoparam.manifolds.DoublyStochastic`): rows sum to 1 to rounding,
    columns as far as the iteration has converged (within ``1000 · eps`` unless the matrix
    approaches a permutation; raise ``n_iterations`` then). The weight is kept when it is
    doubly stochastic; otherwise its entries are clamped below at a tenth of the largest and
    normalised by Sinkhorn to convergence.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        n_iterations: the number of column-and-row normalisations. Default: ``50``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, fewer than 2 dimensions, non-square matrices,
            ``n_iterations < 1``.
        TypeError: ``n_iterations`` is not an int.
        UnsupportedDtypeError: a complex or integer tensor.

    Example:
        >>> layer = doubly_stochastic(nn.Linear(4, 4))
        >>> torch.allclose(layer.weight.sum(dim=0), torch.ones(4))
        True
    """
    return constrain(module, name, "doubly_stochastic", DoublyStochastic, n_iterations)
