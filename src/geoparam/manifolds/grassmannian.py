"""Subspaces: the parametrization behind :func:`geoparam.grassmannian`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import polar
from ..linalg._precision import working_dtype
from .orthogonal import ORTHOGONAL_MAPS, Orthogonal, OrthogonalMap

__all__ = ["Grassmannian"]


def _frame(X: Tensor) -> Tensor:
    # A tall (..., n, k) X with its top k x k block zeroed: the orthogonal maps then build
    # A = [[0, -Bᴴ], [B, 0]] from the bottom block B alone, which moves the span of the first k
    # columns and never rotates inside it.
    k = X.size(-1)
    return torch.cat([torch.zeros_like(X[..., :k, :]), X[..., k:, :]], dim=-2)


class Grassmannian(Orthogonal):
    r"""Maps an unconstrained tensor onto orthonormal frames that move only their span.

    A point of the Grassmannian ``Gr(n, k)`` is a ``k``-dimensional subspace of ``ℝⁿ`` (``ℂⁿ``),
    represented by a matrix with orthonormal columns that spans it (rows, for a wide weight,
    which is handled as the transpose of a tall one). With ``k`` the smaller and ``n`` the
    larger side and ``X = [X₁; X₂]`` split into its top ``k x k`` block ``X₁`` and its bottom
    ``(n - k) x k`` block ``X₂``, the map is

        Q = B · φ(A)[:, :k],      A = [[0, -X₂ᴴ], [X₂, 0]],

    with ``φ`` the exponential or the Cayley transform and ``B`` the ``n x n`` orthogonal base
    buffer (dynamic trivialization, as in :class:`Orthogonal`). ``X₁`` is not read (its gradient
    is zero): ``A`` has no ``k x k`` skew block, so ``Q`` never rotates within its own span. At
    ``X = 0``, ``dQ = B [0; dX₂]`` and ``QᴴdQ = 0``: the directions ``X`` moves ``Q`` in are
    exactly those that change the subspace, and ``t ↦ B exp(tA)[:, :k]`` is a geodesic of the
    canonical metric (the geometry of geotorch's ``Grassmannian``). Costs ``O(nk² + k³)`` for
    the map plus ``O(n²k)`` for the base, like :class:`Orthogonal` on a tall weight, or
    ``O(nk²)`` in all with the compact base (:class:`Orthogonal`'s ``compact_base``: there
    ``X₂`` is read in the ambient space as ``(I - YYᴴ)X``).

    A value on the set is one with orthonormal columns (rows); which frame of a subspace is
    assigned is kept: the weight equals the assigned value, not merely its span.

    Args:
        shape: shape of the weight, at least two dimensions.
        triv: ``"matrix_exp"`` or ``"cayley"``. Default (``None``): ``"cayley"``, 3 to 8 times
            faster for a forward and backward pass on CPU (``64 x 16`` to ``1024 x 128``,
            float32/64). Both reach every subspace from any base: with ``σⱼ`` the singular
            values of ``X₂``, the principal angles between ``Q``'s span and ``B[:, :k]``'s are
            ``σⱼ`` (exponential) and ``2 atan(σⱼ/2)`` (Cayley), up to ``π/2`` (folded back
            beyond it).
        compact_base: keep only the base's first ``k`` columns; default by size, as for
            :class:`Orthogonal`.
        label: how messages name the tensor (e.g. ``"Linear.weight"``).
        dtype: the weight's dtype (real or complex). Default: torch's default dtype.
        device: the weight's device. Default: the CPU.

    Raises:
        ValueError: fewer than two dimensions; an unknown map, or ``"householder"``, which
            parametrizes frames and cannot be restricted to moving their span.
        TypeError: ``triv`` is not a string.

    Example:
        >>> param = Grassmannian(torch.Size([5, 2]), "matrix_exp")
        >>> X = param.right_inverse(torch.linalg.qr(torch.randn(5, 2)).Q)
        >>> X = X + torch.randn(5, 2)
        >>> Q = param(X)
        >>> torch.allclose(Q.mT @ Q, torch.eye(2), atol=1e-5)
        True
    """

    projects_assignments = False  # a frame off the set is refused, or projected at registration

    def __init__(
        self,
        shape: torch.Size,
        triv: OrthogonalMap | str | None = None,
        *,
        compact_base: bool | None = None,
        label: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        label = label or "the Grassmannian tensor"
        shape = torch.Size(shape)
        where = f"{label} of shape {tuple(shape)}"
        if len(shape) < 2:
            raise ValueError(
                f"{where}: a subspace is represented by a matrix or a batch of matrices; got a "
                f"tensor of {len(shape)} dimensions."
            )
        triv = OrthogonalMap.CAYLEY if triv is None else triv
        if not isinstance(triv, str):
            raise TypeError(f'{where}: triv must be "matrix_exp" or "cayley", got {triv!r}.')
        if triv == OrthogonalMap.HOUSEHOLDER:
            raise ValueError(
                f'{where}: triv="householder" is not available for the Grassmannian: Householder '
                "reflectors parametrize frames and also move them within their span. Use "
                '"matrix_exp" or "cayley" (or geoparam.orthogonal for frames).'
            )
        if triv not in ORTHOGONAL_MAPS:
            raise ValueError(f'{where}: triv must be "matrix_exp" or "cayley", got {triv!r}.')
        super().__init__(
            shape, triv, compact_base=compact_base, label=label, dtype=dtype, device=device
        )

    def extra_repr(self) -> str:
        return f"triv={self.orthogonal_map!r}"

    def _input(self, X: Tensor) -> Tensor:
        return _frame(X)

    def _right_inverse(self, Q: Tensor) -> Tensor:
        """Make ``Q`` (completed to ``n x n``) the base; return ``X = 0``, which maps to ``Q``."""
        return super()._right_inverse(Q).zero_()

    def rebase_(self, X: Tensor) -> Tensor:
        """Fold the current motion into the base (``B ← polar(B φ(A))``) and return ``X = 0``.

        The weight is unchanged up to rounding (see :meth:`Orthogonal.rebase_`).
        """
        return super().rebase_(X).zero_()

    def _violation(self, Q: Tensor, atol: float | None) -> str | None:
        if self._in_manifold(Q, atol):
            return None
        wide = Q.size(-2) < Q.size(-1)
        tall = Q.mT if wide else Q
        eye = torch.eye(tall.size(-1), dtype=tall.dtype, device=tall.device)
        error = float((tall.mH @ tall - eye).abs().max())
        bound = (
            f"atol = {atol:.3g}"
            if atol is not None
            else f"10·n·eps = {10 * tall.size(-2) * torch.finfo(Q.dtype).eps:.3g}"
        )
        side = "rows" if wide else "columns"
        return f"its {side} are not orthonormal: max |QᴴQ - I| is {error:.3g}, above {bound}"

    @torch.no_grad()
    def _project(self, value: Tensor) -> Tensor:
        """The orthonormal frame nearest to ``value`` (its polar factor), which has its span."""
        wide = value.size(-2) < value.size(-1)
        tall = value.mT if wide else value
        Q = polar(tall.to(working_dtype(value.dtype))).to(value.dtype)
        return Q.mT if wide else Q

    def in_manifold(self, Q: Tensor, atol: float | None = None) -> bool:
        """Whether ``Q`` has this weight's shape and orthonormal columns (tall) or rows (wide).

        The default tolerance is that of :meth:`Orthogonal.in_manifold` (``10 · n · eps``).

        Example:
            >>> param = Grassmannian(torch.Size([3, 2]))
            >>> param.in_manifold(torch.eye(3)[:, :2]), param.in_manifold(torch.ones(3, 2))
            (True, False)
        """
        return super().in_manifold(Q, atol)
