"""What every front door shares: find the tensor, check it, build the constraint, register it.

A front door is its typed signature, its docstring and one call of :func:`constrain`: the
parametrization's constructor validates the arguments (it knows the shape), :func:`attach` does
the registering. No front door holds any maths.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize

from .._registration import _plain_class, register
from ..errors import InvalidNameError, NotAModuleError, UnsupportedDtypeError
from ..manifolds import Parametrization
from ..manifolds._validation import check_finite

__all__ = ["attach", "check_int", "constrain", "tensor_to_constrain"]


def tensor_to_constrain(
    module: nn.Module,
    name: str,
    constraint: str,
    missing: str = "has no parameter or buffer with name",
) -> Tensor:
    """``module.<name>``, checked: a module, a string name, a finite floating-point tensor.

    ``missing`` words the message for a module without that tensor (torch words it differently
    for each of its functions).
    """
    # Each message carries torch's own wording for the same mistake (code written against
    # torch.nn.utils.parametrizations matches on it), after geoparam's naming of the tensor.
    if not isinstance(module, nn.Module):
        raise NotAModuleError(
            f"{constraint}: expected an nn.Module to constrain, got a {type(module).__name__}."
        )
    if not isinstance(name, str):
        raise InvalidNameError(
            f"{constraint}: the tensor's name: attribute name must be string, not "
            f"'{type(name).__name__}'"
        )
    tensor = getattr(module, name, None)
    if not isinstance(tensor, Tensor):
        names = [n for n, _ in module.named_parameters(recurse=False)]
        names += [n for n, _ in module.named_buffers(recurse=False)]
        names += list(getattr(module, "parametrizations", {}).keys())
        raise ValueError(
            f"{constraint}: Module '{module}' {missing} '{name}' (its tensors: "
            f"{', '.join(sorted(set(names))) or 'none'})."
        )
    if not (tensor.is_floating_point() or tensor.is_complex()):
        raise UnsupportedDtypeError(
            f"{constraint}: {label(module, name)} has dtype {tensor.dtype}; "
            "expected a floating-point or complex tensor."
        )
    check_finite(tensor, f"{constraint}: {label(module, name)}", "holds")
    return tensor


def check_int(constraint: str, argument: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is an ``int`` (and not a ``bool``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{constraint}: {argument} must be an int, got {value!r}.")


def label(module: nn.Module, name: str) -> str:
    """How messages name a module's tensor: ``"Linear.weight"`` (also once it is constrained)."""
    cls = _plain_class(module) if parametrize.is_parametrized(module) else type(module)
    return f"{cls.__name__}.{name}"


def attach(
    module: nn.Module, name: str, parametrization: Parametrization, *, unsafe: bool = True
) -> nn.Module:
    """Register ``parametrization`` on ``module.<name>``: the last step of every front door.

    The tensor's current value is kept when it satisfies the constraint and projected onto it
    otherwise (never resampled). A parametrization stacked on an already constrained tensor maps
    the previous constraint's output and is told so (:meth:`Parametrization.stack_after_`).
    """
    if parametrize.is_parametrized(module, name):
        parametrization.stack_after_(getattr(module, name))
    with parametrization.projecting():
        register(module, name, parametrization, unsafe=unsafe)
    return module


def constrain(
    module: nn.Module,
    name: str,
    constraint: str,
    manifold: type[Parametrization],
    *args: Any,
    **kwargs: Any,
) -> nn.Module:
    """Constrain ``module.<name>`` to ``manifold(shape, *args, **kwargs)`` and return ``module``.

    ``constraint`` is the front door's name, for messages. The parametrization is built for the
    tensor's shape, dtype and device, with a label naming module and tensor; its constructor
    checks the arguments against the shape.
    """
    weight = tensor_to_constrain(module, name, constraint)
    parametrization = manifold(
        weight.shape,
        *args,
        label=label(module, name),
        dtype=weight.dtype,
        device=weight.device,
        **kwargs,
    )
    return attach(module, name, parametrization)
