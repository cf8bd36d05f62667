"""Linear subspaces of square matrices: skew-symmetric, symmetric and Hermitian weights.

Each is parametrized by one triangle of an unconstrained matrix (geotorch's convention), so the
map is a few additions: the stored tensor holds the free entries and the others mirror them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import Parametrization

__all__ = ["Skew", "Symmetric"]


def default_tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance a value of ``dtype`` is checked with when none is given.

    ``1000 · eps`` in single and double precision (real or complex): loose enough for the rounding
    of every map of this package, tight enough to tell a constrained weight from a trained one.
    Half types, whose ``eps`` is ~1e-3, get ``4 · eps``.
    """
    eps = torch.finfo(dtype).eps
    return 1e3 * eps if eps < 1e-6 else 4 * eps


def check_square(shape: torch.Size, label: str, what: str) -> None:
    """Raise ``ValueError`` unless ``shape`` is a square matrix or a batch of them."""
    if len(shape) < 2:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} needs a matrix or a batch of matrices (at "
            f"least 2 dimensions), got {len(shape)} dimension(s)."
        )
    if shape[-2] != shape[-1]:
        raise ValueError(
            f"{label} of shape {tuple(shape)}: {what} needs square matrices, got "
            f"{shape[-2]} x {shape[-1]}."
        )


