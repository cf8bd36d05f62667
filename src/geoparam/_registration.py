"""The one place where geoparam registers parametrizations on modules.

torch's ``register_parametrization`` swaps the module's class for a subclass made on the spot
(``ParametrizedLinear`` for a ``Linear``) that holds the properties computing the constrained
tensors. geoparam completes that class, once per module:

* pickling (``pickle``, ``torch.save(model)``), which torch refuses for such classes: the module is
  reduced to its plain class, its state and the names of its parametrized tensors, and rebuilt
  through torch's own class injection;
* ``reset_parameters()``, which on a parametrized module would initialise a temporary copy of the
  weight: it initialises a plain tensor with the module's own method and assigns it through the
  constraints (what a model's own initialisation after ``to_empty()`` needs);
* the load hook that reads the checkpoint keys of torch's older hook-based ``weight_norm`` and
  ``spectral_norm``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .manifolds import SpectralNorm, WeightNorm

__all__ = ["register", "reinitialize"]


def register(module: nn.Module, name: str, parametrization: nn.Module, *, unsafe: bool) -> None:
    """Register ``parametrization`` on ``module.<name>`` through torch's parametrize machinery."""
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)
    _complete_class(type(module))
    _install_legacy_key_hook(module)


def _complete_class(cls: type) -> None:
    # The class torch made for this module alone (or a copy's, which shares it): patch it once.
    if cls.__dict__.get("_geoparam_complete", False):
        return
    cls.__reduce_ex__ = _reduce_parametrized
    if hasattr(cls.__bases__[0], "reset_parameters"):
        cls.reset_parameters = _reset_parameters
    cls._geoparam_complete = True


def _reduce_parametrized(self: nn.Module, protocol: int) -> tuple:
    plain = type(self).__bases__[0]
    state = self.__dict__.copy()
    return _rebuild_parametrized, (plain, tuple(self.parametrizations.keys())), state


def _rebuild_parametrized(plain: type, names: tuple[str, ...]) -> nn.Module:
    """An empty ``plain`` instance with torch's parametrized class; pickle then sets its state."""
    module = plain.__new__(plain)
    parametrize._inject_new_class(module)
    for name in names:
        parametrize._inject_property(module, name)
    _complete_class(type(module))
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
    """
    names = list(module.parametrizations.keys())
    if hasattr(type(module).__bases__[0], "reset_parameters"):
        values = _initial_values(module, names)
    else:
        values = {}
        for name in names:
            first = module.parametrizations[name][0]
            if not hasattr(first, "sample"):
                raise ValueError(
                    f"cannot re-initialise {type(first).__name__}-constrained "
                    f"{type(module).__bases__[0].__name__}.{name}: the module has no "
                    f"reset_parameters(); assign module.{name} = <a tensor> instead."
                )
            values[name] = first.sample()
    for name, value in values.items():
        setattr(module, name, value)
        for parametrization in module.parametrizations[name]:
            if hasattr(parametrization, "reinitialize_"):
                parametrization.reinitialize_(value)


def _initial_values(module: nn.Module, names: list[str]) -> dict[str, Tensor]:
    # Shapes, dtypes and devices of the constrained tensors, from one evaluation (the values
    # may be garbage, after to_empty(): only the metadata is read).
    like = {name: getattr(module, name) for name in names}
    parametrized = type(module)
    module.__class__ = parametrized.__bases__[0]
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


def _install_legacy_key_hook(module: nn.Module) -> None:
    # torch adds one load hook per call of weight_norm and never removes it; geoparam keeps a
    # single hook per module that looks up the current parametrizations when it runs.
    for hook in module._load_state_dict_pre_hooks.values():
        if getattr(hook, "hook", None) is _rename_legacy_keys:
            return
    module._register_load_state_dict_pre_hook(_rename_legacy_keys, with_module=True)


def _rename_legacy_keys(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    # Keys of torch.nn.utils.weight_norm: <name>_g, <name>_v.
    # Keys of torch.nn.utils.spectral_norm: <name>_orig, <name>_u, <name>_v.
    if not parametrize.is_parametrized(module):
        return
    for name, parametrizations in module.parametrizations.items():
        # The legacy hooks owned the raw tensor, so only a first parametrization can take it.
        first = parametrizations[0]
        new = f"{prefix}parametrizations.{name}"
        if isinstance(first, WeightNorm):
            renames = {"_g": f"{new}.original0", "_v": f"{new}.original1"}
        elif isinstance(first, SpectralNorm):
            # A 1-D weight is normalised exactly and keeps no vectors: the old ones are dropped.
            vectors = hasattr(first, "_u")
            renames = {
                "_orig": f"{new}.original",
                "_u": f"{new}.0._u" if vectors else None,
                "_v": f"{new}.0._v" if vectors else None,
            }
        else:
            continue
        old_keys = {f"{prefix}{name}{suffix}": key for suffix, key in renames.items()}
        if all(old in state_dict for old in old_keys):
            for old, key in old_keys.items():
                value = state_dict.pop(old)
                if key is not None:
                    state_dict[key] = value
