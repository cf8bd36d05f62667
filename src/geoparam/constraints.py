"""Front doors: validate the arguments, build a parametrization, register it."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ._registration import register
from .errors import InvalidNameError, NotAModuleError, UnsupportedDtypeError
from .manifolds import ORTHOGONAL_MAPS, Orthogonal, SpectralNorm, WeightNorm
from .manifolds._validation import check_finite

__all__ = ["orthogonal", "spectral_norm", "weight_norm"]

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _tensor_to_constrain(module: nn.Module, name: str, constraint: str) -> Tensor:
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
        missing = (
            # torch's weight_norm fails inside register_parametrization, which words it so.
            "does not have a parameter, a buffer, or a parametrized element with name"
            if constraint == "weight_norm"
            else "has no parameter or buffer with name"
        )
        raise ValueError(
            f"{constraint}: Module '{module}' {missing} '{name}' (its tensors: "
            f"{', '.join(sorted(set(names))) or 'none'})."
        )
    if not (tensor.is_floating_point() or tensor.is_complex()):
        raise UnsupportedDtypeError(
            f"{constraint}: {type(module).__name__}.{name} has dtype {tensor.dtype}; "
            "expected a floating-point or complex tensor."
        )
    check_finite(tensor, f"{constraint}: {type(module).__name__}.{name}", "holds")
    return tensor


def _check_int(constraint: str, argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{constraint}: {argument} must be an int, got {value!r}.")


def orthogonal(
    module: nn.Module,
    name: str = "weight",
    orthogonal_map: str | None = None,
    *,
    use_trivialization: bool = True,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be orthogonal (real) or unitary (complex).

    A weight ``Q`` of shape ``(..., m, n)`` satisfies ``QᴴQ = I`` if ``m >= n`` and ``QQᴴ = I``
    otherwise; leading dimensions are a batch. A drop-in for
    :func:`torch.nn.utils.parametrizations.orthogonal`: same arguments, defaults, exception types
    (with messages that name the module and tensor) and ``state_dict`` keys, so checkpoints load
    in either library. See
    :class:`geoparam.manifolds.Orthogonal` for the maps.

    The initial value is the current weight when it is already orthogonal and its QR
    orthogonalisation (with ``diag(R) >= 0``) otherwise; the weight is never resampled. (As in
    torch, ``"matrix_exp"`` and ``"cayley"`` without trivialization cannot be inverted: there the
    stored tensor is the map's input and the weight starts at its image.) Unlike
    torch, the Householder map keeps every column sign at ``±1`` under weight decay.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        orthogonal_map: ``"matrix_exp"``, ``"cayley"`` or ``"householder"``. Default:
            ``"matrix_exp"`` for a square or complex weight, ``"householder"`` otherwise.
        use_trivialization: keep a base ``B`` so that ``Q = B · φ(X)`` (dynamic
            trivialization). Default: ``True``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor with fewer than two dimensions; an
            unknown map; the Householder map on a complex tensor. Each message contains torch's
            wording for the same case.
        UnsupportedDtypeError: an integer tensor.
        NotAModuleError, InvalidNameError: ``module`` or ``name`` of the wrong type.

    The exception classes of :mod:`geoparam.errors` derive from every type torch raises for the
    same input.

    Example:
        >>> layer = orthogonal(nn.Linear(20, 40))
        >>> Q = layer.weight
        >>> torch.allclose(Q.T @ Q, torch.eye(20), atol=1e-5)
        True
    """
    weight = _tensor_to_constrain(module, name, "orthogonal")
    where = f"{type(module).__name__}.{name}"
    if weight.ndim < 2:
        raise ValueError(
            f"orthogonal: {where} has shape {tuple(weight.shape)}: Expected a matrix or batch of "
            f"matrices. Got a tensor of {weight.ndim} dimensions."
        )
    if orthogonal_map is None:
        square = weight.size(-2) == weight.size(-1)
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    if orthogonal_map not in ORTHOGONAL_MAPS:
        raise ValueError(
            f"orthogonal: {where}: orthogonal_map has to be one of "
            f'"matrix_exp", "cayley", "householder". Got: {orthogonal_map}'
        )
    if orthogonal_map == "householder" and weight.is_complex():
        raise ValueError(
            f"orthogonal: {where} is {weight.dtype}: The householder parametrization does not "
            'support complex tensors. Use "matrix_exp" or "cayley".'
        )
    parametrization = Orthogonal(
        weight.shape,
        orthogonal_map,
        use_trivialization=use_trivialization,
        label=where,
        dtype=weight.dtype,
        device=weight.device,
    )
    if parametrize.is_parametrized(module, name):
        # torch calls right_inverse only for a tensor's first parametrization; a stacked one maps
        # the previous output and starts from the identity base.
        parametrization.reset_base_(weight)
    register(module, name, parametrization, unsafe=True)
    return module


