"""Products of spaces: a constraint assembled from factors that are constraints themselves."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._base import Parametrization

__all__ = ["Product"]


class Product(Parametrization):
    r"""A constraint whose points are assembled from points of other constraints.

    ``W = combine(φ₁(X₁), …, φₘ(Xₘ))``, with each factor ``φᵢ`` a :class:`Parametrization` of a
    single tensor. Low rank is Stiefel × ℝʳ × Stiefel (``W = U diag(s) Vᴴ``), a positive definite
    matrix an orthogonal eigenbasis × a positive spectrum (``W = Q diag(λ) Qᴴ``). Registered on a
    tensor, the factors' inputs are stored as ``original0``, ``original1``, … and their buffers
    (e.g. an orthogonal factor's ``base``) under ``factors.<i>``; every factor keeps its own
    dynamic trivialization, which :func:`geoparam.update_base` re-bases.

    A subclass implements :meth:`_combine` and :meth:`_split` (values of the factors whose
    combination is a given point of the set), and :meth:`_violation` and, where it can,
    :meth:`_project`, for the combined value. The evaluation of the whole product is reused as a
    unit, so each factor's map runs once per value of the inputs.

    Args:
        shape: the shape of the combined tensor.
        factors: one parametrization per stored tensor.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the combined tensor's dtype. Default: torch's default dtype.
        device: the combined tensor's device. Default: the CPU.

    Example:
        >>> from geoparam.manifolds import Orthogonal
        >>> class Rotated(Product):  # W = Q₁ Q₂: any orthogonal matrix, as a toy product
        ...     def _combine(self, Q1, Q2):
        ...         return Q1 @ Q2
        ...     def _split(self, W):
        ...         return W, torch.eye(W.size(-1))
        ...     def _violation(self, W, atol):
        ...         return None if self.factors[0].in_manifold(W) else "not orthogonal"
        >>> shape = torch.Size([3, 3])
        >>> factors = [Orthogonal(shape, "cayley"), Orthogonal(shape, "matrix_exp")]
        >>> param = Rotated(shape, factors, label="W")
        >>> X1, X2 = param.right_inverse(torch.eye(3))
        >>> torch.allclose(param(X1, X2), torch.eye(3))
        True
    """

    def __init__(
        self,
        shape: torch.Size,
        factors: Sequence[Parametrization],
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.factors = nn.ModuleList(factors)

    def _evaluate(self, *X: Tensor) -> Tensor:
        if len(X) != len(self.factors):
            raise TypeError(
                f"{self.label}: {type(self).__name__} maps {len(self.factors)} tensors, got "
                f"{len(X)}."
            )
        return self._combine(*(f._evaluate(x) for f, x in zip(self.factors, X, strict=True)))

    def _combine(self, *values: Tensor) -> Tensor:
        """The combined tensor from one value of each factor."""
        raise NotImplementedError

    def _split(self, value: Tensor) -> tuple[Tensor, ...]:
        """Values of the factors whose :meth:`_combine` is ``value`` (a point of the set)."""
        raise NotImplementedError

    @torch.no_grad()
    def _right_inverse(self, value: Tensor) -> tuple[Tensor, ...]:
        try:
            return self._factor_inputs(value)
        except NotImplementedError as error:
            # torch's register_parametrization reads NotImplementedError from right_inverse as
            # "keep the tensor as it is", which for a product of several stored tensors leaves a
            # module that cannot evaluate its weight.
            raise RuntimeError(f"{self.label}: {error}") from error

    def _factor_inputs(self, value: Tensor) -> tuple[Tensor, ...]:
        parts = self._split(value)
        inputs = []
        for factor, part in zip(self.factors, parts, strict=True):
            # The parts come from a factorisation, accurate to rounding: each factor keeps or
            # cleans its part as it would at registration.
            with factor.projecting():
                inputs.append(factor.right_inverse(part))
        return tuple(inputs)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A combination of one sample of each factor."""
        return self._combine(*(f.sample(generator) for f in self.factors))

    @property
    def can_rebase(self) -> bool:
        """Whether any factor has a base to re-base."""
        return any(f.can_rebase for f in self.factors)

    @torch.no_grad()
    def rebase_(self, *X: Tensor) -> tuple[Tensor, ...]:
        """Re-base every factor that has a base; the others keep their input."""
        return tuple(
            f.rebase_(x) if f.can_rebase else x for f, x in zip(self.factors, X, strict=True)
        )

    def adapt_checkpoint_(self, state_dict: dict, prefix: str, inputs: Sequence[str]) -> None:
        """Let each factor convert its entries: its buffers under ``factors.<i>.``, its input."""
        for i, factor in enumerate(self.factors):
            factor_inputs = inputs[i : i + 1] if len(inputs) == len(self.factors) else ()
            factor.adapt_checkpoint_(state_dict, f"{prefix}factors.{i}.", factor_inputs)

    def stack_after_(self, value: Tensor) -> None:
        raise ValueError(
            f"{self.label} is already constrained: {type(self).__name__} stores several tensors "
            "and can only be a tensor's first constraint (torch's parametrize allows several "
            "stored tensors for the first parametrization only). Remove the other constraint "
            "first."
        )
