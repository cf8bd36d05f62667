"""Spheres and oblique manifolds: weights whose rows (or columns) have a fixed norm."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ._base import Parametrization
from .linear import default_tolerance

__all__ = ["Oblique", "Sphere", "SphereEmbedded"]


def _normalize(X: Tensor, dim: int) -> Tensor:
    """``X / ‖X‖`` along ``dim``; a zero slice stays zero, with finite gradients."""
    norm = torch.linalg.vector_norm(X, dim=dim, keepdim=True)
    # torch's norm has a zero gradient at zero; dividing by 1 there keeps 0/0 out of both passes.
    return X / torch.where(norm > 0, norm, 1)


class _FixedNorm(Parametrization):
    """Tensors whose slices along ``dim`` have norm ``radius``: checks, projection, sampling."""

    dim: int
    slices: str
    reuses_evaluations = False  # a normalisation costs less than reusing it

    def __init__(
        self,
        shape: torch.Size,
        radius: float = 1.0,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        where = f"{label} of shape {tuple(self.shape)}"
        if len(self.shape) < -self.dim or self.shape[self.dim] == 0:
            raise ValueError(
                f"{where}: {type(self).__name__} constrains the norm of its {self.slices}, so it "
                f"needs at least {-self.dim} dimension(s) with a non-empty dimension {self.dim}."
            )
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real):
            raise TypeError(f"{where}: radius must be a real number, got {radius!r}.")
        if not 0 < radius < math.inf:
            raise ValueError(f"{where}: radius must be a positive number, got {radius!r}.")
        self.radius = float(radius)

    def extra_repr(self) -> str:
        return f"radius={self.radius}"

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        if W.numel() == 0:
            return None
        tolerance = default_tolerance(W.dtype) if atol is None else atol
        norms = torch.linalg.vector_norm(W, dim=self.dim)
        errors = (norms - self.radius).abs()
        worst = errors.argmax()
        if float(errors.flatten()[worst]) <= tolerance * self.radius:
            return None
        norm = float(norms.flatten()[worst])
        return (
            f"one of its {self.slices} has norm {norm:.6g}, not the radius {self.radius:.6g} "
            f"(tolerance {tolerance:.3g}, relative)"
        )

    def _evaluate(self, X: Tensor) -> Tensor:
        # The normalisation map (SphereEmbedded, Oblique); Sphere has its own.
        return self.radius * _normalize(X, self.dim)

    def _right_inverse(self, W: Tensor) -> Tensor:
        return W / self.radius

    def _project(self, W: Tensor) -> Tensor:
        # Every slice scaled to the radius; a zero slice, whose every direction is as close, gets
        # the constant direction.
        norm = torch.linalg.vector_norm(W, dim=self.dim, keepdim=True)
        constant = 1 / math.sqrt(self.shape[self.dim])
        return self.radius * torch.where(norm > 0, W / norm, constant)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A uniformly distributed point: normalised standard (complex) normal slices.

        Example:
            >>> param = Oblique(torch.Size([3, 2]), radius=2.0, label="W")
            >>> torch.allclose(param.sample().norm(dim=-2), torch.full((2,), 2.0))
            True
        """
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self.radius * _normalize(G, self.dim)


class SphereEmbedded(_FixedNorm):
    r"""Vectors of norm ``radius`` along the last dimension, as a normalisation: ``W = r·X/‖X‖``.

    Each vector ``X[..., :]`` (the rows of a matrix, the whole of a 1-D tensor) is divided by its
    Euclidean norm; leading dimensions are a batch. The map is geotorch's ``SphereEmbedded``
    (the same ``W`` from the same ``X``), and works for complex tensors. A zero vector maps to
    zero, with finite gradients, where the formula would give ``0/0``.

    The right inverse is ``X = W / r``; the projection scales each vector to the radius (a zero
    vector becomes the constant vector of norm ``r``); :meth:`in_manifold` accepts norms within
    ``tol · r`` of ``r``, by default ``tol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape (at least one dimension).
        radius: the norm of every vector, a positive number. Default: ``1.0``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: a 0-d or empty last dimension; ``radius`` not positive or infinite.
        TypeError: ``radius`` is not a real number.

    Example:
        >>> param = SphereEmbedded(torch.Size([2, 2]), radius=5.0, label="W")
        >>> param(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        tensor([[3., 4.],
                [0., 5.]])
    """

    dim = -1
    slices = "rows (last dimension)"


