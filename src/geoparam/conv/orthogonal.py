"""Orthogonal convolutions: layers whose convolution operator is orthogonal (1-Lipschitz)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..linalg import cayley, stiefel_cayley

__all__ = ["OrthogonalConv1d", "OrthogonalConv2d"]


def _space_to_channels(x: Tensor, stride: int, dims: int) -> Tensor:
    """``(B, C, *S)`` to ``(B, C·s^d, *S/s)``: each s x s block's entries become channels.

    A permutation of the entries (``pixel_unshuffle`` in 2-D), so an isometry: the orthogonal
    layers take their stride with it (Trockman & Kolter 2021, "invertible downsampling").
    """
    if stride == 1:
        return x
    batch, channels, *sizes = x.shape
    split = [batch, channels]
    for size in sizes:
        split += [size // stride, stride]
    x = x.reshape(split)
    # (B, C, S1, s, S2, s, ...) -> (B, C, s, s, ..., S1, S2, ...)
    order = [0, 1, *range(3, 2 + 2 * dims, 2), *range(2, 2 + 2 * dims, 2)]
    x = x.permute(order)
    return x.reshape(batch, channels * stride**dims, *(size // stride for size in sizes))


class _OrthogonalConvNd(nn.Module):
    """Shared by the 1-D and 2-D layers; ``dims`` is the number of spatial dimensions."""

    dims: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for argument, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("stride", stride),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {argument} must be a positive int, got {value!r}.")
        if dtype is not None and (not dtype.is_floating_point or dtype.itemsize < 4):
            raise ValueError(
                f"{name}: dtype must be float32 or float64 (the FFTs and per-frequency solves "
                f"need them), got {dtype}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        channels_in = in_channels * stride**self.dims
        shape = (out_channels, channels_in, *(kernel_size,) * self.dims)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A small random kernel (the map starts near the identity, where Cayley is flattest)."""
        fan_in = self.weight[0].numel()
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(fan_in))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}{bias}"
        )

    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.ndim != self.dims + 2 or x.size(1) != self.in_channels:
            raise ValueError(
                f"{name}: expected an input of shape (batch, {self.in_channels}, "
                f"{', '.join(['size'] * self.dims)}), got {tuple(x.shape)}."
            )
        sizes = x.shape[2:]
        if any(size % self.stride for size in sizes):
            raise ValueError(
                f"{name}: the spatial sizes {tuple(sizes)} must be multiples of the stride "
                f"{self.stride}."
            )
        if any(size // self.stride < self.kernel_size for size in sizes):
            raise ValueError(
                f"{name}: the spatial sizes {tuple(sizes)} (after the stride {self.stride}) must "
                f"be at least the kernel size {self.kernel_size}."
            )

    def frequency_matrices(self, sizes: tuple[int, ...]) -> Tensor:
        """The orthogonal ``out x in`` matrix of every frequency, for inputs of ``sizes``.

        ``sizes`` are the spatial sizes after the stride's reshuffle. Shape
        ``(*sizes[:-1], sizes[-1] // 2 + 1, out_channels, in_channels · stride^d)``: the
        frequencies of a real FFT over the spatial dimensions.
        """
        dims = tuple(range(-self.dims, 0))
        # The kernel, zero-padded to the input's size and centred on index 0, so that the
        # circular convolution is aligned with the input as a "same" convolution is.
        padded = self.weight.new_zeros(*self.weight.shape[:2], *sizes)
        padded[(..., *(slice(0, self.kernel_size),) * self.dims)] = self.weight
        padded = padded.roll(shifts=(-(self.kernel_size // 2),) * self.dims, dims=dims)
        # The circular convolution with this kernel acts at frequency ω as the matrix K(ω) (the
        # DFT of the kernel, conjugated because torch's convolutions are correlations).
        spectrum = torch.fft.rfftn(padded, dim=dims).conj()
        spectrum = spectrum.movedim(0, -1).movedim(0, -1)  # (*frequencies, out, in)
        rows, columns = spectrum.shape[-2:]
        if rows == columns:
            # The square case of the tall map below, by the square kernel, whose backward is
            # two products instead of a second solve.
            lower = spectrum.tril()
            return cayley(lower - lower.mH)
        if rows > columns:
            return stiefel_cayley(spectrum)
        return stiefel_cayley(spectrum.mH).mH

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = _space_to_channels(x, self.stride, self.dims)
        sizes = tuple(x.shape[2:])
        dims = tuple(range(-self.dims, 0))
        Q = self.frequency_matrices(sizes)
        spectrum = torch.fft.rfftn(x, dim=dims)  # (B, in, *frequencies)
        # One (out x in) @ (in x B) product per frequency: the batch as the columns, rather
        # than B·∏F matrix-vector products.
        columns = spectrum.movedim(0, -1).movedim(0, -2)  # (*frequencies, in, B)
        out = (Q @ columns).movedim(-1, 0).movedim(-1, 1)  # (B, out, *frequencies)
        y = torch.fft.irfftn(out, s=sizes, dim=dims)
        if self.bias is not None:
            y = y + self.bias.view(-1, *(1,) * self.dims)
        return y


class OrthogonalConv2d(_OrthogonalConvNd):
    r"""A 2-D convolution whose operator is orthogonal: exactly norm-preserving, 1-Lipschitz.

    The layer convolves circularly (the input is periodic: the output has the input's size,
    divided by ``stride``). A circular convolution acts on the 2-D DFT of its input frequency by
    frequency, as the ``out x in`` matrix ``K(ω)`` of kernel DFTs. The layer replaces each
    ``K(ω)`` by its Cayley transform ``Q(ω)`` (Trockman & Kolter, "Orthogonalizing
    convolutional layers with the Cayley transform", ICLR 2021), computed on the batch of all
    frequencies by :func:`geoparam.linalg.cayley` (square ``K``) or the tall-weight kernel
    :func:`geoparam.linalg.stiefel_cayley` (``O(c³)`` per frequency, with ``c`` the channels; the
    input is multiplied frequency by frequency with the batch as columns): ``Q(ω)`` has
    orthonormal columns (rows, when
    ``out < in``), so ``‖f(x) − f(y)‖ = ‖x − y‖`` when ``out_channels >= in_channels · stride²``
    and ``≤`` otherwise (before the bias). Since the kernel is real, ``Q(-ω) = conj(Q(ω))`` and
    the output is real. ``stride = s`` first moves each ``s x s`` block of the input into
    channels (``pixel_unshuffle``, a permutation), so the convolution sees
    ``in_channels · s²`` channels.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: side of the square kernel (at most the input's side after the stride).
        stride: downsampling factor; the input's sides must be multiples of it. Default: ``1``.
        bias: whether to add a learnable bias. Default: ``True``.
        device, dtype: of the parameters (float32 or float64).

    Raises:
        ValueError: a non-positive or non-integer size; a dtype other than float32/float64; at
            call time, an input of the wrong shape, sides not multiples of ``stride``, or
            smaller than the kernel.

    Example:
        >>> layer = OrthogonalConv2d(4, 4, 3, bias=False)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> torch.allclose(layer(x).norm(), x.norm(), rtol=1e-5)
        True
        >>> OrthogonalConv2d(4, 8, 3, stride=2)(x).shape
        torch.Size([2, 8, 4, 4])
    """

    dims = 2


class OrthogonalConv1d(_OrthogonalConvNd):
    r"""A 1-D convolution whose operator is orthogonal: the 1-D case of :class:`OrthogonalConv2d`.

    Circular, per-frequency Cayley transforms of the kernel's DFT; ``stride = s`` moves each
    run of ``s`` entries into channels first.

    Example:
        >>> layer = OrthogonalConv1d(3, 6, 5, bias=False)
        >>> x = torch.randn(2, 3, 16)
        >>> torch.allclose(layer(x).norm(), x.norm(), rtol=1e-5)
        True
    """

    dims = 1
