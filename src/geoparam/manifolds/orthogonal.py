"""Orthogonal and unitary matrices: the parametrization behind :func:`geoparam.orthogonal`."""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ..linalg import (
    cayley,
    expm_skew,
    householder_product,
    householder_reflectors,
    householder_square,
    is_orthogonal,
    polar,
    qr_positive,
    rotated_cayley_lower,
    rotated_householder,
    stiefel_cayley,
    stiefel_expm,
)
from ..linalg._precision import working_dtype
from ._base import Parametrization
from ._validation import check_finite, check_is_tensor

__all__ = ["FULL_BASE_LIMIT", "ORTHOGONAL_MAPS", "Orthogonal", "OrthogonalMap"]


class OrthogonalMap(str, enum.Enum):
    """The maps onto orthogonal matrices: the one list of their names (a ``str`` each)."""

    MATRIX_EXP = "matrix_exp"
    CAYLEY = "cayley"
    HOUSEHOLDER = "householder"


#: The names of the orthogonal maps, in their order of :class:`OrthogonalMap`.
ORTHOGONAL_MAPS: tuple[str, ...] = tuple(member.value for member in OrthogonalMap)

#: The most entries a tall or wide weight's ``n x n`` base (all of its batch) holds by default:
#: 2²² (one ``2048 x 2048`` matrix, 16 MiB in float32, a QR of 0.3 s on two cores). Beyond it the
#: base is kept compact, as its first ``k`` columns (see :class:`Orthogonal`).
FULL_BASE_LIMIT = 2**22


def default_map(rows: int, columns: int, dtype: torch.dtype | None) -> str:
    """The default map of a ``rows x columns`` orthonormal factor: the fastest measured.

    Forward + backward at ``256 x 256`` and ``256 x 64`` in float32 (CPU): a tall real factor
    (``columns < rows``) is fastest with Householder reflections, a square or complex one with the
    Cayley map (about twice as fast as the matrix exponential, and its cost does not grow with the
    norm of the input as the exponential's squarings do).
    """
    complex_ = dtype is not None and dtype.is_complex
    return "householder" if columns < rows and not complex_ else "cayley"


def check_map(
    triv: OrthogonalMap | str | None,
    where: str,
    dtype: torch.dtype | None,
    *,
    rotations: bool = False,
) -> str | None:
    """``triv`` as a map name (``None`` stays ``None``), or a ``ValueError`` naming ``where``.

    ``rotations``: the factor must stay in ``SO(n)``, which a Householder product can leave.
    """
    if triv is None:
        return None
    if triv not in ORTHOGONAL_MAPS:
        names = ", ".join(f'"{m}"' for m in ORTHOGONAL_MAPS)
        raise ValueError(f"{where}: triv must be one of {names} or None, got {triv!r}.")
    triv = OrthogonalMap(triv).value
    if triv == "householder" and dtype is not None and dtype.is_complex:
        raise ValueError(
            f'{where}: the "householder" map takes real weights only; use "matrix_exp" or '
            '"cayley" for a complex one.'
        )
    if triv == "householder" and rotations:
        raise ValueError(
            f'{where}: the "householder" map can leave SO(n), which would flip the sign of the '
            'determinant; use "matrix_exp" or "cayley".'
        )
    return triv


def _column_signs(X: Tensor) -> Tensor:
    # The Householder map reads one sign per column from the diagonal. torch casts the diagonal
    # with `.int()`, so weight decay that shrinks -1 to -0.99997 truncates it to 0 and zeroes a
    # column. Copying the diagonal's sign bit onto 1 keeps every sign at exactly +-1 whatever the
    # optimizer does, and reads -0.0 (where decoupled weight decay eventually takes a -1) as -1.
    # Read without a gradient: the signs are piecewise constant (a tracked copysign_ only made
    # the backward form a zero gradient for them and scatter it onto X's diagonal).
    # Shape (..., k): one sign per column.
    diagonal = X.detach().diagonal(dim1=-2, dim2=-1)
    return torch.ones_like(diagonal).copysign_(diagonal)


def _row_major(base: Tensor) -> Tensor:
    # The n x n base is stored row-major (a QR returns it column-major): the products with it
    # read it fastest so, and a checkpoint's base, copied into this buffer, takes its layout.
    # Measured with 2 threads, forward + backward: the transposing copy of a column-major base
    # cost 0.3-1.1 ms of a Householder 512 x 512 step, and its first block's product was slower.
    return base.contiguous()