def _check_bool(value: object, name: str, label: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{label}: {name} must be a bool, got {value!r}.")


class _Mirrored(Parametrization):
    """Square matrices equal to ``sign`` times their (conjugate) transpose, read from a triangle.

    Subclasses set ``sign`` and implement ``_evaluate`` and ``_right_inverse``; this class holds
    what the three sets share: the shape check, the mirror operation, the distance to the set
    and the projection onto it.
    """

    reuses_evaluations = False  # a triangle and its mirror cost less than reusing them

    sign: int
    what: str

    def __init__(
        self,
        shape: torch.Size,
        lower: bool = True,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        check_square(self.shape, label, self.what)
        _check_bool(lower, "lower", label)
        self.lower = lower

    @property
    def conjugates(self) -> bool:
        """Whether the mirror conjugates (a complex skew-Hermitian or Hermitian set)."""
        return True

    def extra_repr(self) -> str:
        return f"lower={self.lower}"

    def _mirror(self, W: Tensor) -> Tensor:
        return W.mH if self.conjugates else W.mT

    def _strict(self, X: Tensor) -> Tensor:
        # The free off-diagonal entries: the strict lower (or upper) triangle.
        return X.tril(-1) if self.lower else X.triu(1)

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        if W.numel() == 0:
            return None
        tolerance = default_tolerance(W.dtype) if atol is None else atol
        scale = float(W.abs().max())
        error = float((W - self.sign * self._mirror(W)).abs().max())
        if error <= tolerance * scale:
            return None
        op = "+" if self.sign < 0 else "-"
        mirror = "Wᴴ" if self.conjugates and W.is_complex() else "Wᵀ"
        return (
            f"it is not {self.what}: max |W {op} {mirror}| is {error:.3g}, "
            f"{error / scale:.3g} of max |W| (tolerance {tolerance:.3g})"
        )

    def _project(self, W: Tensor) -> Tensor:
        # The nearest point in Frobenius norm: the (skew-)symmetric part.
        return (W + self.sign * self._mirror(W)) / 2

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """The projection onto the set of a matrix of standard (complex) normal entries.

        Example:
            >>> param = Skew(torch.Size([3, 3]), label="W")
            >>> W = param.sample()
            >>> torch.equal(W, -W.mT)
            True
        """
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self._project(G)


class Skew(_Mirrored):
    r"""Skew-symmetric matrices (skew-Hermitian if complex), read from a triangle: ``W = -Wᴴ``.

    With ``L`` the strict lower (``lower=True``) or upper triangle of ``X``,

    .. math::
        W = L - L^\mathsf{H} + i \operatorname{diag}(\operatorname{Im} X_{jj}),

    where the diagonal term exists only for complex tensors (a skew-Hermitian matrix has an
    imaginary diagonal; a real skew-symmetric one a zero diagonal). For real tensors this is
    geotorch's ``Skew``: the same ``W`` from the same ``X``. Leading dimensions are a batch.
    The right inverse stores the triangle of ``W`` that the map reads (so ``W`` is kept exactly);
    the projection is the skew part ``(W - Wᴴ)/2``; :meth:`in_manifold` accepts
    ``max |W + Wᴴ| <= tol · max |W|``, by default ``tol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        lower: read the strict lower triangle (else the upper one). Default: ``True``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real or complex).
        device: the weight's device.

    Raises:
        ValueError: fewer than 2 dimensions, or non-square matrices.
        TypeError: ``lower`` is not a bool.

    Example:
        >>> param = Skew(torch.Size([3, 3]), label="W")
        >>> param(torch.arange(9.0).reshape(3, 3))
        tensor([[ 0., -3., -6.],
                [ 3.,  0., -7.],
                [ 6.,  7.,  0.]])
    """

    sign = -1
    what = "skew-symmetric"

    def _evaluate(self, X: Tensor) -> Tensor:
        L = self._strict(X)
        W = L - L.mH
        if X.is_complex():
            d = X.diagonal(dim1=-2, dim2=-1)
            W = W + torch.diag_embed(d - d.real)  # d - Re d = i Im d, exactly
        return W

    def _right_inverse(self, W: Tensor) -> Tensor:
        # A complex W keeps its (imaginary) diagonal, which the map reads.
        offset = 0 if W.is_complex() else (-1 if self.lower else 1)
        return W.tril(offset) if self.lower else W.triu(offset)


class Symmetric(_Mirrored):
    r"""Symmetric matrices, or Hermitian ones (``hermitian=True``), read from a triangle.

    With ``T`` the lower (``lower=True``) or upper triangle of ``X`` including the diagonal and
    ``L`` the same without it,

    .. math::
        W = T + L^\mathsf{T} \quad\text{(symmetric)}, \qquad
        W = L + L^\mathsf{H} + \operatorname{diag}(\operatorname{Re} X_{jj})
        \quad\text{(Hermitian)}.

    For real tensors both are geotorch's ``Symmetric`` (the same ``W`` from the same ``X``);
    for complex ones ``hermitian=False`` gives complex symmetric matrices (``W = Wᵀ``) and
    ``hermitian=True`` Hermitian ones (``W = Wᴴ``, real diagonal). Leading dimensions are a
    batch. The right inverse stores the triangle that the map reads (so ``W`` is kept
    exactly); the projection is ``(W + Wᴴ)/2`` (``(W + Wᵀ)/2``); :meth:`in_manifold` accepts
    ``max |W - Wᴴ| <= tol · max |W|``, by default ``tol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        lower: read the lower triangle (else the upper one). Default: ``True``.
        hermitian: mirror with the conjugate transpose. Default: ``False``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real or complex).
        device: the weight's device.

    Raises:
        ValueError: fewer than 2 dimensions, or non-square matrices.
        TypeError: ``lower`` or ``hermitian`` is not a bool.

    Example:
        >>> param = Symmetric(torch.Size([2, 2]), label="W")
        >>> param(torch.tensor([[1.0, 5.0], [2.0, 3.0]]))
        tensor([[1., 2.],
                [2., 3.]])
        >>> hermitian = Symmetric(torch.Size([2, 2]), hermitian=True, label="W")
        >>> hermitian(torch.tensor([[1 + 1j, 0], [2j, 3]]))
        tensor([[1.+0.j, 0.-2.j],
                [0.+2.j, 3.+0.j]])
    """

    sign = 1

    def __init__(
        self,
        shape: torch.Size,
        lower: bool = True,
        *,
        hermitian: bool = False,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        _check_bool(hermitian, "hermitian", label)
        self.hermitian = hermitian
        self.what = "Hermitian" if hermitian else "symmetric"
        super().__init__(shape, lower, label=label, dtype=dtype, device=device)

    @property
    def conjugates(self) -> bool:
        """Whether the mirror conjugates: for Hermitian matrices."""
        return self.hermitian

    def extra_repr(self) -> str:
        return f"lower={self.lower}, hermitian={self.hermitian}"

    def _evaluate(self, X: Tensor) -> Tensor:
        L = self._strict(X)
        if self.hermitian and X.is_complex():
            d = X.diagonal(dim1=-2, dim2=-1)
            return L + L.mH + torch.diag_embed(d.real)
        T = X.tril() if self.lower else X.triu()
        return T + L.mT

    def _right_inverse(self, W: Tensor) -> Tensor:
        return W.tril() if self.lower else W.triu()
