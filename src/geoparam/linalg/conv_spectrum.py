r"""The exact spectrum of a circular convolution, and a projection of its kernel onto a norm ball.

A circular ("periodic") convolution with ``c_in`` input and ``c_out`` output channels on inputs
of spatial size ``N = (N_1, ..., N_d)`` is block circulant: the ``d``-dimensional DFT, applied
to every channel, turns it into one ``c_out x c_in`` matrix per frequency, namely the DFT of the
kernel zero-padded to ``N``. Its singular values are therefore those of ``∏ N_j`` small
matrices (Sedghi, Gupta & Long, "The singular values of convolutional layers", ICLR 2019), which
is both exact and far cheaper than a dense SVD of the ``(c_out ∏N) x (c_in ∏N)`` operator.

A stride ``s`` keeps every ``s``-th output. Downsampling folds the ``s`` frequencies
``ω, ω + N/s, ..., ω + (s-1) N/s`` onto one, so the strided operator is, in unitary DFT bases,
block diagonal with one ``c_out x (c_in s^d)`` block per output frequency: the ``s^d``
aliased kernel matrices side by side, divided by ``√(s^d)``.

References:
    H. Sedghi, V. Gupta, P. M. Long, "The singular values of convolutional layers", ICLR 2019
    (the spectrum, and the clip-and-truncate projection of the kernel).

    H. H. Bauschke, J. M. Borwein, "On projection algorithms for solving convex feasibility
    problems", SIAM Review 38(3), 1996 (alternating projections onto two convex sets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._precision import working_dtype

__all__ = ["conv_singular_values", "project_conv_operator_norm"]


def _positive_ints(value: int | Sequence[int], name: str, dims: int, caller: str) -> tuple:
    """``value`` as a ``dims``-tuple of positive ints (an int is repeated)."""
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            f"{caller}: {name} must be a positive int or a sequence of {dims} positive ints, "
            f"got {value!r}."
        )
    return values


def _check(
    caller: str,
    weight: Tensor,
    input_size: Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
    stride: int | Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate the arguments; return ``input_size``, ``dilation``, ``stride`` as tuples."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{caller}: weight must be a Tensor, got {type(weight).__name__}.")
    if not (weight.dtype.is_floating_point or weight.dtype.is_complex):
        raise TypeError(f"{caller}: weight must be real or complex floating, got {weight.dtype}.")
    if weight.ndim not in (3, 4, 5) or 0 in weight.shape:
        raise ValueError(
            f"{caller}: weight must have shape (c_out, c_in / groups, *kernel) with 1, 2 or 3 "
            f"non-empty kernel dimensions, got {tuple(weight.shape)}."
        )
    dims = weight.ndim - 2
    if isinstance(input_size, int) or len(input_size) != dims:
        raise ValueError(
            f"{caller}: input_size must give the {dims} spatial size(s) of the input for a "
            f"kernel of shape {tuple(weight.shape[2:])}, got {input_size!r}."
        )
    sizes = _positive_ints(input_size, "input_size", dims, caller)
    dilation = _positive_ints(dilation, "dilation", dims, caller)
    stride = _positive_ints(stride, "stride", dims, caller)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{caller}: groups must be a positive int, got {groups!r}.")
    if weight.size(0) % groups:
        raise ValueError(
            f"{caller}: groups={groups} must divide the output channels c_out={weight.size(0)}."
        )
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:], strict=True))
    if any(e > n for e, n in zip(extent, sizes, strict=True)):
        raise ValueError(
            f"{caller}: input_size {sizes} is smaller than the kernel's extent {extent} "
            f"(kernel {tuple(weight.shape[2:])}, dilation {dilation})."
        )
    if any(n % s for n, s in zip(sizes, stride, strict=True)):
        raise ValueError(f"{caller}: input_size {sizes} must be a multiple of stride {stride}.")
    return sizes, dilation, stride


def _support(weight: Tensor, dilation: tuple[int, ...]) -> tuple[slice, ...]:
    """Where the dilated kernel's taps sit in the zero-padded kernel."""
    kernel = weight.shape[2:]
    return (..., *(slice(0, d * (k - 1) + 1, d) for d, k in zip(dilation, kernel, strict=True)))


