"""The catalogue's test cases: what every constraint of geoparam's catalogue is checked for.

A family of constraints describes its cases in a module of ``tests/catalogue_cases/`` (``CASES``:
:class:`Case` objects; ``BAD_CALLS``: :class:`BadCall` objects), and ``test_catalogue.py`` runs
every check on every case. Each case carries an *oracle* written independently of the library
(``satisfies``, e.g. singular values from ``torch.linalg.svdvals``) and a way to build points on
the set without the library (``on_set``), so that the library is never its own judge.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# The oracle's tolerance, after 200 Adam steps in float32 and for float64 checks.
ATOL = {torch.float32: 2e-4, torch.complex64: 2e-4, torch.float64: 1e-9, torch.complex128: 1e-9}


@dataclass(frozen=True)
class Case:
    """One constraint on one shape and dtype.

    Attributes:
        id: the test id, e.g. ``"low_rank-tall"``.
        register: applies the front door to a module whose tensor is ``weight``.
        shape: the weight's shape.
        satisfies: ``satisfies(W, atol)`` is ``None`` when ``W`` has the property (up to
            ``atol``, relative to the property's scale) and otherwise says what fails.
        on_set: maps a standard normal tensor of ``shape`` onto a point of the set.
        off_set: maps a standard normal tensor onto a point off the set (``None``: the random
            tensor itself is off it).
        dtype: the weight's dtype in the training check. The float64 checks (gradient, kept
            weight) use the matching double type.
        gradcheck: whether the float64 gradient check applies (``False`` for a map with a
            projection or iteration that ``gradcheck``'s finite differences cannot follow).
        lr: Adam's learning rate in the training check.
    """

    id: str
    register: Callable[[nn.Module], object]
    shape: tuple[int, ...]
    satisfies: Callable[[Tensor, float], str | None]
    on_set: Callable[[Tensor], Tensor]
    off_set: Callable[[Tensor], Tensor] | None = None
    dtype: torch.dtype = torch.float32
    gradcheck: bool = True
    lr: float = 1e-2
    marks: tuple = field(default=())


@dataclass(frozen=True)
class BadCall:
    """A front-door call that must fail with ``error`` and a message matching ``match``."""

    id: str
    call: Callable[[nn.Module], object]
    shape: tuple[int, ...]
    error: type[Exception]
    match: str
    dtype: torch.dtype = torch.float32


class Holder(nn.Module):
    """A module whose only tensor is ``weight``."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(value.clone())


def double(dtype: torch.dtype) -> torch.dtype:
    """The double-precision type of the same kind (real or complex)."""
    return torch.complex128 if dtype.is_complex else torch.float64


def randn(case: Case, dtype: torch.dtype | None = None, seed: int = 0) -> Tensor:
    """A standard normal tensor of the case's shape and ``dtype`` (default: the case's)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(case.shape, dtype=dtype or case.dtype, generator=generator)


def parametrization(module: nn.Module) -> nn.Module:
    """The (first) parametrization registered on ``module.weight``."""
    return module.parametrizations.weight[0]


def originals(module: nn.Module) -> tuple[Tensor, ...]:
    """The tensors stored for ``module.weight``: ``original`` or ``original0``, ``original1``..."""
    parametrizations = module.parametrizations.weight
    if hasattr(parametrizations, "original"):
        return (parametrizations.original,)
    stored = (*parametrizations._parameters, *parametrizations._buffers)
    count = sum(1 for key in stored if key.startswith("original"))
    return tuple(getattr(parametrizations, f"original{i}") for i in range(count))


def load_cases() -> tuple[list[Case], list[BadCall]]:
    """Every ``CASES`` and ``BAD_CALLS`` of the modules in ``tests/catalogue_cases/``."""
    import catalogue_cases

    cases: list[Case] = []
    bad_calls: list[BadCall] = []
    for info in sorted(pkgutil.iter_modules(catalogue_cases.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"catalogue_cases.{info.name}")
        cases += getattr(module, "CASES", [])
        bad_calls += getattr(module, "BAD_CALLS", [])
    return cases, bad_calls


def singular_values(W: Tensor) -> Tensor:
    """The singular values of the matrices of ``W``, in float64, descending (the oracle's)."""
    return torch.linalg.svdvals(W.to(double(W.dtype)))


def hermitian_eigenvalues(W: Tensor) -> Tensor:
    """The eigenvalues of the Hermitian part of ``W``, in float64, ascending."""
    W = W.to(double(W.dtype))
    return torch.linalg.eigvalsh((W + W.mH) / 2)


def distance_to_hermitian(W: Tensor) -> float:
    """``max |W - Wᴴ|``, relative to ``max |W|``."""
    W = W.to(double(W.dtype))
    return float((W - W.mH).abs().max() / W.abs().max().clamp_min(1.0))
