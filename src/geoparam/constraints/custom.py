"""Front door of a constraint given by its map: the user's ``f``, with geoparam's checks."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..manifolds import CustomConstraint
from ._front import constrain

__all__ = ["custom_constraint"]


def custom_constraint(
    module: nn.Module,
    name: str,
    f: Callable[[Tensor], Tensor],
    inverse: Callable[[Tensor], Tensor] | None = None,
    *,
    in_manifold: Callable[[Tensor], object] | None = None,
    group: bool = False,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to the image of a map ``f`` that you give: ``W = f(X)``.

    geoparam registers it, validates assignments with your ``in_manifold`` predicate, and with
    ``group=True`` keeps a base (dynamic trivialization): ``W = B · f(X)`` where ``f`` maps onto
    a matrix group with ``f(0) = I`` (e.g. :func:`torch.linalg.matrix_exp` onto ``GL⁺(n)``);
    assigning ``W`` sets ``B = W``, ``X = 0``, and ``geoparam.update_base`` folds ``B ← B ·
    f(X)``, ``X ← 0``. Otherwise ``X = inverse(W)`` when ``inverse`` is given; without it,
    registration stores the current weight as ``X``, so the weight starts at ``f(W)``, and
    assignments raise ``NotImplementedError``. See :class:`geoparam.manifolds.CustomConstraint`.

    Args:
        module: the module holding the tensor.
        name: the tensor's name.
        f: maps a tensor of the weight's shape and dtype onto the set (same shape and dtype).
        inverse: a right inverse of ``f`` (``f(inverse(W)) = W``), or ``None``.
        in_manifold: ``in_manifold(W) -> bool``: assignments it rejects raise ``ValueError``,
            and a weight it rejects at registration is replaced by ``f(W)``. ``None``: every
            value is accepted.
        group: ``f`` maps onto a matrix group through ``f(0) = I``; square matrices only.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        TypeError: ``f`` is not callable; ``inverse`` or ``in_manifold`` is neither callable nor
            ``None``; ``group`` is not a bool; ``f`` does not return a tensor.
        ValueError: no tensor called ``name``, or one with NaN or Inf; ``group=True`` on a
            tensor that is not square, with ``f(0) ≠ I`` or with an ``inverse``; ``f`` changes
            the shape or dtype.

    Example:
        >>> layer = custom_constraint(
        ...     nn.Linear(4, 4), "weight", torch.linalg.matrix_exp, group=True,
        ...     in_manifold=lambda W: bool((torch.linalg.det(W) > 0).all()),
        ... )
        >>> bool(torch.linalg.det(layer.weight) > 0)
        True
    """
    return constrain(
        module,
        name,
        "custom_constraint",
        CustomConstraint,
        f,
        inverse,
        in_manifold=in_manifold,
        group=group,
    )
