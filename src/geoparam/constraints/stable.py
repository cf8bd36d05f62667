"""Front door of stable matrices: every eigenvalue's real part at most ``-alpha``."""

from __future__ import annotations

from torch import nn

from ..manifolds import AlphaStable
from ._front import constrain

__all__ = ["alpha_stable"]


def alpha_stable(module: nn.Module, name: str = "weight", alpha: float = 1e-3) -> nn.Module:
    r"""Constrain ``module.<name>`` to have every eigenvalue's real part at most ``-alpha``.

    ``W = (J - R) Q - αI`` with ``J`` skew-Hermitian and ``R``, ``Q`` positive semidefinite,
    from triangular factors (three matrix products); see :class:`geoparam.manifolds.AlphaStable`
    for why it is stable and for the right inverse (a Lyapunov solve). The dynamics
    ``ẋ = W x`` then decay at rate ``alpha`` at least. The weight is kept if it is on the set;
    otherwise it is shifted left (``W - tI``) just enough. Real or complex weights; leading
    dimensions are a batch. geotorch's ``alpha_stable``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        alpha: the decay rate, ``alpha >= 0``. Default: ``1e-3`` (geotorch's).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor that is not ``(..., n, n)``; ``alpha``
            negative or not finite.
        TypeError: ``alpha`` is not a real number.

    Example:
        >>> layer = alpha_stable(nn.Linear(5, 5), alpha=0.5)
        >>> bool(torch.linalg.eigvals(layer.weight).real.max() <= -0.5)
        True
    """
    return constrain(module, name, "alpha_stable", AlphaStable, alpha)
