"""The one place where geoparam registers parametrizations on modules.

torch's ``register_parametrization`` swaps a module's class for a subclass made on the spot for
that module alone (``ParametrizedLinear`` for a ``Linear``), holding properties that compute the
constrained tensors. geoparam then moves the module to a class it *shares* between all modules of
the same plain class (:func:`_shared_class`):

* with one class per module, torch.compile guards on each module's class and compiles every
  block of a model anew when the blocks are compiled one by one (and falls back to eager after
  eight); with a shared class they share one graph;
* pickling (``pickle``, ``torch.save(model)``), which torch refuses for its classes: a module is
  reduced to its plain class, its state and the names of its parametrized tensors;
* ``reset_parameters()``, which on a parametrized module would initialise a temporary copy of the
  weight: it initialises a plain tensor with the module's own method and assigns it through the
  constraints (what a model's own initialisation after ``to_empty()`` needs);
* the load hook that reads the checkpoint keys of torch's older hook-based ``weight_norm`` and
  ``spectral_norm``, and lets each parametrization convert a checkpoint of another layout
  (:meth:`~geoparam.manifolds.Parametrization.adapt_checkpoint_`).

A shared class's properties work for every module that has the class: for a module whose tensor
of that name is not parametrized they defer to the ordinary attribute lookup. Its metaclass keeps
torch's own ``register_parametrization`` and ``remove_parametrizations``, which add and delete a
property on the module's class, from affecting the other modules.
"""

from __future__ import annotations

import contextlib
import copyreg
from copy import deepcopy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["register", "reinitialize"]


def register(module: nn.Module, name: str, parametrization: nn.Module, *, unsafe: bool) -> None:
    """Register ``parametrization`` on ``module.<name>`` through torch's parametrize machinery."""
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)
    _share_class(module)
    _install_checkpoint_hook(module)


class _SharedParametrizedType(type):
    """The metaclass of :func:`_shared_class`: class-level property changes stay per module."""

    def __setattr__(cls, name: str, value: object) -> None:
        # torch's _inject_property sets a property for one module's tensor; a shared class
        # holds the property every module can use instead.
        if isinstance(value, property):
            value = _parametrized_property(name)
        super().__setattr__(name, value)

    def __delattr__(cls, name: str) -> None:
        # torch's remove_parametrizations deletes the property of one module's tensor: other
        # modules may still use it, and it defers to plain attributes for this one.
        if isinstance(cls.__dict__.get(name), property):
            return
        super().__delattr__(name)


_SHARED: dict[type, type] = {}


def _shared_class(plain: type) -> type:
    """The parametrized class that every parametrized ``plain`` module of geoparam's shares."""
    shared = _SHARED.get(plain)
    if shared is None:
        namespace: dict[str, object] = {
            "__module__": plain.__module__,
            "__qualname__": f"Parametrized{plain.__qualname__}",
            "__reduce_ex__": _reduce_parametrized,
        }
        if not hasattr(plain, "__deepcopy__"):
            namespace["__deepcopy__"] = _deepcopy_parametrized
        if hasattr(plain, "reset_parameters"):
            namespace["reset_parameters"] = _reset_parameters
        shared = _SharedParametrizedType(f"Parametrized{plain.__name__}", (plain,), namespace)
        _SHARED[plain] = shared
    return shared


def _share_class(module: nn.Module) -> None:
    plain = _plain_class(module)
    cls = type(module)
    if type(plain) is not type:
        return  # a plain class with its own metaclass keeps torch's class of its own
    shared = _shared_class(plain)
    for name in module.parametrizations:
        if not isinstance(shared.__dict__.get(name), property):
            setattr(shared, name, _parametrized_property(name))
    if cls.__bases__ == (plain,) and cls is not shared:
        # The class torch made for this module alone: replace it. (A class derived later, e.g.
        # by FSDP's fully_shard, is left as it is.)
        module.__class__ = shared


