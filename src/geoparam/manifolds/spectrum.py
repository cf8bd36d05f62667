"""Spectra: vectors of singular values or eigenvalues, ``s = f(x)`` entry by entry.

The factor that SVD-type and eigen-type products (low rank, fixed rank, almost orthogonal,
positive definite, ...) use for their diagonal, and the tables of the functions ``f`` they accept
by name, with their inverses (geotorch's names and constants).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import Parametrization

__all__ = [
    "BOUNDED_FUNCTIONS",
    "POSITIVE_FUNCTIONS",
    "Spectrum",
    "require_inverse",
    "resolve_function",
]

ElementwiseMap = Callable[[Tensor], Tensor]
FunctionPair = tuple[ElementwiseMap, ElementwiseMap | None]
#: What the ``f`` arguments of the front doors accept: a name, a callable or a pair.
FunctionArgument = str | ElementwiseMap | tuple[ElementwiseMap, ElementwiseMap]

# softplus + 1e-6, geotorch's default for positive spectra: never exactly zero, so a fixed rank
# stays fixed and a positive definite matrix stays invertible.
_SOFTPLUS_FLOOR = 1e-6


def _softplus_floor(x: Tensor) -> Tensor:
    return F.softplus(x) + _SOFTPLUS_FLOOR


def _softplus_floor_inverse(y: Tensor) -> Tensor:
    # softplus⁻¹(z) = z + log(1 - exp(-z)), written with expm1 to stay accurate for small z.
    z = (y - _SOFTPLUS_FLOOR).clamp_min(torch.finfo(y.dtype).tiny)
    return z + torch.log(-torch.expm1(-z))


def _identity(x: Tensor) -> Tensor:
    return x


def inset(dtype: torch.dtype) -> float:
    """How far inside an open end of an interval of width 1 values are clamped (``f⁻¹`` is finite).

    ``10⁻¹²`` in double, ``10⁻⁶`` in single precision; half types need a step they can resolve.
    """
    return 1e-12 if dtype == torch.float64 else max(1e-6, torch.finfo(dtype).eps)


def _scaled_sigmoid(x: Tensor) -> Tensor:
    return torch.tanh(x / 2)  # 2·sigmoid(x) - 1


def _scaled_sigmoid_inverse(y: Tensor) -> Tensor:
    return 2 * torch.atanh(y)


#: Maps onto the positive reals (fixed rank, positive definite, GL⁺, SL): name -> (f, f⁻¹).
POSITIVE_FUNCTIONS: dict[str, FunctionPair] = {
    "softplus": (_softplus_floor, _softplus_floor_inverse),
    "exp": (torch.exp, torch.log),
}
#: Maps onto [-1, 1] (almost orthogonal: singular values 1 + λ f(x)): name -> (f, f⁻¹).
BOUNDED_FUNCTIONS: dict[str, FunctionPair] = {
    "sin": (torch.sin, torch.asin),
    "tanh": (torch.tanh, torch.atanh),
    "scaled_sigmoid": (_scaled_sigmoid, _scaled_sigmoid_inverse),
}


def resolve_function(
    f: FunctionArgument,
    table: dict[str, FunctionPair],
    label: str,
) -> FunctionPair:
    """``(f, f⁻¹)`` from a name of ``table``, a callable (no inverse) or a pair of callables.

    Raises:
        ValueError: an unknown name, or something that is neither a callable nor a pair.
    """
    if isinstance(f, str):
        if f not in table:
            names = ", ".join(f'"{name}"' for name in table)
            raise ValueError(
                f"{label}: f must be one of {names}, a callable or a pair "
                f"(f, f_inverse) of callables; got {f!r}."
            )
        return table[f]
    if isinstance(f, tuple) and len(f) == 2 and all(callable(g) for g in f):
        return f[0], f[1]
    if callable(f):
        return f, None
    raise ValueError(
        f"{label}: f must be a name, a callable or a pair (f, f_inverse) of callables; got {f!r}."
    )


def require_inverse(
    f: FunctionArgument, table: dict[str, FunctionPair], where: str
) -> tuple[ElementwiseMap, ElementwiseMap]:
    """:func:`resolve_function`, refusing a lone callable: a weight could not be kept with it.

    Raises:
        ValueError: as :func:`resolve_function`, or ``f`` has no inverse.
    """
    f, f_inverse = resolve_function(f, table, where)
    if f_inverse is None:
        raise ValueError(
            f"{where}: f has no inverse, so the weight it is registered on cannot be kept (nor "
            "a value assigned); pass f as a pair (f, f_inverse)."
        )
    return f, f_inverse


class Spectrum(Parametrization):
    r"""A vector of values in an interval, ``s = f(x)`` entry by entry.

    ``f`` maps the reals into the interval from ``low`` to ``high`` (either end may be infinite);
    its inverse, when given, maps assigned values back. The ends are excluded (``f⁻¹`` is
    infinite there: ``log 0``, ``logit 1``) unless ``includes_low`` says ``f`` reaches ``low``.
    Values outside are off the set and are projected by clamping them just inside it.

    Args:
        shape: the vector's shape (leading dimensions are a batch).
        f: the map, and its inverse or ``None`` (assignments then fail). Default: the identity.
        low: the lower end of the interval that ``f`` maps into. Default: ``-inf``.
        high: its upper end. Default: ``inf``.
        includes_low: whether ``f`` reaches ``low`` (``|x|`` reaches 0). Default: ``False``.
        label: how messages name the tensor.
        dtype: the vector's dtype. Default: torch's default dtype.
        device: the vector's device. Default: the CPU.

    Example:
        >>> s = Spectrum(torch.Size([3]), POSITIVE_FUNCTIONS["exp"], low=0.0, label="s")
        >>> x = s.right_inverse(torch.tensor([1.0, 2.0, 3.0]))
        >>> s(x)
        tensor([1., 2., 3.])
    """

    def __init__(
        self,
        shape: torch.Size,
        f: FunctionPair = (_identity, _identity),
        *,
        low: float = -math.inf,
        high: float = math.inf,
        includes_low: bool = False,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, label=label, dtype=dtype, device=device)
        self.f, self.f_inverse = f
        self.low, self.high, self.includes_low = low, high, includes_low

    def extra_repr(self) -> str:
        name = getattr(self.f, "__name__", type(self.f).__name__).lstrip("_")
        return f"f={name}, low={self.low:g}, high={self.high:g}"

    def _evaluate(self, x: Tensor) -> Tensor:
        return self.f(x)

    def _right_inverse(self, s: Tensor) -> Tensor:
        if self.f_inverse is None:
            raise ValueError(
                f"{self.label}: f has no inverse, so a value cannot be assigned (nor the weight "
                "kept at registration); pass f as a pair (f, f_inverse)."
            )
        return self.f_inverse(s)

    def _violation(self, s: Tensor, atol: float | None) -> str | None:
        if s.numel() == 0:
            return None
        atol = 0.0 if atol is None else atol
        smallest, largest = float(s.min()), float(s.max())
        if smallest < self.low - atol or (smallest <= self.low and not self.includes_low):
            return f"its smallest value is {smallest:.6g}, not above {self.low:.6g}"
        if largest >= self.high:
            return f"its largest value is {largest:.6g}, not below {self.high:.6g}"
        return None

    def _project(self, s: Tensor) -> Tensor:
        # Just inside the interval: the inverse of a bounded f is infinite at its ends.
        width = self.high - self.low
        margin = inset(s.dtype) * (1.0 if math.isinf(width) else width)
        return s.clamp(self.low + margin, self.high - margin)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``f`` of a standard normal vector."""
        x = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        return self.f(x)
