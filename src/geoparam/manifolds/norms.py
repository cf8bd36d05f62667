"""Norm constraints: weight normalisation and spectral normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..linalg import power_iteration_
from ._base import Parametrization
from ._reuse import cached_evaluation
from ._validation import check_power_iterations

__all__ = ["SpectralNorm", "WeightNorm"]


class WeightNorm(Parametrization):
    r"""Splits a weight into a magnitude ``g`` and a direction ``v``: ``w = g · v / ‖v‖``.

    The norm is taken over every dimension but ``dim`` (Salimans & Kingma, "Weight
    Normalization", NeurIPS 2016). ``dim=None`` (stored as ``-1``, as torch does) uses the norm of
    the whole tensor; other negative values count from the end, except ``-1`` which torch reserves
    for the whole tensor. The two tensors are registered as ``original0`` (``g``) and
    ``original1`` (``v``), the keys of :func:`torch.nn.utils.parametrizations.weight_norm`.

    A zero weight (a zero-initialised layer), or a zero slice of it, is stored as ``g = 0`` with
    a random direction ``v`` there (a normal draw, the only one registration makes): ``w`` is
    zero, with finite gradients, and training moves ``g`` away from zero. torch stores ``v = 0``
    there, and its formula gives ``0/0 = NaN``. (A checkpoint that holds a zero ``v`` slice
    gives NaN in both libraries.)

    Weight normalisation re-parametrizes without constraining: every finite tensor of the shape
    is a value it can take (:meth:`in_manifold`).

    Args:
        dim: the dimension kept by the norm, or ``None`` for the whole tensor. Default: ``0``.
        shape: the weight's shape, to check assignments against. Default: not checked.
        label: how error messages name the tensor (e.g. ``"Linear.weight"``). Default: none.
        dtype: the weight's dtype. Default: torch's default dtype.
        device: the weight's device. Default: the CPU.

    Example:
        >>> param = WeightNorm(dim=0)
        >>> g, v = param.right_inverse(torch.randn(4, 3))
        >>> g.shape, v.shape
        (torch.Size([4, 1]), torch.Size([4, 3]))
    """

    projects_assignments = True  # every finite tensor is a value it takes

    def __init__(
        self,
        dim: int | None = 0,
        *,
        shape: torch.Size | None = None,
        label: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        label = label or "the weight-normalised tensor"
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.dim = -1 if dim is None else dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _evaluate(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        if weight_v.numel() == 0:
            # torch's kernel divides by zero (a floating-point exception) on an empty tensor.
            return weight_v * weight_g
        # torch's fused kernel: the same speed and rounding as torch's weight_norm.
        return torch._weight_norm(weight_v, weight_g, self.dim)

    def _right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(g, v)``: ``g`` the norm over every dimension but ``dim``, ``v = weight``.

        Where ``weight`` is zero over a slice (a whole tensor, for ``dim=None``), ``g`` is zero
        and ``v`` a random direction instead, so that ``g · v / ‖v‖`` is zero and finite.
        """
        g = _squared_norms(weight, self.dim).sqrt()
        zero = g == 0
        if weight.device.type != "meta" and bool(zero.any()):
            direction = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
            weight = torch.where(zero, direction, weight)
        return g, weight

    def _in_manifold(self, value: Tensor, atol: float | None) -> bool:
        return bool(torch.isfinite(value).all())

    def legacy_state_keys(self) -> dict[str, str | None]:
        """``weight_g``, ``weight_v`` of torch's hook-based ``torch.nn.utils.weight_norm``."""
        return {"_g": "original0", "_v": "original1"}


def _squared_norms(v: Tensor, dim: int) -> Tensor:
    """``Σ v²`` over every dimension but ``dim`` (all, for ``-1``), shaped like torch's ``g``.

    The shapes of :func:`torch.norm_except_dim`, which fails on tensors with no elements.
    """
    if dim == -1:
        return (v * v).sum()
    kept = dim % v.ndim
    others = [d for d in range(v.ndim) if d != kept]
    # (An empty list would mean "every dimension" to sum.)
    return (v * v).sum(dim=others, keepdim=True) if others else v * v


class SpectralNorm(Parametrization):
    r"""Divides a weight by its largest singular value: ``W / σ(W)``.

    ``σ`` is estimated by power iteration on the weight reshaped to a matrix with ``dim`` as its
    rows (Miyato et al., ICLR 2018). The singular-vector estimates ``_u`` and ``_v`` are
    persistent buffers, warmed up by 15 iterations at construction and refined by
    ``n_power_iterations`` more each time the weight is read in training mode; in eval mode they
    are frozen, so the weight is a fixed function of the parameter. A 1-D weight is simply
    divided by its norm, which is exact.

    Args:
        weight: the weight to be normalised (used for its shape and initial vectors).
        n_power_iterations: power iterations per read in training mode. Default: ``1``.
        dim: the dimension of output features. Default: ``0``.
        eps: floor on norms in the power iteration. Default: ``1e-12``.
        label: how error messages name the tensor (e.g. ``"Linear.weight"``). Default: none.

    Raises:
        IndexError: ``dim`` is out of range for the weight.
        ValueError: ``n_power_iterations`` is not positive.

    Example:
        >>> W = torch.randn(6, 4)
        >>> param = SpectralNorm(W, n_power_iterations=3)
        >>> round(float(torch.linalg.matrix_norm(param(W), 2)), 2)
        1.0
    """

    _u: Tensor
    _v: Tensor
    projects_assignments = True  # any weight is normalised, as in torch

    def __init__(
        self,
        weight: Tensor,
        n_power_iterations: int = 1,
        dim: int = 0,
        eps: float = 1e-12,
        *,
        label: str | None = None,
    ) -> None:
        label = label or "the spectrally normalised tensor"
        super().__init__(weight.shape, label=label, dtype=weight.dtype, device=weight.device)
        ndim = weight.ndim
        # The messages end with torch's wording, for code that matches on it.
        if not -ndim <= dim < ndim:
            raise IndexError(
                f"spectral_norm: {self.label} of shape {tuple(weight.shape)}: Dimension out of "
                f"range (expected to be in range of [-{ndim}, {ndim - 1}] but got {dim})"
            )
        check_power_iterations(n_power_iterations, self.label)
        self.dim = dim % ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = self._as_matrix(weight)
            h, w = weight_mat.shape
            u = F.normalize(weight_mat.new_empty(h).normal_(0, 1), dim=0, eps=eps)
            v = F.normalize(weight_mat.new_empty(w).normal_(0, 1), dim=0, eps=eps)
            self.register_buffer("_u", u)
            self.register_buffer("_v", v)
            power_iteration_(weight_mat, self._u, self._v, 15, eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"

    def _as_matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def forward(self, weight: Tensor) -> Tensor:
        # A training-mode read refines u and v (a side effect torch's semantics give every read):
        # those reads are reused only inside an explicit geoparam.cached() scope.
        return cached_evaluation(self, self._evaluate, (weight,), side_effects=self.training)

    def _evaluate(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._as_matrix(weight)
        if self.training:
            power_iteration_(weight_mat, self._u, self._v, self.n_power_iterations, self.eps)
        if self.training:
            # Copies, because the in-place updates of a second forward (the GAN pattern: D(real)
            # and D(fake) before one backward) must not overwrite what the first one's graph
            # saved. The power iteration has just normalised them.
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
        else:
            # Normalised: vectors averaged by an EMA of the buffers
            # (AveragedModel(use_buffers=True)) are not unit vectors any more.
            u = F.normalize(self._u, dim=0, eps=self.eps)
            v = F.normalize(self._v, dim=0, eps=self.eps)
        sigma = torch.vdot(u, torch.mv(weight_mat, v))
        # A zero weight (a zero-initialised layer) has σ = 0: it is left as it is, zero, with
        # finite gradients, where W / σ would give 0/0 = NaN.
        return weight / torch.where(sigma.abs() > self.eps, sigma, torch.ones_like(sigma))

    @torch.no_grad()
    def reinitialize_(self, weight: Tensor) -> None:
        """Draw new singular-vector estimates for ``weight`` and warm them up (15 iterations).

        For a weight given new values (``geoparam.reset_parametrizations``, or after
        ``to_empty()``, when the buffers hold whatever memory they were given).
        """
        if weight.ndim == 1:
            return
        weight_mat = self._as_matrix(weight)
        self._u.normal_()
        self._v.normal_()
        F.normalize(self._u, dim=0, eps=self.eps, out=self._u)
        F.normalize(self._v, dim=0, eps=self.eps, out=self._v)
        power_iteration_(weight_mat, self._u, self._v, 15, self.eps)

    def _right_inverse(self, value: Tensor) -> Tensor:
        # Stored as it is: any non-zero weight is a pre-image of its normalised self.
        return value

    def _in_manifold(self, value: Tensor, atol: float | None) -> bool:
        # The power iteration estimates σ from below, so a normalised weight's spectral norm
        # can exceed 1 by the estimate's error: 1e-3 by default.
        tolerance = 1e-3 if atol is None else atol
        if value.ndim == 1:
            return bool(torch.linalg.vector_norm(value) <= 1 + tolerance)
        return bool(torch.linalg.matrix_norm(self._as_matrix(value), 2) <= 1 + tolerance)

    def legacy_state_keys(self) -> dict[str, str | None]:
        """``weight_orig``, ``weight_u``, ``weight_v`` of torch's hook-based ``spectral_norm``.

        A 1-D weight is normalised exactly and keeps no vectors: its old ones are dropped.
        """
        vectors = hasattr(self, "_u")
        return {
            "_orig": "original",
            "_u": "0._u" if vectors else None,
            "_v": "0._v" if vectors else None,
        }
