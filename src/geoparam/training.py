"""Helpers that act on a whole model: re-basing, freezing, re-initialising, reuse, NaN hunts."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from ._registration import reinitialize
from .manifolds._reuse import cached, caching, clear_caches, watching

__all__ = [
    "cached",
    "caching",
    "clear_caches",
    "detect_nonfinite",
    "find_nonfinite",
    "freeze",
    "reset_parametrizations",
    "update_base",
    "update_base_every",
]


_OPTIMIZER_STATES = ("keep", "reset")


def _check_optimizer_state(caller: str, optimizer_state: str) -> None:
    if optimizer_state not in _OPTIMIZER_STATES:
        raise ValueError(
            f"{caller}: optimizer_state must be one of "
            f"{', '.join(map(repr, _OPTIMIZER_STATES))}, got {optimizer_state!r}."
        )


@torch.no_grad()
def update_base(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    optimizer_state: str | None = None,
    name: str | None = None,
    recurse: bool = True,
) -> int:
    r"""Re-base every dynamic trivialization in ``module``: ``B ← B · φ(X)``, ``X ← X₀``.

    With dynamic trivialization (Lezcano-Casado, "Trivializations for gradient-based optimization
    on manifolds", NeurIPS 2019) a weight is ``W = B · φ(X)``. The optimizer moves ``X`` in a flat
    space; as ``X`` grows, ``φ`` becomes more expensive (more squarings) and more distorted.
    Re-basing folds the current value into the base and resets ``X`` to the point that ``φ``
    sends to the identity, so the weights are unchanged and the next steps start from a small
    ``X``. Every constraint that declares a base is re-based: orthogonal weights, the orthogonal
    factors of products (low rank, positive definite, ...), spheres, custom group maps. Orthogonal
    bases (also those of products and Grassmannians) and sphere bases are re-projected onto their
    set as they are re-based (an orthogonal base by its polar factor), so repeated re-basing does
    not drift; a custom group's base is the plain product ``B · f(X)`` (geoparam knows no
    projection onto the user's group).

    Call it every few hundred steps or every epoch, or let :func:`update_base_every` do it.

    Args:
        module: a model; constrained tensors without a base are left alone.
        optimizer: the optimizer of the model, needed to reset its state.
        optimizer_state: what happens to the optimizer's per-parameter state (e.g. Adam's
            moments) of every stored tensor that re-basing changes: ``"keep"`` (as geotorch: the
            moments are in ``X``'s coordinates, which change only a little when ``X`` was small)
            or ``"reset"`` (clear it). Default: ``"reset"`` when ``optimizer`` is given,
            ``"keep"`` otherwise.
        name: re-base only tensors of this name (e.g. ``"weight"``). Default: all.
        recurse: also re-base the tensors of ``module``'s submodules. Default: ``True``.

    Returns:
        The number of constrained tensors re-based.

    Raises:
        ValueError: an unknown ``optimizer_state``, or ``"reset"`` without an optimizer.

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
    if optimizer_state is None:
        optimizer_state = "reset" if optimizer is not None else "keep"
    _check_optimizer_state("update_base", optimizer_state)
    if optimizer_state == "reset" and optimizer is None:
        raise ValueError('update_base: optimizer_state="reset" needs the optimizer.')
    count = 0
    for submodule in module.modules() if recurse else (module,):
        if not parametrize.is_parametrized(submodule):
            continue
        for tensor_name, parametrizations in submodule.parametrizations.items():
            first = parametrizations[0]
            # Only a first parametrization reads the stored tensors directly, so only it can be
            # reset.
            if name is not None and tensor_name != name:
                continue
            if not getattr(first, "can_rebase", False):
                continue
            stored = _stored_tensors(parametrizations)
            new = first.rebase_(*stored)
            for tensor, value in zip(stored, (new,) if torch.is_tensor(new) else new, strict=True):
                if value is tensor:
                    continue  # a factor without a base keeps its input (and its moments)
                tensor.copy_(value)
                if optimizer_state == "reset":
                    optimizer.state.pop(tensor, None)
            count += 1
    return count


def _stored_tensors(parametrizations: nn.Module) -> tuple[torch.Tensor, ...]:
    # `original`, or `original0`, `original1`, ... for a constraint stored as several tensors.
    if hasattr(parametrizations, "original"):
        return (parametrizations.original,)
    stored = (*parametrizations._parameters, *parametrizations._buffers)  # a buffer's: buffers
    count = sum(1 for key in stored if key.startswith("original"))
    return tuple(getattr(parametrizations, f"original{i}") for i in range(count))


def update_base_every(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    every: int,
    *,
    optimizer_state: str = "keep",
    name: str | None = None,
) -> RemovableHandle:
    r"""Call :func:`update_base` after every ``every``-th step of ``optimizer``.

    Registers a step post-hook on the optimizer; remove it with the returned handle's
    ``remove()``.

    Args:
        module: the model to re-base.
        optimizer: the optimizer whose steps are counted.
        every: re-base after steps ``every``, ``2·every``, ...
        optimizer_state: ``"keep"`` or ``"reset"``, as in :func:`update_base`. Default:
            ``"keep"``.
        name: re-base only tensors of this name. Default: all.

    Returns:
        The hook's handle.

    Raises:
        ValueError: ``every`` is not a positive integer, or an unknown ``optimizer_state``.

    Example:
        >>> import geoparam
        >>> layer = geoparam.orthogonal(nn.Linear(4, 4))
        >>> optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        >>> handle = geoparam.update_base_every(layer, optimizer, every=2)
        >>> for _ in range(4):
        ...     layer.weight.sum().backward()
        ...     optimizer.step()
        ...     optimizer.zero_grad()
        >>> X = layer.parametrizations.weight.original  # just re-based: the map's identity point
        >>> float(X.detach().tril(-1).abs().max())
        0.0
        >>> handle.remove()
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"update_base_every: every must be a positive int, got {every!r}.")
    _check_optimizer_state("update_base_every", optimizer_state)
    steps = itertools.count(1)

    def rebase_after_step(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if next(steps) % every == 0:
            update_base(module, opt, optimizer_state=optimizer_state, name=name)

    return optimizer.register_step_post_hook(rebase_after_step)


def freeze(model: nn.Module) -> nn.Module:
    r"""Replace every parametrization in ``model`` by its current value, in place.

    Each constrained tensor becomes a plain parameter holding the value the model computes now
    (spectral normalisation without a further power-iteration step), the ``parametrizations``
    containers go away, and the modules get their own classes back. The result costs exactly
    what the unconstrained model costs, and exports, scripts and pickles like it: the form for
    inference and deployment. Parameters keep their ``requires_grad``; training the frozen model
    no longer keeps the constraints. torch's own parametrizations are frozen too; a model with
    none is returned unchanged.

    Args:
        model: the model to freeze (modified in place).

    Returns:
        ``model``.

    Example:
        >>> import geoparam
        >>> layer = geoparam.orthogonal(nn.Linear(4, 4))
        >>> weight = layer.weight.detach().clone()
        >>> frozen = geoparam.freeze(layer)
        >>> type(frozen).__name__, torch.equal(frozen.weight, weight)
        ('Linear', True)
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            parametrizations = module.parametrizations[name]
            parametrizations.eval()  # the current value, without a power-iteration step
            # Not under no_grad: for a tensor stored as several (weight norm's g and v), torch
            # keeps it a parameter only if the value it reads requires grad.
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        _remove_load_hooks(module)
    return model


def _remove_load_hooks(module: nn.Module) -> None:
    # geoparam's hook for legacy checkpoint keys has nothing left to rename.
    hooks = module._load_state_dict_pre_hooks
    for key, hook in list(hooks.items()):
        if getattr(getattr(hook, "hook", None), "__module__", "") == "geoparam._registration":
            del hooks[key]


@torch.no_grad()
def reset_parametrizations(model: nn.Module) -> int:
    r"""Re-initialise every constrained tensor of ``model`` through its constraint.

    Each parametrized module's own ``reset_parameters()`` draws a new value on a plain tensor,
    which is then assigned through the constraints (an orthogonal weight is orthogonalised and
    gets a new base; spectral normalisation draws and warms up new singular vectors). A module
    without ``reset_parameters()`` gets a Haar sample for an orthogonal weight.

    This is what a model built on the meta device needs after ``to_empty()``: its constrained
    tensors and their buffers then hold arbitrary memory. Calling ``reset_parameters()`` on each
    module, as a model's own initialisation usually does, has the same effect on geoparam's
    modules.

    Args:
        model: the model whose parametrized modules to re-initialise (in place).

    Returns:
        The number of parametrized modules re-initialised.

    Raises:
        ValueError: a constrained tensor's module has no ``reset_parameters()`` and its
            constraint cannot draw a sample; assign the tensor yourself instead.

    Example:
        >>> import geoparam
        >>> with torch.device("meta"):
        ...     model = geoparam.orthogonal(nn.Linear(4, 4))
        >>> model = model.to_empty(device="cpu")
        >>> geoparam.reset_parametrizations(model)
        1
        >>> torch.allclose(model.weight.T @ model.weight, torch.eye(4), atol=1e-5)
        True
    """
    count = 0
    for module in model.modules():
        if parametrize.is_parametrized(module):
            reinitialize(module)
            count += 1
    return count


def _constrained(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(qualified name of the tensor, its module, its name)`` for each constrained tensor."""
    for path, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                yield (f"{path}.{name}" if path else name), module, name


@contextlib.contextmanager
def detect_nonfinite(model: nn.Module) -> Iterator[None]:
    r"""Inside the block, stop at the first constrained tensor of ``model`` that is not finite.

    Every evaluation of a constraint checks its unconstrained tensors, its buffers and its
    value, and raises :class:`FloatingPointError` naming the tensor (``"rnn.cell.weight: its
    unconstrained tensor 0 has 3 non-finite entries"``). Run a training step that produced a
    NaN loss again inside the block to learn where the NaN entered: a NaN gradient step shows
    as a non-finite unconstrained tensor at the next read; a finite input with a non-finite
    value points at the map. The checks read the data (a synchronisation on a GPU), so the mode
    is for debugging; torch's own ``torch.autograd.detect_anomaly()`` covers the backward pass.

    Args:
        model: the model whose constrained tensors to watch (for their names).

    Example:
        >>> import geoparam
        >>> model = nn.Sequential(geoparam.orthogonal(nn.Linear(3, 3)))
        >>> with torch.no_grad():
        ...     model[0].parametrizations.weight.original[0, 0] = float("nan")
        >>> with geoparam.detect_nonfinite(model):
        ...     try:
        ...         model(torch.ones(1, 3))
        ...     except FloatingPointError as error:
        ...         print(error)
        0.weight: its unconstrained tensor 0 has 1 non-finite entries (NaN or Inf) out of 9.
    """
    names = {}
    for qualified, module, name in _constrained(model):
        for parametrization in module.parametrizations[name]:
            names[parametrization] = qualified
    with watching(names):
        yield


@torch.no_grad()
def find_nonfinite(model: nn.Module) -> dict[str, int]:
    r"""Count the NaN and infinite entries of every constrained tensor of ``model``.

    Looks at each constrained tensor's unconstrained tensors and buffers (keys as in
    ``state_dict``) and at its value (``"<module>.<name>"``), and returns those with non-finite
    entries: a quick look after a NaN loss, without running the model again. (Spectral
    normalisation's value is read without a power-iteration step.)

    Args:
        model: the model to inspect.

    Returns:
        Qualified name to the number of non-finite entries; empty if everything is finite.

    Example:
        >>> import geoparam
        >>> model = nn.Sequential(geoparam.weight_norm(nn.Linear(3, 2)))
        >>> geoparam.find_nonfinite(model)
        {}
        >>> with torch.no_grad():
        ...     _ = model[0].parametrizations.weight.original1.fill_(float("inf"))
        >>> geoparam.find_nonfinite(model)
        {'0.parametrizations.weight.original1': 6, '0.weight': 6}
    """
    found: dict[str, int] = {}

    def count(name: str, tensor: torch.Tensor) -> None:
        if tensor.device.type != "meta":
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                found[name] = bad

    for qualified, module, name in _constrained(model):
        prefix = qualified[: -len(name)] + "parametrizations." + name
        parametrizations = module.parametrizations[name]
        for key, tensor in parametrizations.state_dict(keep_vars=True).items():
            count(f"{prefix}.{key}", tensor)
        training = parametrizations.training
        parametrizations.eval()
        try:
            count(qualified, getattr(module, name))
        finally:
            parametrizations.train(training)
    return found