def _plain_class(module: nn.Module) -> type:
    """The module's class before any parametrization (found under classes derived later)."""
    names = module.parametrizations.keys()
    for cls in type(module).__mro__:
        if cls in _SHARED.values() or any(
            isinstance(cls.__dict__.get(name), property) for name in names
        ):
            return cls.__bases__[0]
    return type(module).__bases__[0]


def _parametrized_property(name: str) -> property:
    """``module.<name>`` for any module of a shared class, parametrized there or not."""

    def get(self: nn.Module) -> Tensor:
        parametrizations = self._modules.get("parametrizations")
        if parametrizations is None or name not in parametrizations:
            # Not parametrized in this module: where nn.Module keeps it. (Looked up here rather
            # than by raising AttributeError for nn.Module.__getattr__, which torch.compile does
            # not follow from inside a property.)
            for store in (self.__dict__, self._parameters, self._buffers, self._modules):
                if name in store:
                    return store[name]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        if parametrize._cache_enabled:  # inside torch's parametrize.cached()
            if torch._C._get_tracing_state() is not None:
                raise RuntimeError("Cannot trace a model while caching parametrizations.")
            key = (id(self), name)
            tensor = parametrize._cache.get(key)
            if tensor is None:
                tensor = parametrize._cache[key] = parametrizations[name]()
            return tensor
        return parametrizations[name]()

    def set(self: nn.Module, value: Tensor) -> None:
        parametrizations = self._modules.get("parametrizations")
        if parametrizations is None or name not in parametrizations:
            self.__dict__[name] = value
            return
        parametrizations[name].right_inverse(value)

    return property(get, set)


def _deepcopy_parametrized(self: nn.Module, memo: dict) -> nn.Module:
    # What deepcopy does for a class without __deepcopy__ (torch gives its classes the same).
    copy = memo.get(id(self))
    if copy is not None:
        return copy
    copy = self.__new__(type(self))
    memo[id(self)] = copy
    copy.__dict__ = deepcopy(self.__dict__, memo)
    for slot in copyreg._slotnames(type(self)):
        if hasattr(self, slot):
            setattr(copy, slot, deepcopy(getattr(self, slot), memo))
    return copy


def _reduce_parametrized(self: nn.Module, protocol: int) -> tuple:
    plain = _plain_class(self)
    if type(self) is not _SHARED.get(plain):
        raise TypeError(
            f"cannot pickle {type(self).__name__}: its class was derived from the parametrized "
            "class after the constraints were registered (by FSDP, say); save its state_dict."
        )
    state = self.__dict__.copy()
    return _rebuild_parametrized, (plain,), state


def _rebuild_parametrized(plain: type) -> nn.Module:
    """An empty ``plain`` instance with its shared parametrized class; pickle sets its state."""
    module = plain.__new__(plain)
    module.__class__ = _shared_class(plain)
    return module


def _reset_parameters(self: nn.Module) -> None:
    """The module's own ``reset_parameters``, with the result assigned through the constraints."""
    reinitialize(self)


@torch.no_grad()
def reinitialize(module: nn.Module) -> None:
    """Draw new values of ``module``'s constrained tensors and assign them through the constraints.

    The values come from the module's own ``reset_parameters()``, run on plain tensors; a module
    without one gets, for an orthogonal weight, a Haar sample. Parametrizations whose state
    depends on the weight (spectral normalisation's singular vectors) then re-draw it.

    Raises:
        ValueError: a constrained tensor has no way to be drawn (its module has no
            ``reset_parameters()`` and its constraint has no ``sample()``).
        RuntimeError: the constrained tensors are sharded (FSDP2): initialise before sharding.
    """
    names = list(module.parametrizations.keys())
    plain = _plain_class(module)
    for name in names:
        if any(hasattr(t, "device_mesh") for t in module.parametrizations[name].parameters()):
            # torch's parametrize cannot assign to a sharded original (its swap_tensors refuses
            # a DTensor), and a constraint's map needs the whole tensor anyway.
            raise RuntimeError(
                f"cannot re-initialise {plain.__name__}.{name}: its tensors are sharded "
                "(DTensor, as after FSDP2's fully_shard). Initialise the model before sharding "
                "it: to_empty(), then reset_parameters() or geoparam.reset_parametrizations(), "
                "then fully_shard()."
            )
    if hasattr(plain, "reset_parameters"):
        values = _initial_values(module, names, plain)
    else:
        values = {}
        for name in names:
            first = module.parametrizations[name][0]
            try:
                values[name] = first.sample()
            except (AttributeError, NotImplementedError):
                raise ValueError(
                    f"cannot re-initialise {type(first).__name__}-constrained "
                    f"{plain.__name__}.{name}: the module has no reset_parameters(); assign "
                    f"module.{name} = <a tensor> instead."
                ) from None
    for name, value in values.items():
        parametrizations = module.parametrizations[name]
        with contextlib.ExitStack() as stack:
            # The module's own initialisation rarely lands on a constraint: project it there.
            for parametrization in parametrizations:
                if hasattr(parametrization, "projecting"):
                    stack.enter_context(parametrization.projecting())
            setattr(module, name, value)
        for parametrization in parametrizations:
            if hasattr(parametrization, "reinitialize_"):
                parametrization.reinitialize_(value)


