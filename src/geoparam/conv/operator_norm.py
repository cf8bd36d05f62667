"""Spectral normalisation of a convolution's operator: the parametrization behind
``geoparam.spectral_norm(conv, input_shape=...)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..linalg.conv import ConvOperator, operator_power_iteration_
from ..manifolds._base import Parametrization
from ..manifolds._reuse import cached_evaluation
from ..manifolds._validation import check_power_iterations

__all__ = ["ConvSpectralNorm"]

# Iterations run when the estimate is first drawn (registration, re-initialisation), as torch's
# spectral_norm runs 15 on the reshaped kernel; the operator's spectrum is denser near its top,
# so more are needed for the same accuracy.
_WARMUP_ITERATIONS = 50


class ConvSpectralNorm(Parametrization):
    r"""Divides a convolution's kernel by the operator norm of the convolution: ``W / ‖conv_W‖₂``.

    The operator is the layer's map on inputs of ``input_shape`` (its stride, padding and padding
    mode, dilation and groups; transposed convolutions too), not the kernel reshaped to a matrix,
    whose norm can be smaller than the operator's by a factor up to about the kernel's size (torch's
    ``spectral_norm`` of a 3x3 ``Conv2d`` leaves operators of norm up to 2 and more). ``σ`` is
    estimated by power iteration on ``convᵀ conv`` (Gouk et al. 2021), with a persistent unit
    tensor ``_u`` shaped like one input: warmed up by 50 iterations when drawn, refined by
    ``n_power_iterations`` each time the weight is read in training mode, frozen in eval mode.
    Then ``σ = ⟨v, conv_W(u)⟩`` with ``v = conv_W(u) / ‖conv_W(u)‖`` held fixed, which is
    differentiable in ``W`` as in Miyato et al. (2018).

    Args:
        weight: the kernel (used for its shape and initial estimate).
        operator: the convolution's geometry.
        input_shape: the shape of one input, without the batch: ``(C, L)``, ``(C, H, W)`` or
            ``(C, D, H, W)``.
        n_power_iterations: power iterations per read in training mode. Default: ``1``.
        eps: floor on norms in the power iteration. Default: ``1e-12``.
        label: how messages name the tensor. Default: none.

    Raises:
        ValueError: ``n_power_iterations`` is not positive, or ``input_shape`` does not fit the
            operator (wrong length or channels, or too small for the kernel).

    Example:
        >>> from geoparam.linalg.conv import ConvOperator
        >>> op = ConvOperator(dims=2, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
        >>> W = torch.randn(8, 3, 3, 3)
        >>> param = ConvSpectralNorm(W, op, (3, 10, 10))
        >>> u = torch.nn.functional.normalize(torch.randn(1, 3, 10, 10).flatten(), dim=0)
        >>> bool(op(u.view(1, 3, 10, 10), param(W)).norm() <= 1.001)
        True
    """

    _u: Tensor
    projects_assignments = True  # any kernel is normalised

    def __init__(
        self,
        weight: Tensor,
        operator: ConvOperator,
        input_shape: tuple[int, ...],
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        *,
        label: str | None = None,
    ) -> None:
        label = label or "the convolution's kernel"
        super().__init__(weight.shape, label=label, dtype=weight.dtype, device=weight.device)
        check_power_iterations(n_power_iterations, self.label)
        self.operator = operator
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        u = weight.new_empty((1, *self.input_shape))
        if weight.device.type != "meta":
            try:
                operator(u.detach(), weight.detach())
            except RuntimeError as error:
                raise ValueError(
                    f"spectral_norm: {self.label}: input_shape={self.input_shape} does not fit "
                    f"the convolution: {error}"
                ) from None
        self.register_buffer("_u", u)
        self._draw_(weight)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, eps={self.eps}"

    @torch.no_grad()
    def _draw_(self, weight: Tensor) -> None:
        if self._u.device.type == "meta":
            return
        self._u.normal_()
        self._u.div_(torch.linalg.vector_norm(self._u).clamp_min(self.eps))
        operator_power_iteration_(
            self.operator, weight.detach(), self._u, _WARMUP_ITERATIONS, self.eps
        )

    def forward(self, weight: Tensor) -> Tensor:
        # A training-mode read refines u (a side effect): reused only inside geoparam.cached().
        return cached_evaluation(self, self._evaluate, (weight,), side_effects=self.training)

    def _evaluate(self, weight: Tensor) -> Tensor:
        if self.training:
            operator_power_iteration_(
                self.operator, weight.detach(), self._u, self.n_power_iterations, self.eps
            )
            # A copy: a second forward's in-place update must not change what the first saved.
            u = self._u.clone()
        else:
            # Normalised: an average of estimates (AveragedModel) is not a unit tensor.
            u = self._u / torch.linalg.vector_norm(self._u).clamp_min(self.eps)
        image = self.operator(u, weight)
        v = F.normalize(image.detach().flatten(), dim=0, eps=self.eps)
        sigma = torch.dot(v, image.flatten())
        # A zero kernel has σ = 0: left as it is (zero, finite gradients) rather than 0/0.
        return weight / torch.where(sigma > self.eps, sigma, torch.ones_like(sigma))

    @torch.no_grad()
    def reinitialize_(self, weight: Tensor) -> None:
        """Draw a new estimate for ``weight`` and warm it up (after new values were assigned)."""
        self._draw_(weight)

    def _right_inverse(self, value: Tensor) -> Tensor:
        # Stored as it is: any non-zero kernel is a pre-image of its normalised self.
        return value

    def _in_manifold(self, value: Tensor, atol: float | None) -> bool:
        # The operator norm by a long power iteration from the current estimate.
        tolerance = 1e-3 if atol is None else atol
        u = self._u.clone()
        operator_power_iteration_(self.operator, value, u, 200, self.eps)
        return bool(torch.linalg.vector_norm(self.operator(u, value)) <= 1 + tolerance)