class Oblique(_FixedNorm):
    r"""Matrices whose columns have norm ``radius``: ``W = r·X/‖X‖`` column by column.

    The oblique manifold: the norm is taken along dimension ``-2``, so each column of a weight
    ``(..., n, k)`` is a point of the sphere of radius ``r`` in ``n`` dimensions (an
    ``nn.Linear`` weight ``(out, in)``: one unit vector per input feature). Leading dimensions
    are a batch; complex tensors are allowed. A zero column maps to zero, with finite gradients.

    The right inverse is ``X = W / r``; the projection scales each column to the radius (a zero
    column becomes the constant column of norm ``r``); :meth:`in_manifold` accepts norms within
    ``tol · r`` of ``r``, by default ``tol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape, at least two dimensions.
        radius: the norm of every column, a positive number. Default: ``1.0``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: fewer than 2 dimensions or no rows; ``radius`` not positive or infinite.
        TypeError: ``radius`` is not a real number.

    Example:
        >>> param = Oblique(torch.Size([2, 2]), label="W")
        >>> param(torch.tensor([[3.0, 0.0], [4.0, 2.0]]))
        tensor([[0.6000, 0.0000],
                [0.8000, 1.0000]])
    """

    dim = -2
    slices = "columns (dimension -2)"


class Sphere(_FixedNorm):
    r"""Vectors of norm ``radius`` along the last dimension, through the exponential map.

    Dynamic trivialization (Lezcano-Casado, NeurIPS 2019) around a ``base`` buffer ``B`` of
    unit vectors: ``X`` is first projected onto the tangent space at ``B``,
    ``v = X - Re⟨B, X⟩ B``, and then

    .. math::
        W = r \left(\cos\lVert v\rVert\, B + \frac{\sin\lVert v\rVert}{\lVert v\rVert}\, v\right),

    the point reached by walking a great circle from ``B`` in the direction ``v`` for a length
    ``‖v‖``. This is geotorch's ``Sphere`` (the same ``W`` from the same ``X`` and base), applied
    to each vector along the last dimension; leading dimensions are a batch; complex tensors
    are allowed (``Re⟨B, X⟩`` is the inner product of the underlying real space). At ``v = 0``
    the map and its gradient are finite (``W = rB``).

    The right inverse sets ``B = W / r`` and returns ``X = 0`` (so ``W`` is kept exactly);
    :meth:`rebase_` (called by :func:`geoparam.update_base`) moves the base to the current
    point, normalised, and resets ``X`` to zero. Before any assignment the base holds the first
    basis vector ``e₁`` in every row. The projection scales each vector to the radius (a zero
    vector becomes the constant vector); :meth:`in_manifold` accepts norms within ``tol · r``
    of ``r``, by default ``tol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape (at least one dimension).
        radius: the norm of every vector, a positive number. Default: ``1.0``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype.
        device: the weight's device.

    Raises:
        ValueError: a 0-d or empty last dimension; ``radius`` not positive or infinite.
        TypeError: ``radius`` is not a real number.

    Example:
        >>> param = Sphere(torch.Size([2]), label="w")
        >>> X = param.right_inverse(torch.tensor([1.0, 0.0]))
        >>> W = param(X + torch.tensor([0.0, torch.pi / 2]))  # a quarter of a great circle
        >>> torch.allclose(W, torch.tensor([0.0, 1.0]), atol=1e-6)
        True
    """

    base: Tensor
    dim = -1
    slices = "rows (last dimension)"

    def __init__(
        self,
        shape: torch.Size,
        radius: float = 1.0,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, radius, label=label, dtype=dtype, device=device)
        base = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        base[..., 0] = 1
        self.register_buffer("base", base)

    @property
    def can_rebase(self) -> bool:
        """The base can always be moved to the current point."""
        return True

    def _evaluate(self, X: Tensor) -> Tensor:
        B = self.base
        v = X - (B.conj() * X).real.sum(dim=-1, keepdim=True) * B
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        # sinc(t/π) = sin(t)/t, equal to 1 at t = 0 with a zero gradient there.
        return self.radius * (torch.cos(norm) * B + torch.special.sinc(norm / torch.pi) * v)

    @torch.no_grad()
    def _right_inverse(self, W: Tensor) -> Tensor:
        if W.dtype != self.base.dtype:
            # Checked before the base changes; torch would refuse the result only afterwards.
            raise ValueError(
                f"{self.label}: cannot assign a tensor of dtype {W.dtype}; expected "
                f"{self.base.dtype}."
            )
        self.base.copy_(W / self.radius)
        return torch.zeros_like(W)

    def stack_after_(self, value: Tensor) -> None:
        # The map's input is a tangent vector at the base; the output of another constraint is
        # not one, and reading it as one would move the weight off what that constraint made.
        raise ValueError(
            f"{self.label} is already constrained: the exponential-map sphere reads its input as "
            "a tangent vector and cannot follow another constraint; use "
            "sphere(..., embedded=True), which normalises the previous constraint's output."
        )

    def rebase_(self, X: Tensor) -> Tensor:
        """Move the base to the current point (re-normalised) and return ``X = 0``.

        The weight is unchanged up to rounding, and the normalisation removes any drift of the
        base's norm.
        """
        self.base.copy_(_normalize(self._evaluate(X), -1))
        return torch.zeros_like(X)
