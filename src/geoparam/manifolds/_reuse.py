"""Reading a constrained weight many times for the price of one evaluation.

A parametrized weight is recomputed each time ``module.weight`` is read: a recurrent cell that
reads its weight at every step of a sequence pays the map (an exponential, a QR, ...) once per
step. torch's ``parametrize.cached()`` helps only inside an explicit scope, and drops gradients
when the first read inside it happens under ``no_grad``.

Here each parametrization keeps its last result together with a fingerprint of everything it was
computed from: the identity, version counter and storage address of every input tensor and
buffer, and whether it was computed with a graph. Every in-place change of a tensor (an optimizer
step, ``load_state_dict``, an assignment through ``right_inverse``, ``.to()``) changes its
fingerprint, so a read after it recomputes, while every read in between returns the same tensor.

With a graph, the first read is an ordinary evaluation, so a weight read once per step costs
exactly what it costs without reuse. A second read of the same value gets (and every later read
shares) a result produced by :class:`_Reusable`: a single autograd node whose backward can run any
number of times, since it keeps the graph of the map for itself instead of letting the first
backward pass free it. So a cell that reads its weight at every step of a sequence evaluates the
map twice, not once per step, and several forwards then one backward, gradient accumulation over
micro-batches, two losses backpropagated separately and ``retain_graph`` all give exactly the
gradients of evaluating the map at each read. A second derivative re-evaluates the map on the
real inputs.

Automatically, only reads of a module's own parameters are reused (see :func:`_registered`),
and not at all in a process that uses FSDP2; inside an explicit :func:`cached` block every read
is. What the fingerprint cannot see: writes that bypass the version counter, i.e. in-place
changes through ``parameter.data``. Code that updates weights that way must call
:func:`clear_caches` (or run under ``geoparam.caching(False)``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["cached", "cached_evaluation", "caching", "clear_caches", "evaluate", "watching"]


class _State(threading.local):
    # Class-level defaults: every thread sees all three attributes from the start, so compiled
    # code guards on their values, not on whether a thread happened to set them already.
    enabled: bool = True
    scope: object | None = None
    watched: dict | None = None


_state = _State()
# What an entry holds: a value computed without a graph; the first result with a graph (its own,
# ordinary graph, which the first backward pass through it frees); a _Reusable result.
_VALUE, _PLAIN, _REUSABLE = "value", "plain", "reusable"
# Parametrization -> its last result. Kept outside the modules, so that copying or pickling a model
# never meets a cached tensor, and an entry goes away with its module.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _enabled() -> bool:
    return _state.enabled


def _scope() -> object | None:
    return _state.scope


@contextlib.contextmanager
def caching(enabled: bool) -> Iterator[None]:
    """Turn the reuse of constrained weights on or off inside the block (it is on by default).

    Off, every read of a constrained weight evaluates its map, as in torch. Needed only around
    code that writes weights through ``.data`` (which the version counters do not see) and
    reads them in between, or to measure the map itself.

    Example:
        >>> import geoparam
        >>> layer = geoparam.orthogonal(nn.Linear(4, 4))
        >>> with torch.no_grad():
        ...     print(layer.weight is layer.weight)
        ...     with geoparam.caching(False):
        ...         print(layer.weight is layer.weight)
        True
        False
    """
    previous = _enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


class _Scope:
    """A :func:`cached` block: the parametrizations that cached in it, to release at exit."""

    def __init__(self) -> None:
        self.owners: list[weakref.ref[nn.Module]] = []


@contextlib.contextmanager
def cached() -> Iterator[None]:
    """Evaluate every constrained weight once per value inside the block; release them at exit.

    Outside such a block geoparam already reuses a weight while nothing it depends on changes.
    Inside it, also parametrizations whose evaluation has a side effect are evaluated once:
    ``spectral_norm`` refines its singular vectors at every training-mode read (as torch does),
    and in the block it does so at the first read only. On exit the weights cached in the block
    are released. Unlike torch's ``parametrize.cached()``, a first read under ``torch.no_grad()``
    does not take the gradient away from later reads in the block.

    Example:
        >>> import geoparam
        >>> critic = geoparam.spectral_norm(nn.Linear(4, 4))
        >>> with geoparam.cached():
        ...     first, second = critic.weight, critic.weight
        >>> first is second
        True
    """
    outer = _scope()
    current = _Scope() if outer is None else outer
    _state.scope = current
    try:
        yield
    finally:
        _state.scope = outer
        if outer is None:
            for reference in current.owners:
                owner = reference()
                if owner is not None:
                    _CACHE.pop(owner, None)


def clear_caches(module: nn.Module) -> None:
    """Forget the cached constrained weights of ``module`` (the next reads recompute them).

    Needed only after writing into the weights' tensors through ``.data``, which bypasses the
    version counters that tell geoparam a tensor has changed.

    Example:
        >>> import geoparam
        >>> layer = geoparam.orthogonal(nn.Linear(4, 4))
        >>> before = layer.weight
        >>> geoparam.clear_caches(layer)
        >>> layer.weight is before
        False
    """
    for submodule in module.modules():
        _CACHE.pop(submodule, None)


def _functorch_active() -> bool:
    # torch.func transforms wrap tensors level by level; a cached result from one level is
    # meaningless at another. (Private API: if it moves, caching is simply skipped there.)
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # pragma: no cover - depends on the torch release
        return True


def _registered(inputs: tuple[Tensor, ...], buffers: tuple[Tensor, ...]) -> bool:
    """Whether the evaluation reads a module's own parameters (and plain buffers) only.

    Those change through in-place operations, which the fingerprint sees. Left alone:

    * other tensors passed in (``functional_call`` substitutes, direct calls of a
      parametrization): tools like ``torch.autograd.gradcheck`` perturb them through ``.data``;
    * tensor subclasses (DTensor, fake and functional tensors): state the fingerprint cannot see;
    * parameters that are windows into a larger storage (FSDP's flat parameters, flat-buffer
      optimizers) or partitioned by DeepSpeed: the frameworks that make them refill them in
      place without a version bump.
    """
    return (
        all(type(t) is nn.Parameter and _owns_storage(t) for t in inputs)
        and all(type(t) is Tensor for t in buffers)
        and not _fsdp2_in_use()
    )


def _owns_storage(tensor: Tensor) -> bool:
    return (
        tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        and not hasattr(tensor, "ds_id")  # DeepSpeed ZeRO-3
    )


def _fsdp2_in_use() -> bool:
    # FSDP2 (fully_shard) refills each unsharded parameter before every forward keeping its
    # version counter on purpose, in storage it frees and allocates again (often at the same
    # address): no fingerprint can tell the values apart, so automatic reuse is off as soon as
    # the process uses it. Explicit geoparam.cached() blocks still reuse.
    composable = sys.modules.get("torch.distributed._composable_state")
    return composable is not None and bool(getattr(composable, "_module_state_mapping", None))


def _version(tensor: Tensor) -> int | None:
    return None if tensor.is_inference() else tensor._version


def _states(tensors: tuple[Tensor, ...]) -> list[tuple[int, int]]:
    """What an in-place change moves: each tensor's version counter and storage address.

    (A new dtype, device or shape comes with new storage, or with a version bump for ``set_``.)
    """
    return [(t._version, t.data_ptr()) for t in tensors]


def evaluate(compute: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
    """``compute(*inputs)`` in the weights' own precision (and watched, inside ``watching``)."""
    names = _state.watched
    if names is not None:
        return _evaluate_watched(compute, inputs, names)
    # A constraint is evaluated in the weight's own precision, whatever autocast is active: the
    # layer that uses the weight casts it as autocast decides.
    device_type = inputs[0].device.type
    if not _autocast_enabled(device_type):
        return compute(*inputs)
    with torch.autocast(device_type, enabled=False):
        return compute(*inputs)


