"""The front doors of weight and spectral normalisation (torch's, as drop-ins)."""

from __future__ import annotations

import torch
from torch import nn

from ..manifolds import SpectralNorm, WeightNorm
from ._front import attach, check_int, label, tensor_to_constrain

__all__ = ["spectral_norm", "weight_norm"]

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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
    # torch's weight_norm fails inside register_parametrization, which words a missing tensor so.
    missing = "does not have a parameter, a buffer, or a parametrized element with name"
    weight = tensor_to_constrain(module, name, "weight_norm", missing)
    where = label(module, name)
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
    return attach(module, name, parametrization)


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
    weight = tensor_to_constrain(module, name, "spectral_norm")
    where = label(module, name)
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    check_int("spectral_norm", "dim", dim)
    check_int("spectral_norm", "n_power_iterations", n_power_iterations)
    if not eps > 0:
        raise ValueError(f"spectral_norm: {where}: eps must be positive, got eps={eps!r}.")
    parametrization = SpectralNorm(weight, n_power_iterations, dim, eps, label=where)
    return attach(module, name, parametrization, unsafe=False)