def weight_norm(module: nn.Module, name: str = "weight", dim: int | None = 0) -> nn.Module:
    r"""Split ``module.<name>`` into a magnitude and a direction: ``w = g · v / ‖v‖``.

    A drop-in for :func:`torch.nn.utils.parametrizations.weight_norm`: ``g`` and ``v`` are stored
    as ``parametrizations.<name>.original0`` and ``original1``. Checkpoints of torch's older
    :func:`torch.nn.utils.weight_norm` (keys ``<name>_g`` and ``<name>_v``) load too. Applying
    and removing the constraint any number of times leaves a single load hook on the module.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        dim: the dimension kept by the norm (``0``: one norm per output channel), or ``None`` for
            the norm of the whole tensor. As in torch, ``-1`` also means the whole tensor.
            Default: ``0``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a complex tensor.
        IndexError: ``dim`` is out of range (torch's rule and wording).
        TypeError: ``dim`` is not an integer.
        UnsupportedDtypeError: an integer tensor.
        NotAModuleError, InvalidNameError: ``module`` or ``name`` of the wrong type.

    Example:
        >>> layer = weight_norm(nn.Linear(20, 40))
        >>> layer.parametrizations.weight.original0.shape
        torch.Size([40, 1])
        >>> layer.parametrizations.weight.original1.shape
        torch.Size([40, 20])
    """
    weight = _tensor_to_constrain(module, name, "weight_norm")
    where = f"{type(module).__name__}.{name}"
    if weight.is_complex():
        raise ValueError(
            f"weight_norm: {where} is complex ({weight.dtype}); torch's weight-norm kernel "
            "supports real tensors only."
        )
    try:
        # torch's own kernel, on a data-free copy, decides which dims are valid and words the
        # error (including its special cases for 0-d and 1-d tensors).
        # (Its rule depends on the number of dimensions only; a shape of ones also passes for a
        # tensor with no elements, on which torch's kernel itself fails.)
        like = torch.empty([1] * weight.ndim, device="meta")
        torch.norm_except_dim(like, 2, -1 if dim is None else dim)
    except (IndexError, TypeError) as error:
        raise type(error)(f"weight_norm: {where} of shape {tuple(weight.shape)}: {error}") from None
    parametrization = WeightNorm(
        dim, shape=weight.shape, label=where, dtype=weight.dtype, device=weight.device
    )
    register(module, name, parametrization, unsafe=True)
    return module


def spectral_norm(
    module: nn.Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
) -> nn.Module:
    r"""Divide ``module.<name>`` by its spectral norm: ``W / σ(W)``, estimated by power iteration.

    A drop-in for :func:`torch.nn.utils.parametrizations.spectral_norm`: buffers ``_u`` and
    ``_v`` hold the singular-vector estimates, warmed up by 15 iterations here and refined by
    ``n_power_iterations`` each time the weight is read in training mode. Weights with more than
    two dimensions are reshaped to ``(size(dim), -1)``; a 1-D weight is divided by its norm.
    Checkpoints of torch's older hook-based :func:`torch.nn.utils.spectral_norm` (keys
    ``<name>_orig``, ``<name>_u``, ``<name>_v``) load too.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        n_power_iterations: power iterations per training-mode read. Default: ``1``.
        eps: floor on norms in the power iteration. Default: ``1e-12``.
        dim: the output dimension. Default: ``1`` for ``ConvTranspose1d/2d/3d``, else ``0``.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; ``n_power_iterations <= 0``; ``eps <= 0``.
        IndexError: ``dim`` is out of range.
        TypeError: ``dim`` or ``n_power_iterations`` is not an integer.
        UnsupportedDtypeError: an integer tensor.
        NotAModuleError, InvalidNameError: ``module`` or ``name`` of the wrong type.

    Example:
        >>> layer = spectral_norm(nn.Linear(20, 40))
        >>> sigma = torch.linalg.matrix_norm(layer.weight, 2)
        >>> bool(abs(sigma - 1) < 0.1)
        True
    """
    weight = _tensor_to_constrain(module, name, "spectral_norm")
    where = f"{type(module).__name__}.{name}"
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    _check_int("spectral_norm", "dim", dim)
    _check_int("spectral_norm", "n_power_iterations", n_power_iterations)
    if not eps > 0:
        raise ValueError(f"spectral_norm: {where}: eps must be positive, got eps={eps!r}.")
    parametrization = SpectralNorm(weight, n_power_iterations, dim, eps, label=where)
    register(module, name, parametrization, unsafe=False)
    return module
