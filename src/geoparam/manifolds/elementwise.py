"""Entrywise constraints: positive, bounded, stochastic (simplex) and doubly stochastic weights."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import UnsupportedDtypeError
from ._base import Parametrization
from .linear import check_square, default_tolerance
from .spectrum import POSITIVE_FUNCTIONS, require_inverse

__all__ = ["Bounded", "DoublyStochastic", "Positive", "Simplex"]

#: Fraction of the scale by which projections stay inside an open set: an entry stored at the
#: boundary (log 0, logit 0) would get no gradient and never move again.
_INSET = 1e-3
#: Fraction of the largest entry below which a doubly stochastic projection clamps: the rate of
#: Sinkhorn's iteration degrades with the ratio between the entries, and training only widens it.
_SINKHORN_FLOOR = 0.1
#: The most Sinkhorn iterations a projection or a sample runs before it settles for what it has.
_MAX_SINKHORN_ITERATIONS = 10_000


class _Entrywise(Parametrization):
    """Real tensors of a given shape; ``what`` names the set in messages."""

    what: str
    reuses_evaluations = False  # an entrywise map costs less than reusing it

    def __init__(
        self,
        shape: torch.Size,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.where = f"{label} of shape {tuple(self.shape)}"
        if self.dtype.is_complex:
            raise UnsupportedDtypeError(
                f"{self.where}: {self.what} needs real entries, got dtype {self.dtype}."
            )


def _real_number(value: object, name: str, where: str) -> float:
    """``value`` as a finite float, or ``TypeError`` / ``ValueError`` saying what it is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value!r}.")
    return float(value)