def _spectrum(weight: Tensor, sizes: tuple[int, ...], dilation: tuple[int, ...]) -> Tensor:
    """DFT over the spatial dimensions of the dilated kernel, zero-padded to ``sizes``."""
    padded = weight.new_zeros(*weight.shape[:2], *sizes)
    padded[_support(weight, dilation)] = weight
    return torch.fft.fftn(padded, dim=tuple(range(2, weight.ndim)))


def _block_order(dims: int) -> list[int]:
    # Axes of (g, c_out/g, c_in/g, s_1, M_1, ..., s_d, M_d): the output frequencies M_j lead (the
    # batch), then the group and the rows, then the columns: input channel and aliases s_j.
    return [*range(4, 3 + 2 * dims, 2), 0, 1, 2, *range(3, 3 + 2 * dims, 2)]


def _to_blocks(spectrum: Tensor, groups: int, stride: tuple[int, ...]) -> Tensor:
    """``(c_out, c_in/g, *N)`` to ``(*N/s, g, c_out/g, c_in/g · ∏s)``: the operator's blocks.

    Frequency ``a · N/s + ω`` (``0 ≤ a < s``) aliases onto output frequency ``ω``; the DFTs'
    normalisation leaves the factor ``1/√∏s`` on each block.
    """
    c_out, c_in_group, *sizes = spectrum.shape
    split = [groups, c_out // groups, c_in_group]
    for n, s in zip(sizes, stride, strict=True):
        split += [s, n // s]
    blocks = spectrum.reshape(split).permute(_block_order(len(sizes)))
    columns = c_in_group * math.prod(stride)
    blocks = blocks.reshape(*blocks.shape[: len(sizes) + 2], columns)
    return blocks / math.sqrt(math.prod(stride))


def _from_blocks(blocks: Tensor, shape: torch.Size, groups: int, stride: tuple[int, ...]) -> Tensor:
    """The inverse of :func:`_to_blocks`, back to a spectrum of ``shape``."""
    c_out, c_in_group, *sizes = shape
    dims = len(sizes)
    frequencies = (n // s for n, s in zip(sizes, stride, strict=True))
    blocks = blocks.reshape(*frequencies, groups, c_out // groups, c_in_group, *stride)
    blocks = blocks * math.sqrt(math.prod(stride))
    inverse = sorted(range(3 + 2 * dims), key=_block_order(dims).__getitem__)
    return blocks.permute(inverse).reshape(shape)


def conv_singular_values(
    weight: Tensor,
    input_size: Sequence[int],
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    stride: int | Sequence[int] = 1,
) -> Tensor:
    r"""All singular values of a circular convolution, exactly, from the DFT of its kernel.

    For the kernel ``W`` zero-padded (after dilation) to the input's spatial size ``N`` and
    transformed, ``K(ω) = Σ_m W[:, :, m] e^{-2πi⟨ω, m/N⟩}`` is a ``c_out x c_in`` matrix for each of
    the ``∏N_j`` frequencies ``ω``. The DFT diagonalises every circular shift, so in unitary DFT
    bases the convolution is block diagonal with blocks ``K(ω)`` (or ``K(-ω)``: torch convolves
    by cross-correlation, which permutes the frequencies and leaves the set of blocks alone), and
    its singular values are those of all the ``K(ω)`` together (Sedghi, Gupta & Long, ICLR 2019).
    With ``groups = g`` the channel matrix is block diagonal, so each group's
    ``c_out/g x c_in/g`` block is taken on its own; the count is the same,
    ``∏N_j · min(c_out, c_in)``. Any circular padding whose total is the dilated kernel's
    extent minus one (so the output has the input's size) gives these values: how it splits
    between the two sides only shifts the input, an orthogonal map.

    With ``stride = s`` (every ``s_j``-th output along dimension ``j``), the output frequency
    ``ω`` of the ``N/s`` grid collects the aliased input frequencies ``ω + a ⊙ N/s``,
    ``0 ≤ a_j < s_j``, and the block there is ``[K(ω + a ⊙ N/s)]_a / √∏s_j``, a
    ``c_out x (c_in ∏s_j)`` matrix; the count is then ``∏(N_j/s_j) · min(c_out, c_in ∏s_j)``.
    This covers torch's strided circular convolutions whose output has size ``N/s``, which is
    the case whenever ``s`` divides ``N`` and the total padding is the kernel's extent minus one
    (``padding=k//2`` for an odd ``k``).

    The cost is one FFT of the kernel and a batched ``svdvals``, ``O(∏N · c_out c_in min(c_out,
    c_in))``, against ``O((∏N)³ c³)`` for the dense operator. The values are differentiable
    with respect to ``weight`` (through ``torch.linalg.svdvals``).

    Args:
        weight: kernel of shape ``(c_out, c_in / groups, *kernel)`` with 1, 2 or 3 spatial
            dimensions, real or complex. ``float16`` and ``bfloat16`` are computed in single
            precision and the result cast back.
        input_size: spatial size ``(L,)``, ``(H, W)`` or ``(D, H, W)`` of the (periodic) input,
            each at least the dilated kernel extent ``dilation · (k - 1) + 1`` and a multiple of
            ``stride``.
        dilation: spacing of the kernel taps, an int or one per spatial dimension.
        groups: as ``nn.Conv2d``'s; must divide ``c_out``.
        stride: step of the output, an int or one per spatial dimension.

    Returns:
        A 1-D real tensor of length ``∏(N_j / s_j) · min(c_out, c_in ∏s_j)`` (with
        ``c_in = weight.size(1) · groups``), sorted in descending order; its first entry is the
        operator norm (the layer's Lipschitz constant).

    Raises:
        TypeError: a weight that is not a floating or complex tensor.
        ValueError: a weight that is not 3-, 4- or 5-dimensional; ``input_size`` of the wrong
            length, not positive, smaller than the dilated kernel, or not a multiple of
            ``stride``; ``groups`` not dividing ``c_out``; a non-positive dilation or stride.

    Example:
        The 1-D kernel ``[1, 2, 1]`` has the DFT ``e^{-iθ}(2 + 2 cos θ)``, ``θ = 2πk/8``:

        >>> conv_singular_values(torch.tensor([[[1.0, 2.0, 1.0]]]), (8,)).round(decimals=4)
        tensor([4.0000, 3.4142, 3.4142, 2.0000, 2.0000, 0.5858, 0.5858, 0.0000])

        The squares sum to the operator's squared Frobenius norm, ``∏N · ‖W‖²``:

        >>> W = torch.randn(4, 3, 3, 3, dtype=torch.float64)
        >>> sigma = conv_singular_values(W, (8, 8))
        >>> sigma.shape
        torch.Size([192])
        >>> torch.allclose(sigma.square().sum(), 64 * W.square().sum())
        True
    """
    sizes, dilation, stride = _check(
        "conv_singular_values", weight, input_size, dilation, groups, stride
    )
    work = working_dtype(weight.dtype)
    spectrum = _spectrum(weight.to(work), sizes, dilation)
    sigma = torch.linalg.svdvals(_to_blocks(spectrum, groups, stride))
    return sigma.flatten().sort(descending=True).values.to(weight.dtype.to_real())


@torch.no_grad()
def project_conv_operator_norm(
    weight: Tensor,
    input_size: Sequence[int],
    max_norm: float = 1.0,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    stride: int | Sequence[int] = 1,
    iterations: int = 1,
) -> Tensor:
    r"""A kernel near ``weight`` whose circular convolution has operator norm about ``max_norm``.

    Each iteration alternates two Frobenius-nearest-point maps, as Sedghi, Gupta & Long (ICLR
    2019) do:

    1. *Clip*: in every block ``B = U diag(σ) Vᴴ`` of the operator (see
       :func:`conv_singular_values`), replace ``σ`` by ``min(σ, max_norm)``. Since the DFT is
       unitary, this is the nearest operator, in the Frobenius norm, with norm ``≤ max_norm``
       among all convolutions whose kernel fills the whole input (support ``N``).
    2. *Truncate*: invert the DFT and keep only the original kernel's taps (the dilated support),
       the nearest kernel of the original shape.

    After a truncation the norm can again exceed ``max_norm``, so the result is only about
    within the bound. Both sets are convex and both contain the zero kernel, so the alternation
    converges to a kernel inside both (Bauschke & Borwein 1996), though not necessarily to the
    nearest one, and the excess shrinks with ``iterations``. Measured on random Gaussian
    ``8 x 8 x 3 x 3`` kernels (operator norm about 16) on a ``16 x 16`` input with
    ``max_norm = 1``: the norm after 1 / 5 / 20 / 50 iterations is about
    ``1.4 / 1.08 / 1.02 / 1.006``; on ``4 x 3 x 3 x 3`` kernels on ``8 x 8``, at most ``1.014``
    after 20 (over 30 kernels; ``tests/linalg/test_conv_spectrum.py`` allows ``1.02``). When
    the kernel fills the input, there is no truncation and one iteration is exact. An iteration
    in which no singular value exceeds ``max_norm`` changes nothing, so a kernel already within
    the bound comes back unchanged (as a copy), and the loop stops there.

    Args:
        weight: kernel of shape ``(c_out, c_in / groups, *kernel)``, as for
            :func:`conv_singular_values`; ``float16`` and ``bfloat16`` are computed in single
            precision.
        input_size: spatial size of the periodic input.
        max_norm: bound on the operator norm (``> 0``).
        dilation, groups, stride: as for :func:`conv_singular_values`.
        iterations: number of clip-and-truncate rounds (``>= 1``).

    Returns:
        A tensor of ``weight``'s shape and dtype, detached (the projection is not
        differentiated).

    Raises:
        TypeError, ValueError: as :func:`conv_singular_values`; also a ``max_norm`` that is not
            positive and finite, or ``iterations < 1``.

    Example:
        >>> W = torch.randn(4, 4, 3, 3, dtype=torch.float64)
        >>> P = project_conv_operator_norm(W, (8, 8), 1.0, iterations=20)
        >>> bool(conv_singular_values(P, (8, 8))[0] < 1.05)
        True
        >>> small = W / (2 * conv_singular_values(W, (8, 8))[0])
        >>> torch.equal(project_conv_operator_norm(small, (8, 8)), small)
        True
    """
    caller = "project_conv_operator_norm"
    sizes, dilation, stride = _check(caller, weight, input_size, dilation, groups, stride)
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
        raise ValueError(f"{caller}: max_norm must be a positive number, got {max_norm!r}.")
    if not (0 < max_norm < math.inf):
        raise ValueError(f"{caller}: max_norm must be positive and finite, got {max_norm!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{caller}: iterations must be an int >= 1, got {iterations!r}.")
    kernel = weight.detach().to(working_dtype(weight.dtype), copy=True)
    dims = tuple(range(2, weight.ndim))
    for _ in range(iterations):
        spectrum = _spectrum(kernel, sizes, dilation)
        blocks = _to_blocks(spectrum, groups, stride)
        U, sigma, Vh = torch.linalg.svd(blocks, full_matrices=False)
        excess = (sigma - max_norm).clamp_min(0)
        if not excess.any():
            break
        # Subtracting the excess, rather than rebuilding U diag(min(σ, c)) Vᴴ, leaves the
        # unclipped part of each block as it was, without the reconstruction's rounding.
        blocks = blocks - (U * excess.unsqueeze(-2).to(U.dtype)) @ Vh
        padded = torch.fft.ifftn(_from_blocks(blocks, spectrum.shape, groups, stride), dim=dims)
        if not kernel.is_complex():
            padded = padded.real
        kernel = padded[_support(kernel, dilation)].clone()
    return kernel.to(weight.dtype)
