"""Convolutions as linear operators: their adjoint, their largest singular value, their spectrum.

A convolution layer with a given input size is a linear map ``x ↦ conv(x, W)`` on tensors of that
size; its operator norm (largest singular value), not the norm of the reshaped kernel, is the
layer's Lipschitz constant. This module holds the operator (:class:`ConvOperator`: stride,
padding and padding mode, dilation, groups, transposed or not), a power iteration on it, and the
exact spectrum of a circular convolution.

References:
    H. Gouk, E. Frank, B. Pfahringer, M. J. Cree, "Regularisation of neural networks by
    enforcing Lipschitz continuity", Machine Learning 110, 2021 (power iteration on the
    operator, with the transposed convolution as adjoint).

    H. Sedghi, V. Gupta, P. M. Long, "The singular values of convolutional layers", ICLR 2019
    (the spectrum of a circular convolution from the DFT of its kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ConvOperator", "operator_power_iteration_"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class ConvOperator:
    """The linear map ``x ↦ conv(x, W)`` of a convolution layer, without its bias.

    The fields are the layer's own (``nn.Conv2d.stride`` and so on); ``pad`` is the explicit
    padding applied with ``padding_mode`` before a convolution with no padding of its own, as
    ``nn.Conv2d`` does for modes other than ``"zeros"`` (its ``_reversed_padding_repeated_twice``).
    Every padding mode is linear in ``x``, so the map is linear for all of them.

    Example:
        >>> op = ConvOperator(dims=2, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
        >>> op(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)).shape
        torch.Size([1, 4, 4, 4])
    """

    dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"
    pad: tuple[int, ...] = ()
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    def __call__(self, x: Tensor, weight: Tensor) -> Tensor:
        """``conv(x, weight)`` with this geometry (``x`` has a batch dimension)."""
        if self.transposed:
            return _CONV_TRANSPOSE[self.dims](
                x, weight, None, self.stride, self.padding, self.output_padding, self.groups,
                self.dilation,
            )  # fmt: skip
        if self.padding_mode != "zeros":
            x = F.pad(x, list(self.pad), mode=self.padding_mode)
            return _CONV[self.dims](x, weight, None, self.stride, 0, self.dilation, self.groups)
        return _CONV[self.dims](
            x, weight, None, self.stride, self.padding, self.dilation, self.groups
        )

    def adjoint(self, y: Tensor, weight: Tensor, input_shape: Sequence[int]) -> Tensor:
        """``convᵀ(y)``: the adjoint of the map on inputs of shape ``input_shape`` (batch first).

        The vector-Jacobian product of the linear map, which for zero padding is the transposed
        convolution and for the other modes also folds the padding back onto the input.
        """
        x = y.new_zeros(input_shape)
        _, pullback = torch.func.vjp(lambda z: self(z, weight), x)
        return pullback(y)[0]


@torch.no_grad()
def operator_power_iteration_(
    operator: ConvOperator, weight: Tensor, u: Tensor, n_iterations: int, eps: float
) -> None:
    """Refine, in place, the estimate ``u`` of the top right singular vector of a convolution.

    Each iteration sets ``u ← normalize(convᵀ(conv(u)))``, the power iteration on ``convᵀ conv``,
    whose top eigenvalue is ``σ₁²``; afterwards ``σ₁ ≈ ‖conv(u)‖``. Where ``convᵀ(conv(u))`` is
    zero (a zero kernel), ``u`` keeps its value.

    Args:
        operator: the convolution's geometry.
        weight: its kernel.
        u: unit tensor of the input's shape with a batch dimension of 1 (``(1, C, H, W)``),
            updated in place.
        n_iterations: number of iterations (``>= 0``).
        eps: floor on the norm, to avoid dividing by zero.

    Example:
        >>> op = ConvOperator(dims=1, stride=(1,), padding=(1,), dilation=(1,), groups=1)
        >>> W = torch.tensor([[[1.0, 2.0, 1.0]]])
        >>> u = torch.nn.functional.normalize(torch.rand(1, 1, 64).flatten(), dim=0).view(1, 1, 64)
        >>> operator_power_iteration_(op, W, u, 200, 1e-12)
        >>> round(float(op(u, W).norm()), 2)  # the largest |1 + 2 cos θ + ... | is below 4
        4.0
    """
    for _ in range(n_iterations):
        x = operator.adjoint(operator(u, weight), weight, u.shape)
        norm = torch.linalg.vector_norm(x)
        torch.where(norm > eps, x / norm.clamp_min(eps), u, out=u)