class Positive(_Entrywise):
    r"""Tensors with positive entries: ``W = f(X)`` entry by entry.

    ``f`` is ``"softplus"`` (``softplus(x) + 1e-6``, geotorch's positive map: values above
    ``1e-6``), ``"exp"``, a callable, or a pair ``(f, f_inverse)``. The right inverse is
    ``f⁻¹(W)`` (so ``W`` is kept, except that ``"softplus"`` stores entries below ``1e-6`` as
    ``1e-6``); a lone callable has none, and then neither assignment nor registration works.
    :meth:`in_manifold` accepts entries ``> -atol``, by default ``> 0``. The projection raises
    entries below ``10⁻³ · max |W|`` to that floor (small, but where ``f`` still has a gradient).

    Args:
        shape: the weight's shape (any).
        f: the map onto the positive reals. Default: ``"softplus"``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real).
        device: the weight's device.

    Raises:
        ValueError: an unknown name ``f``.
        UnsupportedDtypeError: a complex dtype.

    Example:
        >>> param = Positive(torch.Size([3]), "exp", label="w")
        >>> param(torch.tensor([0.0, 1.0, -1.0]))
        tensor([1.0000, 2.7183, 0.3679])
    """

    what = "a positive weight"

    def __init__(
        self,
        shape: torch.Size,
        f: str | Callable[[Tensor], Tensor] | tuple[Callable, Callable] = "softplus",
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.f, self.f_inverse = require_inverse(f, POSITIVE_FUNCTIONS, self.where)
        self._name = f if isinstance(f, str) else getattr(self.f, "__name__", "custom")

    def extra_repr(self) -> str:
        return f"f={self._name!r}"

    def _evaluate(self, X: Tensor) -> Tensor:
        return self.f(X)

    def _right_inverse(self, W: Tensor) -> Tensor:
        return self.f_inverse(W)

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        smallest = float(W.min()) if W.numel() else math.inf
        if smallest > -(atol or 0.0):
            return None
        return f"its smallest entry is {smallest:.4g}, not positive"

    def _project(self, W: Tensor) -> Tensor:
        # Only the entries that are not positive move, to a floor far enough from f⁻¹(0) = -inf
        # for them to keep learning.
        scale = float(W.abs().max())
        return torch.where(W > 0, W, _INSET * (scale if scale > 0 else 1.0))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``f`` of standard normal entries.

        Example:
            >>> bool((Positive(torch.Size([4]), label="w").sample() > 0).all())
            True
        """
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self.f(G)


class Bounded(_Entrywise):
    r"""Tensors with entries in ``[low, high]``: ``W = low + (high - low) · sigmoid(X)``.

    The right inverse is the logit of ``(W - low)/(high - low)``, clipped to ``[eps, 1 - eps]``
    of the dtype so that entries at the bounds are stored finite (and come back within
    ``eps · (high - low)``). :meth:`in_manifold` accepts entries within ``atol · (high - low)`` of
    the interval, by default ``atol = 1000 · eps`` of the dtype. The projection clamps entries
    to ``10⁻³ · (high - low)`` inside the interval, where the sigmoid still has a gradient.

    Args:
        shape: the weight's shape (any).
        low: the lower bound, finite and below ``high``. Default: ``0.0``.
        high: the upper bound, finite. Default: ``1.0``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real).
        device: the weight's device.

    Raises:
        ValueError: ``low >= high``, or an infinite bound.
        TypeError: a bound that is not a real number.
        UnsupportedDtypeError: a complex dtype.

    Example:
        >>> param = Bounded(torch.Size([3]), low=-1.0, high=3.0, label="w")
        >>> param(torch.tensor([0.0, 100.0, -100.0]))
        tensor([ 1.,  3., -1.])
    """

    what = "a bounded weight"

    def __init__(
        self,
        shape: torch.Size,
        low: float = 0.0,
        high: float = 1.0,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.low = _real_number(low, "low", self.where)
        self.high = _real_number(high, "high", self.where)
        if not self.low < self.high:
            raise ValueError(f"{self.where}: low must be below high, got low={low}, high={high}.")

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"

    def _evaluate(self, X: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(X)

    def _right_inverse(self, W: Tensor) -> Tensor:
        eps = torch.finfo(W.dtype).eps
        return torch.logit((W - self.low) / (self.high - self.low), eps=eps)

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        if W.numel() == 0:
            return None
        slack = (default_tolerance(W.dtype) if atol is None else atol) * (self.high - self.low)
        smallest, largest = float(W.min()), float(W.max())
        if smallest < self.low - slack:
            return f"its smallest entry is {smallest:.6g}, below low = {self.low:.6g}"
        if largest > self.high + slack:
            return f"its largest entry is {largest:.6g}, above high = {self.high:.6g}"
        return None

    def _project(self, W: Tensor) -> Tensor:
        inset = _INSET * (self.high - self.low)
        return W.clamp(self.low + inset, self.high - inset)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """The map at standard normal entries (so most entries are well inside the interval)."""
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self._evaluate(G)


def _check_sums(W: Tensor, sums: dict[str, int], tolerance: float, what: str) -> str | None:
    """Whether ``W`` is non-negative and sums to 1 along each dim of ``sums`` (name -> dim)."""
    smallest = float(W.min())
    if smallest < -tolerance:
        return f"it is not {what}: its smallest entry is {smallest:.4g}, negative"
    for name, dim in sums.items():
        totals = W.sum(dim)
        error = (totals - 1).abs()
        if float(error.max()) > tolerance:
            worst = float(totals.flatten()[error.argmax()])
            return f"it is not {what}: one of its {name} sums to {worst:.6g}, not 1"
    return None


def _project_onto_simplex(V: Tensor) -> Tensor:
    """The nearest point of the probability simplex to each vector along the last dimension.

    The sort-based algorithm of Duchi, Shalev-Shwartz, Singer and Chandra, "Efficient
    projections onto the l1-ball for learning in high dimensions", ICML 2008: ``max(v - θ, 0)``,
    with ``θ`` found from the sorted entries.
    """
    n = V.size(-1)
    U = V.sort(dim=-1, descending=True).values
    excess = U.cumsum(dim=-1) - 1
    k = torch.arange(1, n + 1, dtype=V.dtype, device=V.device)
    # The entries above θ: a prefix of the sorted ones, never empty (the first always is).
    count = (U - excess / k > 0).sum(dim=-1, keepdim=True)
    theta = excess.gather(-1, count - 1) / count
    return (V - theta).clamp_min(0)


class Simplex(_Entrywise):
    r"""Tensors whose slices along ``dim`` are probability vectors: ``W = softmax(X, dim)``.

    Entries are non-negative and sum to 1 along ``dim`` (each row of a matrix, for the default
    ``dim=-1``); the other dimensions are a batch. The right inverse is ``log W``, with zero
    entries stored as ``log(tiny)`` (they come back as zero, up to the dtype's smallest normal
    number). :meth:`in_manifold` accepts entries ``>= -atol`` and sums within ``atol`` of 1, by
    default ``atol = 1000 · eps`` of the dtype. The projection is the Euclidean one onto the
    simplex (Duchi et al. 2008), after which every entry is raised to at least ``10⁻³ / n``
    (``n`` the size of ``dim``) and the slice renormalised, so that no entry is stored at
    ``log 0``, where the softmax has no gradient.

    Args:
        shape: the weight's shape (at least one dimension).
        dim: the dimension that sums to 1. Default: ``-1``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real).
        device: the weight's device.

    Raises:
        ValueError: ``dim`` out of range, or of size 0.
        TypeError: ``dim`` is not an int.
        UnsupportedDtypeError: a complex dtype.

    Example:
        >>> param = Simplex(torch.Size([2, 3]), label="W")
        >>> param(torch.zeros(2, 3)).sum(dim=-1)
        tensor([1., 1.])
    """

    what = "a stochastic weight"

    def __init__(
        self,
        shape: torch.Size,
        dim: int = -1,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"{self.where}: dim must be an int, got {dim!r}.")
        ndim = len(self.shape)
        if not -ndim <= dim < ndim or self.shape[dim] == 0:
            raise ValueError(
                f"{self.where}: dim must be a non-empty dimension, in [-{ndim}, {ndim - 1}]; "
                f"got {dim}."
            )
        self.dim = dim % ndim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _evaluate(self, X: Tensor) -> Tensor:
        return torch.softmax(X, dim=self.dim)

    def _right_inverse(self, W: Tensor) -> Tensor:
        return W.clamp_min(torch.finfo(W.dtype).tiny).log()

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        if W.numel() == 0:
            return None
        tolerance = default_tolerance(W.dtype) if atol is None else atol
        sums = {f"slices along dim {self.dim}": self.dim}
        return _check_sums(W, sums, tolerance, "stochastic")

    def _project(self, W: Tensor) -> Tensor:
        n = self.shape[self.dim]
        V = W.movedim(self.dim, -1)
        P = _project_onto_simplex(V).clamp_min(_INSET / n)
        P = P / P.sum(dim=-1, keepdim=True)
        # Slices already on the simplex stay as they are (a weight is projected slice by slice).
        tolerance = default_tolerance(W.dtype)
        on_set = (V.amin(dim=-1) >= -tolerance) & ((V.sum(dim=-1) - 1).abs() <= tolerance)
        return torch.where(on_set.unsqueeze(-1), V, P).movedim(-1, self.dim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """The softmax of standard normal entries."""
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self._evaluate(G)


def _sinkhorn(Y: Tensor, n_iterations: int) -> Tensor:
    """``log P`` for ``P`` the Sinkhorn normalisation of ``exp(Y)``: rows last, so rows exact.

    A row normalisation, then ``n_iterations`` times a column and a row normalisation, each a
    subtraction of a ``logsumexp`` (Cuturi, "Sinkhorn distances", NeurIPS 2013, in log form).
    """
    Y = Y - Y.logsumexp(dim=-1, keepdim=True)
    for _ in range(n_iterations):
        Y = Y - Y.logsumexp(dim=-2, keepdim=True)
        Y = Y - Y.logsumexp(dim=-1, keepdim=True)
    return Y


@torch.no_grad()
def _sinkhorn_until(Y: Tensor, tolerance: float) -> Tensor:
    """``exp(Y)`` normalised by Sinkhorn until its columns sum to 1 within ``tolerance``.

    Stops after :data:`_MAX_SINKHORN_ITERATIONS` (a matrix whose pattern of entries has no
    doubly stochastic scaling converges to one only in the limit).
    """
    Y = _sinkhorn(Y, 0)
    if Y.numel() == 0:  # no matrix to scale
        return Y.exp()
    for _ in range(_MAX_SINKHORN_ITERATIONS // 10):
        if float((Y.logsumexp(dim=-2).exp() - 1).abs().max()) <= tolerance:
            break
        Y = _sinkhorn(Y, 10)
    return Y.exp()


class DoublyStochastic(_Entrywise):
    r"""Doubly stochastic matrices (non-negative, rows and columns summing to 1), by Sinkhorn.

    ``W = S(exp(X))``, with ``S`` the Sinkhorn normalisation (Sinkhorn, 1964) run in the log
    domain for a fixed number of iterations: the rows of ``exp(X)`` are normalised, then
    ``n_iterations`` times its columns and its rows. The fixed count keeps the forward free of
    data-dependent control flow (``torch.compile(fullgraph=True)`` works) and differentiable
    by plain autograd. Leading dimensions are a batch.

    Tolerance: the rows sum to 1 to rounding, since a row normalisation comes last. The
    columns sum to 1 only as far as the iteration has converged: geometrically fast while the
    entries are bounded away from zero, slowly for matrices near the boundary of the set
    (entries near 0, as when a loss pulls the weight towards a permutation). The default
    ``n_iterations`` keeps the column sums within the float32 tolerance of :meth:`in_manifold`
    (``1000 · eps``) on the catalogue's training test; raise it for matrices that approach
    permutations, or check ``in_manifold``.

    The right inverse is ``log W`` (zero entries stored as ``log(tiny)``): the iteration leaves
    a doubly stochastic matrix as it is. The projection clamps the matrix below at
    ``0.1 · max |W|`` (entries far below the others would slow the iteration down in training)
    and runs Sinkhorn to convergence; :meth:`sample` runs it to convergence
    on ``exp`` of standard normal entries. :meth:`in_manifold` accepts entries ``>= -atol`` and
    row and column sums within ``atol`` of 1, by default ``atol = 1000 · eps`` of the dtype.

    Args:
        shape: the weight's shape ``(..., n, n)``.
        n_iterations: the number of column-and-row normalisations, at least 1. Default: ``50``.
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the weight's dtype (real).
        device: the weight's device.

    Raises:
        ValueError: fewer than 2 dimensions, non-square matrices, or ``n_iterations < 1``.
        TypeError: ``n_iterations`` is not an int.
        UnsupportedDtypeError: a complex dtype.

    Example:
        >>> param = DoublyStochastic(torch.Size([3, 3]), label="W")
        >>> W = param(torch.randn(3, 3))
        >>> torch.allclose(W.sum(dim=0), torch.ones(3)), torch.allclose(W.sum(dim=1), torch.ones(3))
        (True, True)
    """

    reuses_evaluations = True  # Sinkhorn iterations cost more than reusing them

    what = "a doubly stochastic weight"

    def __init__(
        self,
        shape: torch.Size,
        n_iterations: int = 50,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        check_square(self.shape, label, self.what)
        if isinstance(n_iterations, bool) or not isinstance(n_iterations, int):
            raise TypeError(f"{self.where}: n_iterations must be an int, got {n_iterations!r}.")
        if n_iterations < 1:
            raise ValueError(f"{self.where}: n_iterations must be at least 1, got {n_iterations}.")
        self.n_iterations = n_iterations

    def extra_repr(self) -> str:
        return f"n_iterations={self.n_iterations}"

    def _evaluate(self, X: Tensor) -> Tensor:
        return _sinkhorn(X, self.n_iterations).exp()

    def _right_inverse(self, W: Tensor) -> Tensor:
        return W.clamp_min(torch.finfo(W.dtype).tiny).log()

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        if W.numel() == 0:
            return None
        tolerance = default_tolerance(W.dtype) if atol is None else atol
        sums = {"rows": -1, "columns": -2}
        return _check_sums(W, sums, tolerance, "doubly stochastic")

    def _project(self, W: Tensor) -> Tensor:
        # Matrix by matrix: each floor is relative to its own matrix, and matrices already doubly
        # stochastic stay as they are.
        scale = W.abs().amax(dim=(-2, -1), keepdim=True)
        floor = _SINKHORN_FLOOR * torch.where(scale > 0, scale, torch.ones_like(scale))
        P = _sinkhorn_until(torch.maximum(W, floor).log(), default_tolerance(W.dtype) / 10)
        tolerance = default_tolerance(W.dtype)
        on_set = (
            (W.amin(dim=(-2, -1)) >= -tolerance)
            & ((W.sum(dim=-1) - 1).abs().amax(dim=-1) <= tolerance)
            & ((W.sum(dim=-2) - 1).abs().amax(dim=-1) <= tolerance)
        )
        return torch.where(on_set[..., None, None], W, P)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """The Sinkhorn normalisation (to convergence) of ``exp`` of standard normal entries."""
        G = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return _sinkhorn_until(G, default_tolerance(self.dtype) / 10)
