"""The front doors of weight and spectral normalisation (torch's, as drop-ins)."""

from __future__ import annotations

import torch
from torch import nn

from ..conv import ConvSpectralNorm
from ..linalg.conv import ConvOperator
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
    *,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    r"""Divide ``module.<name>`` by its spectral norm: ``W / σ(W)``, estimated by power iteration.

    A drop-in for :func:`torch.nn.utils.parametrizations.spectral_norm`: buffers ``_u`` and
    ``_v`` hold the singular-vector estimates, warmed up by 15 iterations here and refined by
    ``n_power_iterations`` each time the weight is read in training mode. Weights with more than
    two dimensions are reshaped to ``(size(dim), -1)``; a 1-D weight is divided by its norm.
    Checkpoints of torch's older hook-based :func:`torch.nn.utils.spectral_norm` (keys
    ``<name>_orig``, ``<name>_u``, ``<name>_v``) load too.

    With ``input_shape`` (geoparam only), a convolution's kernel is divided by the norm of the
    convolution as an operator on inputs of that shape, its Lipschitz constant, instead of the
    norm of the reshaped kernel, which can be several times smaller (see
    :class:`geoparam.conv.ConvSpectralNorm`): the layer's stride, padding and padding mode,
    dilation and groups are taken into account, for ``Conv1d/2d/3d`` and
    ``ConvTranspose1d/2d/3d``. The estimate is one persistent buffer ``_u`` shaped like an input.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        n_power_iterations: power iterations per training-mode read. Default: ``1``.
        eps: floor on norms in the power iteration. Default: ``1e-12``.
        dim: the output dimension. Default: ``1`` for ``ConvTranspose1d/2d/3d``, else ``0``.
            Not used with ``input_shape``.
        input_shape: the shape of one input of a convolution layer, without the batch:
            ``(C, L)``, ``(C, H, W)`` or ``(C, D, H, W)``. Default: ``None`` (torch's
            normalisation of the reshaped kernel).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; ``n_power_iterations <= 0``; ``eps <= 0``;
            ``input_shape`` for a module that is not a convolution, for another tensor than its
            ``weight``, with ``dim``, or of the wrong length or channels.
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
    if input_shape is None:
        if dim is None:
            dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
        check_int("spectral_norm", "dim", dim)
    check_int("spectral_norm", "n_power_iterations", n_power_iterations)
    if not eps > 0:
        raise ValueError(f"spectral_norm: {where}: eps must be positive, got eps={eps!r}.")
    if input_shape is not None:
        if dim is not None:
            raise ValueError(
                f"spectral_norm: {where}: dim has no meaning with input_shape (the operator's "
                "norm does not reshape the kernel); leave it out."
            )
        operator, shape = _conv_operator(module, name, where, input_shape)
        parametrization = ConvSpectralNorm(
            weight, operator, shape, n_power_iterations, eps, label=where
        )
        return attach(module, name, parametrization, unsafe=False)
    parametrization = SpectralNorm(weight, n_power_iterations, dim, eps, label=where)
    return attach(module, name, parametrization, unsafe=False)


def _conv_operator(
    module: nn.Module, name: str, where: str, input_shape: object
) -> tuple[ConvOperator, tuple[int, ...]]:
    """The operator of a convolution layer and the checked shape of its input."""
    if not isinstance(module, nn.modules.conv._ConvNd) or name != "weight":
        raise ValueError(
            f"spectral_norm: {where}: input_shape applies to the weight of a convolution "
            "(Conv1d/2d/3d, ConvTranspose1d/2d/3d)."
        )
    dims = len(module.kernel_size)
    try:
        shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"spectral_norm: {where}: input_shape must be a sequence of ints, got {input_shape!r}."
        ) from None
    if len(shape) != dims + 1 or shape[0] != module.in_channels or min(shape) <= 0:
        layout = ("C", "L") if dims == 1 else ("C", "H", "W") if dims == 2 else ("C", "D", "H", "W")
        raise ValueError(
            f"spectral_norm: {where}: input_shape must be ({', '.join(layout)}) with C = "
            f"in_channels = {module.in_channels} and positive sizes, got {shape}."
        )
    transposed = isinstance(module, _CONV_TRANSPOSE)
    operator = ConvOperator(
        dims=dims,
        stride=tuple(module.stride),
        padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
        dilation=tuple(module.dilation),
        groups=module.groups,
        padding_mode=module.padding_mode,
        pad=tuple(getattr(module, "_reversed_padding_repeated_twice", ())),
        transposed=transposed,
        output_padding=tuple(module.output_padding) if transposed else (),
    )
    return operator, shape
