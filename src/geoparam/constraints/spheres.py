"""Front doors of spheres and oblique manifolds: weights whose rows or columns have a fixed norm."""

from __future__ import annotations

from torch import nn

from ..manifolds import Oblique, Sphere, SphereEmbedded
from ._front import constrain

__all__ = ["oblique", "sphere"]


def sphere(
    module: nn.Module, name: str = "weight", radius: float = 1.0, *, embedded: bool = False
) -> nn.Module:
    r"""Constrain each vector along the last dimension of ``module.<name>`` to norm ``radius``.

    A 1-D weight is one vector; for a matrix each row is one, and leading dimensions are a
    batch. ``embedded=False`` (geotorch's default) walks great circles from a ``base`` buffer:
    ``W = r·exp_B(v)``, with ``v`` the stored tensor projected onto the tangent space at ``B``
    (see :class:`geoparam.manifolds.Sphere`; :func:`geoparam.update_base` moves the base to the
    current point). ``embedded=True`` normalises: ``W = r·X/‖X‖``
    (:class:`geoparam.manifolds.SphereEmbedded`). The weight is kept when its vectors have norm
    ``radius`` (within ``1000 · eps`` relative) and scaled onto the sphere otherwise. Real and
    complex weights.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        radius: the norm of every vector, a positive number. Default: ``1.0``.
        embedded: use the normalisation map instead of the exponential map. Default: ``False``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, a 0-d tensor, ``radius <= 0``.
        TypeError: ``radius`` is not a real number; ``embedded`` is not a bool.

    Example:
        >>> layer = sphere(nn.Linear(5, 3), radius=2.0)
        >>> torch.allclose(layer.weight.norm(dim=-1), torch.full((3,), 2.0))
        True
    """
    if not isinstance(embedded, bool):
        raise TypeError(f"sphere: embedded must be a bool, got {embedded!r}.")
    manifold = SphereEmbedded if embedded else Sphere
    return constrain(module, name, "sphere", manifold, radius)


def oblique(module: nn.Module, name: str = "weight", radius: float = 1.0) -> nn.Module:
    r"""Constrain every column (dimension ``-2``) of ``module.<name>`` to norm ``radius``.

    The oblique manifold: ``W = r·X/‖X‖`` column by column (see
    :class:`geoparam.manifolds.Oblique`); for an ``nn.Linear`` weight ``(out, in)``, each input
    feature gets a unit-norm (times ``radius``) weight vector. Leading dimensions are a batch;
    real and complex weights. The weight is kept when its columns have norm ``radius`` (within
    ``1000 · eps`` relative) and scaled onto the set otherwise.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        radius: the norm of every column, a positive number. Default: ``1.0``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, fewer than 2 dimensions, ``radius <= 0``.
        TypeError: ``radius`` is not a real number.

    Example:
        >>> layer = oblique(nn.Linear(3, 5))
        >>> torch.allclose(layer.weight.norm(dim=0), torch.ones(3))
        True
    """
    return constrain(module, name, "oblique", Oblique, radius)