def _initial_values(module: nn.Module, names: list[str], plain: type) -> dict[str, Tensor]:
    # Shapes, dtypes and devices of the constrained tensors, from one evaluation (the values
    # may be garbage, after to_empty(): only the metadata is read).
    like = {name: getattr(module, name) for name in names}
    parametrized = type(module)
    module.__class__ = plain
    try:
        # With the plain class, `module.weight` finds these instead of the properties.
        for name, tensor in like.items():
            module._parameters[name] = nn.Parameter(torch.empty_like(tensor))
        module.reset_parameters()
        return {name: module._parameters[name].detach() for name in names}
    finally:
        for name in names:
            module._parameters.pop(name, None)
        module.__class__ = parametrized


def _install_checkpoint_hook(module: nn.Module) -> None:
    # torch adds one load hook per call of weight_norm and never removes it; geoparam keeps a
    # single hook per module that looks up the current parametrizations when it runs.
    for hook in module._load_state_dict_pre_hooks.values():
        if getattr(hook, "hook", None) is _adapt_checkpoint:
            return
    module._register_load_state_dict_pre_hook(_adapt_checkpoint, with_module=True)


def _adapt_checkpoint(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    # Two kinds of foreign checkpoints are read: the keys of torch's older hook-based
    # constraints, renamed, and layouts that a parametrization converts itself (an orthogonal
    # weight's full n x n base into the compact one, and back).
    if not parametrize.is_parametrized(module):
        return
    for name, parametrizations in module.parametrizations.items():
        new = f"{prefix}parametrizations.{name}"
        _rename_legacy_keys(state_dict, prefix, name, new, parametrizations[0])
        if parametrizations.is_tensor:
            inputs = [f"{new}.original"]
        else:
            inputs = [f"{new}.original{i}" for i in range(parametrizations.ntensors)]
        for i, parametrization in enumerate(parametrizations):
            adapt = getattr(parametrization, "adapt_checkpoint_", None)
            if adapt is not None:
                # Only a first parametrization maps a stored tensor.
                adapt(state_dict, f"{new}.{i}.", inputs if i == 0 else [])


def _rename_legacy_keys(
    state_dict: dict, prefix: str, name: str, new: str, first: nn.Module
) -> None:
    # Keys of torch.nn.utils.weight_norm: <name>_g, <name>_v.
    # Keys of torch.nn.utils.spectral_norm: <name>_orig, <name>_u, <name>_v.
    # The legacy hooks owned the raw tensor, so only a first parametrization can take it.
    legacy_state_keys = getattr(first, "legacy_state_keys", None)
    if legacy_state_keys is None:
        return
    renames = {
        suffix: None if key is None else f"{new}.{key}"
        for suffix, key in legacy_state_keys().items()
    }
    if not renames:
        return
    old_keys = {f"{prefix}{name}{suffix}": key for suffix, key in renames.items()}
    if all(old in state_dict for old in old_keys):
        for old, key in old_keys.items():
            value = state_dict.pop(old)
            if key is not None:
                state_dict[key] = value