def _identity_point(like: Tensor) -> Tensor:
    # The X that every map sends to I (up to the base): for the Householder map each reflector is
    # e_i (a sign flip) and the diagonal's -1 undoes it; for the others A = 0.
    X = torch.zeros_like(like)
    X.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
    return X


def _lift(Y: Tensor, E: Tensor) -> Tensor:
    # The compact layout's isometry from coordinates [a; h] (a in the span of the first k basis
    # vectors, h in the ambient space, orthogonal to Y's span) to the ambient space: Y a + h.
    k = Y.size(-1)
    return E[..., k:, :] + Y @ E[..., :k, :]


def _pad_columns(X: Tensor) -> Tensor:
    # (..., n, k) -> (..., n, n) with zero columns on the right.
    n, k = X.size(-2), X.size(-1)
    return torch.cat([X, X.new_zeros(*X.shape[:-1], n - k)], dim=-1)


class Orthogonal(Parametrization):
    r"""Maps an unconstrained tensor onto matrices with orthonormal columns (or rows).

    For a tensor of shape ``(..., m, n)`` the output ``Q`` satisfies ``QᴴQ = I`` if ``m >= n`` and
    ``QQᴴ = I`` otherwise. A wide input is handled as the transpose of a tall one. With ``k`` the
    smaller and ``n`` the larger side, the maps are

    * ``"matrix_exp"``: ``Q = B · exp(A)[:, :k]``, ``A = [L, 0] - [L, 0]ᴴ``, ``L = X.tril()``;
    * ``"cayley"``: the same with ``(I - A/2)⁻¹ (I + A/2)`` in place of ``exp(A)``;
    * ``"householder"``: ``Q = B · H₁⋯H_k[:, :k] · diag(s)``, ``sᵢ = -1`` where ``Xᵢᵢ`` has its
      sign bit set (``-0.0`` included) and ``+1`` elsewhere, with reflectors read
      from the strictly lower part of ``X`` (real tensors only);

    where the base ``B`` (an ``n x n`` orthogonal buffer, *dynamic trivialization*,
    Lezcano-Casado 2019) is present when ``use_trivialization=True`` and is ``I`` otherwise.
    These are the maps of :func:`torch.nn.utils.parametrizations.orthogonal`, so the stored
    tensors mean the same thing in both libraries.

    **The compact base.** For a tall weight (``k < n``) the ``n x n`` base costs ``n²`` memory, an
    ``O(n³)`` QR at registration and ``O(n²k)`` at every read. The compact layout keeps only
    ``Y = B[:, :k]`` (the ``base`` buffer then has the weight's shape) and reads ``X`` in the
    ambient space: with ``Ω = YᴴX`` and ``H = (I - YYᴴ)X``,

        Q = Y Z₁ + Z₂,      [Z₁; Z₂] = φ([Ω; H]),

    where ``φ`` is the tall map above applied to the ``(k + n) x k`` matrix ``[Ω; H]``. This is
    the full layout's map at ``X_full = BᴴX`` for any completion ``B = [Y, Y⊥]`` of ``Y``: ``φ``
    reads the rows below the top ``k x k`` block only through ``X₂ᴴX₂`` and ``X₂ S`` (and the
    Householder reflectors act isometrically on ``[a; h] ↦ Ya + h``), and ``Y⊥Y⊥ᴴX = H``. So the
    two layouts give the same weights, a checkpoint converts between them exactly
    (:meth:`adapt_checkpoint_`), and every read, backward, registration and re-basing costs
    ``O(nk²)`` and ``O(nk)`` memory (Edelman, Arias, Smith 1998, §2.4: a Stiefel step taken from
    the point itself). The full layout (torch's) is the default up to :data:`FULL_BASE_LIMIT`
    entries of the ``n x n`` base, the compact one beyond it; a square weight has one layout.

    Args:
        shape: shape of the weight, at least two dimensions.
        orthogonal_map: ``"matrix_exp"``, ``"cayley"`` or ``"householder"``.
        use_trivialization: whether to keep a ``base`` buffer. Default: ``True``.
        compact_base: ``True`` for the compact base, ``False`` for torch's ``n x n`` one (a
            ``UserWarning`` says how much memory it takes when that is above
            :data:`FULL_BASE_LIMIT` entries). Default (``None``): compact exactly when the weight
            is not square and its ``n x n`` base would hold more than :data:`FULL_BASE_LIMIT`
            entries.
        label: how error messages name the tensor (e.g. ``"Linear.weight"``). Default: none.
        dtype: the weight's dtype, for :meth:`sample`. Default: torch's default dtype.
        device: the weight's device, for :meth:`sample`. Default: the CPU.

    Raises:
        ValueError: ``compact_base=True`` with ``use_trivialization=False`` (there is no base).

    Example:
        >>> param = Orthogonal(torch.Size([5, 3]), "cayley")
        >>> X = param.right_inverse(torch.randn(5, 3))
        >>> Q = param(X)
        >>> torch.allclose(Q.mT @ Q, torch.eye(3), atol=1e-5)
        True
        >>> compact = Orthogonal(torch.Size([5, 3]), "cayley", compact_base=True)
        >>> X = compact.right_inverse(Q)
        >>> compact.base.shape, torch.allclose(compact(X), Q, atol=1e-6)
        (torch.Size([5, 3]), True)
    """

    base: Tensor | None
    projects_assignments = True  # torch's orthogonal orthogonalises what is assigned

    def __init__(
        self,
        shape: torch.Size,
        orthogonal_map: OrthogonalMap | str,
        *,
        use_trivialization: bool = True,
        compact_base: bool | None = None,
        label: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label or "the orthogonal tensor", dtype=dtype, device=device)
        self.orthogonal_map = OrthogonalMap(orthogonal_map).value
        if compact_base is not None and not isinstance(compact_base, bool):
            raise TypeError(
                f"{self.label}: compact_base must be True, False or None, got {compact_base!r}."
            )
        if compact_base and not use_trivialization:
            raise ValueError(
                f"{self.label}: compact_base=True needs a base, but use_trivialization=False "
                "keeps none."
            )
        square = self.shape[-2] == self.shape[-1]
        entries = math.prod(self._full_base_shape())
        if compact_base is None:
            compact_base = entries > FULL_BASE_LIMIT
        #: Whether the base is kept as its first ``k`` columns (never for a square weight).
        self.compact_base = bool(compact_base) and use_trivialization and not square
        if use_trivialization:
            self.register_buffer("base", None)
            if not self.compact_base and not square and entries > FULL_BASE_LIMIT:
                size = entries * self.dtype.itemsize
                warnings.warn(
                    f"{self.label} of shape {tuple(self.shape)}: the full base is "
                    f"{' x '.join(map(str, self._full_base_shape()))} ({size / 2**20:,.0f} MiB, "
                    f"above {FULL_BASE_LIMIT:,} entries); compact_base=True keeps only its "
                    f"first {min(self.shape[-2], self.shape[-1])} columns, O(nk) instead of O(n²).",
                    UserWarning,
                    stacklevel=2,
                )

    @property
    def use_trivialization(self) -> bool:
        """Whether the map is composed with a ``base`` buffer."""
        return hasattr(self, "base")

    @property
    def can_rebase(self) -> bool:
        """With a base, :meth:`rebase_` folds the current rotation into it."""
        return self.use_trivialization

    def extra_repr(self) -> str:
        compact = ", compact_base=True" if self.compact_base else ""
        return (
            f"orthogonal_map={self.orthogonal_map!r}, "
            f"use_trivialization={self.use_trivialization}{compact}"
        )

    def _full_base_shape(self) -> tuple[int, ...]:
        n = max(self.shape[-2], self.shape[-1])
        return (*self.shape[:-2], n, n)

    def _base_shape(self) -> tuple[int, ...]:
        # The base buffer's shape: the weight's (compact) or (..., n, n).
        return tuple(self.shape) if self.compact_base else self._full_base_shape()

    def _evaluate(self, X: Tensor) -> Tensor:
        transposed = X.size(-2) < X.size(-1)
        if transposed:
            X = X.mT
        if not self.use_trivialization:
            Q = self._tall_map(X)
        else:
            if self.base is None:
                raise RuntimeError(
                    f"{self.label}: the orthogonal parametrization has no base yet; set one with "
                    "right_inverse() or reset_base_() before reading the weight."
                )
            if self.compact_base:
                Q = self._compact_map(self.base.mT if transposed else self.base, X)
            elif self.orthogonal_map == "cayley" and X.size(-2) == X.size(-1):
                # The base product and the skew part fused into the map's solve.
                Q = rotated_cayley_lower(self.base, self._input(X))
            elif self.orthogonal_map == "householder":
                # Square weights absorb the base product and the signs into blocks of
                # reflectors (tall ones multiply by the base afterwards).
                X = self._input(X)
                Q = rotated_householder(self.base, X, _column_signs(X))
            else:
                Q = self.base @ self._tall_map(X)
        return Q.mT if transposed else Q

    def _compact_map(self, Y: Tensor, X: Tensor) -> Tensor:
        # The tall map at the compact base Y (n x k) for the ambient X (n x k): see the class
        # docstring. O(nk²): four products with Y, the tall map on (k + n) x k, one more product.
        Omega = Y.mH @ X
        H = X - Y @ Omega
        # Projected twice ("twice is enough": Parlett, The Symmetric Eigenvalue Problem, §6.9):
        # one pass leaves a part of H along Y of about eps·√n·‖X‖ (measured: QᴴQ - I grew from
        # 2e-5, Y's own, to 1.2e-4 at n = 10⁶ in float32); the second brings it to roundoff.
        H = H - Y @ (Y.mH @ H)
        return _lift(Y, self._tall_map(torch.cat([Omega, H], dim=-2)))

    def _input(self, X: Tensor) -> Tensor:
        """What the maps read of the unconstrained tensor (all of it; a subclass may restrict)."""
        return X

    def _tall_map(self, X: Tensor) -> Tensor:
        # X is (..., n, k) with n >= k.
        X = self._input(X)
        if self.orthogonal_map == "householder":
            return householder_product(X) * _column_signs(X).unsqueeze(-2)
        if X.size(-2) == X.size(-1):
            L = X.tril()
            A = L - L.mH
            return expm_skew(A) if self.orthogonal_map == "matrix_exp" else cayley(A)
        return stiefel_expm(X) if self.orthogonal_map == "matrix_exp" else stiefel_cayley(X)

    def _check_assignment(self, Q: Tensor) -> None:
        # The shape message ends with torch's wording, for code that matches on it.
        check_is_tensor(Q, self.label)
        if Q.shape != self.shape:
            raise ValueError(
                f"{self.label}: Expected a matrix or batch of matrices of shape {self.shape}. "
                f"Got a tensor of shape {Q.shape}."
            )
        check_finite(Q, f"{self.label}:")

    @torch.no_grad()
    def _right_inverse(self, Q: Tensor) -> Tensor:
        """An ``X`` with ``forward(X) = Q``, orthogonalising ``Q`` first if needed.

        With trivialization, ``Q`` (orthogonalised by QR with ``diag(R) >= 0`` unless it already
        has orthonormal columns; for the full base, a tall ``Q`` is completed to a square one with
        random columns) becomes the ``base`` and ``X`` is the point that the map sends to ``I``
        (``-Y`` in the compact layout). Without it, only the Householder map can be inverted
        (``NotImplementedError`` otherwise). Half-precision tensors are orthogonalised in
        float32, since LAPACK's QR has no half-precision kernels. A ``Q`` of another dtype or
        device than the current base is refused (``ValueError``).
        """
        base = getattr(self, "base", None)
        if base is not None and (Q.dtype, Q.device) != (base.dtype, base.device):
            # Checked here because torch's own dtype check runs only after right_inverse returns,
            # when a new base of the wrong dtype or device would already have broken the module.
            # The message ends with torch's wording for the same mistake.
            torch_wording = (
                f" The tensor returned by `right_inverse` has dtype {Q.dtype} while `original` "
                f"has dtype {base.dtype}"
                if Q.dtype != base.dtype
                else ""
            )
            raise ValueError(
                f"{self.label}: cannot assign a tensor of dtype {Q.dtype} on {Q.device}; expected "
                f"dtype {base.dtype} on {base.device}.{torch_wording}"
            )
        if Q.device.type == "meta":
            # A module built on the meta device has shapes but no values: keep them, compute
            # nothing. The values come with the module's initialisation after to_empty().
            if self.use_trivialization:
                self.base = Q.new_empty(self._base_shape())
            return torch.empty_like(Q)
        dtype = Q.dtype
        Q_init = Q = Q.to(working_dtype(dtype))
        transposed = Q.size(-2) < Q.size(-1)
        if transposed:
            Q = Q.mT
        n, k = Q.size(-2), Q.size(-1)

        if not self.use_trivialization:
            if self.orthogonal_map != "householder":
                raise NotImplementedError(
                    "It is not possible to assign to the matrix exponential or the Cayley "
                    "parametrizations when use_trivialization=False."
                )
            X = householder_reflectors(Q)
            return (X.mT if transposed else X).to(dtype)

        if self.compact_base:
            Y = Q.clone() if is_orthogonal(Q) else qr_positive(Q)
            if transposed:
                Y = Y.mT
            self.base = Y.to(dtype)
            return (-Y).to(dtype)
        if n == k:
            Q = Q.clone() if is_orthogonal(Q) else qr_positive(Q)
        else:
            # Complete to an n x n orthogonal base: the extra columns only set the directions
            # the weight can rotate into. The same draw as torch keeps seeded runs identical.
            fill = torch.randn(*Q.shape[:-2], n, n - k, dtype=Q.dtype, device=Q.device)
            Q = qr_positive(torch.cat([Q, fill], dim=-1))
        self.base = _row_major(Q.to(dtype))
        return _identity_point(Q_init).to(dtype)

    def stack_after_(self, value: Tensor) -> None:
        """After another parametrization, the map starts from the identity base."""
        self.reset_base_(value)

    @torch.no_grad()
    def reset_base_(self, like: Tensor) -> None:
        """Set the base to the identity, in ``like``'s dtype and device and batch shape.

        For a parametrization stacked after others, whose input is not the stored tensor and
        whose :meth:`right_inverse` torch therefore never calls. (The compact base is the
        identity's first ``k`` columns, or rows for a wide weight.)
        """
        if not self.use_trivialization:
            return
        *batch, rows, columns = self._base_shape()
        eye = torch.eye(rows, columns, dtype=like.dtype, device=like.device)
        self.base = eye.expand(*batch, rows, columns).clone()

    @torch.no_grad()
    def rebase_(self, X: Tensor) -> Tensor:
        """Fold the current rotation into the base and return the new unconstrained tensor.

        Sets ``B ← polar(B · φ(X))``, where ``φ(X)`` is the full ``n x n`` orthogonal matrix whose
        first ``k`` columns the forward map uses, and returns the ``X₀`` with ``φ(X₀) = I``, so
        that ``forward(X₀)`` equals ``forward(X)`` before the call (up to rounding). The polar
        factor removes the drift that repeated products accumulate. The compact base becomes
        the polar factor of the current weight, in ``O(nk²)``, and ``X₀ = -Y``.

        Raises:
            RuntimeError: the parametrization has no base (``use_trivialization=False``).
        """
        if not self.use_trivialization:
            raise RuntimeError(
                "Cannot re-base an orthogonal parametrization created with "
                "use_trivialization=False: it has no base."
            )
        transposed = X.size(-2) < X.size(-1)
        tall = X.mT if transposed else X
        if self.compact_base:
            Y = polar(self._compact_map(self.base.mT if transposed else self.base, tall))
            self.base = Y.mT if transposed else Y
            return -self.base
        self.base = _row_major(polar(self.base @ self._square_map(tall)))
        return _identity_point(X)

    def adapt_checkpoint_(self, state_dict: dict, prefix: str, inputs: Sequence[str]) -> None:
        """Convert a checkpoint's base and stored tensor from the other layout to this one.

        A full ``n x n`` base ``B`` (torch's layout) with its ``X`` becomes ``Y = B[:, :k]`` with
        ``BX``; a compact ``Y`` with its ``X`` becomes a completion ``B = [Y, Y⊥]`` with ``BᴴX``.
        Either way the weight is the same (up to rounding), and a ``UserWarning`` says that the
        checkpoint was converted. A base of this layout, or of neither, is left to torch.

        Raises:
            ValueError: the base needs converting but the checkpoint has no stored tensor for
                it (the parametrization is stacked after another one).

        Example:
            >>> import warnings
            >>> full = Orthogonal(torch.Size([6, 2]), "cayley", compact_base=False)
            >>> X = full.right_inverse(torch.linalg.qr(torch.randn(6, 2)).Q) + 0.1
            >>> state = {"0.base": full.base, "original": X}
            >>> compact = Orthogonal(torch.Size([6, 2]), "cayley", compact_base=True)
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     compact.adapt_checkpoint_(state, "0.", ["original"])
            >>> compact.base = state["0.base"]
            >>> same = torch.allclose(compact(state["original"]), full(X), atol=1e-6)
            >>> compact.base.shape, same
            (torch.Size([6, 2]), True)
        """
        B = state_dict.get(f"{prefix}base")
        if not self.use_trivialization or not isinstance(B, Tensor):
            return
        if tuple(B.shape) == self._base_shape() or tuple(B.shape) not in (
            self._full_base_shape(),
            tuple(self.shape),
        ):
            return
        layout = "compact" if self.compact_base else "full"
        if len(inputs) != 1 or inputs[0] not in state_dict:
            raise ValueError(
                f"{self.label}: the checkpoint's base has shape {tuple(B.shape)}, the other "
                f"layout than this {layout} one, and it holds no unconstrained tensor to convert "
                "with it (the orthogonal map is stacked after another parametrization)."
            )
        X = state_dict[inputs[0]]
        transposed = self.shape[-2] < self.shape[-1]
        with torch.no_grad():
            dtype = working_dtype(X.dtype)
            B, X = B.to(dtype), X.to(dtype)
            if transposed:
                X = X.mT
            if self.compact_base:
                k = X.size(-1)
                base, X = B[..., :k], B @ X
            else:
                Y = B.mT if transposed else B
                n, k = Y.size(-2), Y.size(-1)
                fill = torch.randn(*Y.shape[:-2], n, n - k, dtype=dtype, device=Y.device)
                base = qr_positive(torch.cat([Y, fill], dim=-1))
                base[..., :k] = Y
                X = base.mH @ X
            if transposed and self.compact_base:
                base = base.mT
            state_dict[f"{prefix}base"] = base.to(state_dict[f"{prefix}base"].dtype)
            state_dict[inputs[0]] = (X.mT if transposed else X).to(state_dict[inputs[0]].dtype)
        warnings.warn(
            f"{self.label}: converted the checkpoint's base of shape {tuple(B.shape)} to the "
            f"{layout} layout of shape {self._base_shape()} (the same weight).",
            UserWarning,
            stacklevel=2,
        )

    def _square_map(self, X: Tensor) -> Tensor:
        # The n x n orthogonal matrix whose first k columns are _tall_map(X).
        X = self._input(X)
        if self.orthogonal_map == "householder":
            signs = _column_signs(X)
            extra = signs.new_ones(*signs.shape[:-1], X.size(-2) - X.size(-1))
            return householder_square(X) * torch.cat([signs, extra], dim=-1).unsqueeze(-2)
        L = _pad_columns(X.tril())
        A = L - L.mH
        return expm_skew(A) if self.orthogonal_map == "matrix_exp" else cayley(A)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw a Haar-distributed orthogonal (unitary, if complex) matrix like the weight.

        The result has the parametrization's shape, dtype and device: the ``Q`` factor, with a
        non-negative ``diag(R)``, of a matrix of independent standard (complex) normal entries,
        which is Haar-distributed (Mezzadri, "How to generate random matrices from the classical
        compact groups", Notices AMS 54(5), 2007). Half types are drawn in single precision.

        Args:
            generator: the random generator to draw from (on the parametrization's device).
                Default: torch's global generator.

        Example:
            >>> param = Orthogonal(torch.Size([4, 2]), "matrix_exp", dtype=torch.complex128)
            >>> Q = param.sample()
            >>> Q.shape, Q.dtype
            (torch.Size([4, 2]), torch.complex128)
            >>> param.in_manifold(Q)
            True
        """
        m, n = self.shape[-2], self.shape[-1]
        tall = (*self.shape[:-2], max(m, n), min(m, n))
        dtype = working_dtype(self.dtype)
        Q = qr_positive(torch.randn(tall, generator=generator, dtype=dtype, device=self.device))
        Q = Q.to(self.dtype)
        return Q.mT if m < n else Q

    def in_manifold(self, Q: Tensor, atol: float | None = None) -> bool:
        """Whether ``Q`` has this weight's shape and orthonormal columns (tall) or rows (wide).

        The default tolerance is that of :func:`geoparam.linalg.is_orthogonal` (``10 · n · eps``
        of ``Q``'s dtype, ``n`` its larger side): the test that decides whether a weight is kept
        as it is at registration. With ``atol``, every entry of ``QᴴQ - I`` must be within it.

        Example:
            >>> param = Orthogonal(torch.Size([3, 2]), "householder")
            >>> param.in_manifold(torch.eye(3)[:, :2]), param.in_manifold(torch.eye(2))
            (True, False)
        """
        return super().in_manifold(Q, atol)

    def _in_manifold(self, Q: Tensor, atol: float | None) -> bool:
        if Q.size(-2) < Q.size(-1):
            Q = Q.mT
        if atol is None:
            return is_orthogonal(Q)
        eye = torch.eye(Q.size(-1), dtype=Q.dtype, device=Q.device)
        return bool(((Q.mH @ Q) - eye).abs().max() <= atol)
