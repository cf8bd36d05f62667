"""The one place where geoparam registers parametrizations on modules."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from .manifolds import SpectralNorm, WeightNorm

__all__ = ["register"]


def register(module: nn.Module, name: str, parametrization: nn.Module, *, unsafe: bool) -> None:
    """Register ``parametrization`` on ``module.<name>`` through torch's parametrize machinery.

    Also installs, once per module, the load hook that reads the checkpoint keys of torch's
    older hook-based ``weight_norm`` and ``spectral_norm``.
    """
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)
    _install_legacy_key_hook(module)


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
