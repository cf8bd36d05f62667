"""Helpers that act on a whole model: re-basing, reuse of constrained weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .manifolds import Orthogonal
from .manifolds._reuse import cached, caching, clear_caches

__all__ = ["cached", "caching", "clear_caches", "update_base"]


@torch.no_grad()
def update_base(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    r"""Re-base every orthogonal weight in ``module``: ``B ← B · φ(X)``, ``X ← X₀``.

    With dynamic trivialization (Lezcano-Casado, "Trivializations for gradient-based optimization
    on manifolds", NeurIPS 2019) a weight is ``Q = B · φ(X)``. The optimizer moves ``X`` in a flat
    space; as ``X`` grows, ``φ`` becomes more expensive (more squarings) and more distorted.
    Re-basing folds the current rotation into the base and resets ``X`` to the point that ``φ``
    sends to ``I``, so the weights are unchanged and the next steps start from a small ``X``.
    The base is also re-projected onto the orthogonal group to remove rounding drift.

    Call it every few hundred steps (or every epoch). Optimizer moments are kept by default, as in
    geotorch: they are in ``X``'s coordinates, which change only a little when ``X`` was small.
    Pass ``optimizer`` to clear the state of the re-based tensors instead.

    Args:
        module: a model holding weights registered with :func:`geoparam.orthogonal` and
            ``use_trivialization=True`` (others are left alone).
        optimizer: if given, its per-parameter state (e.g. Adam's moments) for every re-based
            tensor is cleared.

    Returns:
        The number of weights re-based.

    Example:
        >>> import geoparam
        >>> layer = geoparam.orthogonal(nn.Linear(6, 6))
        >>> with torch.no_grad():
        ...     _ = layer.parametrizations.weight.original.normal_()
        >>> before = layer.weight.detach().clone()
        >>> update_base(layer)
        1
        >>> torch.allclose(layer.weight, before, atol=1e-5)
        True
    """
    count = 0
    for submodule in module.modules():
        if not parametrize.is_parametrized(submodule):
            continue
        for parametrizations in submodule.parametrizations.values():
            first = parametrizations[0]
            # Only a first parametrization reads `original` directly, so only it can be reset.
            if not isinstance(first, Orthogonal) or not first.use_trivialization:
                continue
            original = parametrizations.original
            original.copy_(first.rebase_(original))
            if optimizer is not None:
                optimizer.state.pop(original, None)
            count += 1
    return count