def _evaluate_watched(
    compute: Callable[..., Tensor], inputs: tuple[Tensor, ...], names: dict[nn.Module, str]
) -> Tensor:
    owner = compute.__self__
    name = names.get(owner, getattr(owner, "label", type(owner).__name__))
    parts = [(f"unconstrained tensor {i}", x) for i, x in enumerate(inputs)]
    parts += [(f"buffer {key}", b) for key, b in owner.named_buffers()]
    for what, tensor in parts:
        _raise_if_nonfinite(tensor, f"{name}: its {what}")
    names_kept, _state.watched = names, None  # the evaluation itself, unwatched
    try:
        output = evaluate(compute, inputs)
    finally:
        _state.watched = names_kept
    _raise_if_nonfinite(output, f"{name}: its value (from finite inputs)")
    return output


def _raise_if_nonfinite(tensor: Tensor, what: str) -> None:
    if tensor.device.type == "meta" or torch.compiler.is_compiling():
        return
    count = int((~torch.isfinite(tensor.detach())).sum())
    if count:
        raise FloatingPointError(
            f"{what} has {count} non-finite entries (NaN or Inf) out of {tensor.numel()}."
        )


@contextlib.contextmanager
def watching(names: dict[nn.Module, str]) -> Iterator[None]:
    """Inside the block, every evaluation checks its inputs, buffers and value for NaN and Inf.

    ``names`` maps each parametrization to how the error names it (its place in a model).
    """
    previous = _state.watched
    _state.watched = names
    try:
        yield
    finally:
        _state.watched = previous


def _autocast_enabled(device_type: str) -> bool:
    available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
    if not available(device_type):  # the meta device, say
        return False
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch releases whose is_autocast_enabled takes no device type
        return True


class _Reusable(torch.autograd.Function):
    """``compute(*inputs)`` as one node whose backward pass can run again and again."""

    @staticmethod
    def forward(ctx, compute: weakref.WeakMethod, *inputs: Tensor) -> Tensor:
        leaves = tuple(x.detach().requires_grad_(x.requires_grad) for x in inputs)
        with torch.enable_grad():
            output = evaluate(compute(), leaves)
        # Kept as attributes, not saved tensors: the engine frees saved tensors after the first
        # backward pass, while these live as long as the node, i.e. as long as a graph or the
        # cache refers to it. `compute` is a weak method: the module keeps this node through its
        # cache, and a strong reference back would make a cycle through autograd's C++ graph.
        ctx.graph = (leaves, output)
        ctx.inputs = inputs
        ctx.compute = compute
        return output.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        leaves, output = ctx.graph
        wanted = [i for i, leaf in enumerate(leaves) if leaf.requires_grad]
        if torch.is_grad_enabled():
            # A second derivative is asked for: differentiate a fresh evaluation on the real
            # inputs, so that the result is connected to them.
            inputs = [ctx.inputs[i] for i in wanted]
            output = evaluate(ctx.compute(), ctx.inputs)
            grads = torch.autograd.grad(output, inputs, grad, create_graph=True, allow_unused=True)
        else:
            targets = [leaves[i] for i in wanted]
            grads = torch.autograd.grad(output, targets, grad, retain_graph=True, allow_unused=True)
        result: list[Tensor | None] = [None] * (1 + len(leaves))
        for i, g in zip(wanted, grads, strict=True):
            result[1 + i] = g
        return tuple(result)


def cached_evaluation(
    owner: nn.Module,
    compute: Callable[..., Tensor],
    inputs: tuple[Tensor, ...],
    *,
    side_effects: bool = False,
) -> Tensor:
    """``compute(*inputs)``, reused while nothing it depends on has changed.

    The evaluation runs with autocast disabled: a constraint is evaluated in the weight's own
    precision, and the layer that uses the weight casts it as autocast decides.

    Args:
        owner: the parametrization; its buffers are part of the fingerprint.
        compute: the evaluation, a method of ``owner``: a function of ``inputs`` and of
            ``owner``'s buffers.
        inputs: the tensors the evaluation is differentiated with respect to.
        side_effects: the evaluation changes state (power iteration): reuse it only inside an
            explicit :func:`cached` block.
    """
    current = _scope()
    if (
        not _enabled()
        or (side_effects and current is None)
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or _functorch_active()
    ):
        return evaluate(compute, inputs)

    # A product of spaces keeps its factors' buffers (their bases) in submodules.
    buffers = tuple(owner.buffers())
    tensors = (*inputs, *buffers)
    with_graph = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    flags = (torch.is_inference_mode_enabled(), id(current) if side_effects else None)
    entry = _CACHE.get(owner)
    if entry is not None:
        cached, states, cached_flags, kind, result, version = entry
        # The same tensor objects (`is`, not `==`) in the same states; and nobody wrote into
        # the tensor the previous reads returned (a result made in inference mode has no
        # version counter, and cannot be written outside it).
        if (
            cached_flags == flags
            and len(cached) == len(tensors)
            and all(a is b for a, b in zip(cached, tensors, strict=True))
            and _states(tensors) == states
            and _version(result) == version
        ):
            if not with_graph:
                return result if kind == _VALUE else result.detach()
            if kind == _REUSABLE:
                return result
        else:
            kind = None
    else:
        kind = None

    # Checked only before storing: an entry's tensors stay the same objects, so they stay
    # eligible.
    if any(
        type(t) not in (Tensor, nn.Parameter) or t.device.type == "meta" or t.is_inference()
        for t in tensors
    ) or (current is None and not _registered(inputs, buffers)):
        return evaluate(compute, inputs)

    if not with_graph:
        kind = _VALUE
        with torch.no_grad():
            result = evaluate(compute, inputs)
    elif kind is None and not side_effects:
        # The first read with a graph: a plain evaluation, which costs nothing extra when the
        # weight is read once per step (the usual case).
        kind = _PLAIN
        result = evaluate(compute, inputs)
    else:
        # A second read of the same value (or any read in a scope, for an evaluation with side
        # effects): from now on, one evaluation whose graph survives every backward pass.
        kind = _REUSABLE
        result = _Reusable.apply(weakref.WeakMethod(compute), *inputs)
    # The states are taken after the evaluation: a side effect (power iteration) may have
    # changed buffers.
    _CACHE[owner] = (tensors, _states(tensors), flags, kind, result, _version(result))
    if current is not None:
        current.owners.append(weakref.ref(owner))
    return result
