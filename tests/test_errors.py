"""Every error of the three drop-ins, as a table: geoparam's type and wording against torch's.

For each input that ``torch.nn.utils.parametrizations`` rejects on purpose, geoparam must raise
the same exception type and its message must contain torch 2.13's wording (code written against
torch matches on it), after geoparam's naming of the module and tensor. Where torch fails only by
accident, inside a kernel, geoparam raises a clear error whose class derives from torch's type.
Where torch accepts an input that cannot work, geoparam rejects it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

import geoparam
from geoparam.errors import (
    InvalidNameError,
    NotAModuleError,
    NotATensorError,
    UnsupportedDtypeError,
)

TORCH_2_13 = torch.__version__.startswith("2.13.")


def _linear() -> nn.Module:
    return nn.Linear(3, 4)


def _holder(value: torch.Tensor) -> nn.Module:
    """A bare module whose ``weight`` is ``value`` (a buffer if it cannot be a parameter)."""
    module = nn.Module()
    if value.is_floating_point() or value.is_complex():
        module.weight = nn.Parameter(value)
    else:
        module.register_buffer("weight", value)
    return module


def _integer() -> nn.Module:
    return _holder(torch.ones(3, 3, dtype=torch.int64))


def _complex() -> nn.Module:
    return _holder(torch.randn(4, 3, dtype=torch.complex64))


def _scalar() -> nn.Module:
    return _holder(torch.tensor(2.0))


@dataclass(frozen=True)
class _Assignment:
    """Register ``function`` (without error), then assign ``value`` to ``module.weight``."""

    function: str
    value: object
    kwargs: dict

    def __call__(self, library: ModuleType, module: nn.Module) -> None:
        getattr(library, self.function)(module, **self.kwargs)


def _register(function: str, *args, **kwargs) -> Callable[[ModuleType, nn.Module], object]:
    return lambda library, module: getattr(library, function)(module, *args, **kwargs)


def _assign(function: str, value: object, **kwargs) -> _Assignment:
    return _Assignment(function, value, kwargs)


@dataclass(frozen=True)
class Case:
    """One bad input: ``build`` makes a module and ``register`` applies a library to it (then,
    for an :class:`_Assignment`, assigns its value to ``module.weight``)."""

    build: Callable[[], nn.Module]
    register: Callable[[ModuleType, nn.Module], object]
    error: type[Exception]  # the type torch raises (geoparam's must be an instance of it)
    torch_wording: str | None  # torch 2.13's wording for the case; None where torch's is accidental
    names: tuple[str, ...] = ()  # what geoparam's message adds: module, tensor, shape, value
    geoparam_error: type[Exception] | None = None  # geoparam's own class, where it has one

    @property
    def assignment(self) -> bool:
        return isinstance(self.register, _Assignment)

    def act(self, library: ModuleType, module: nn.Module) -> None:
        self.register(library, module)
        if isinstance(self.register, _Assignment):
            module.weight = self.register.value


_F64 = torch.zeros(4, 3, dtype=torch.float64)

# Inputs torch rejects on purpose: same type, torch's wording.
DELIBERATE = {
    "orthogonal-missing-tensor": Case(
        _linear,
        _register("orthogonal", "weights"),
        ValueError,
        "has no parameter or buffer with name",
        ("orthogonal", "'weights'", "its tensors: bias, weight"),
    ),
    "orthogonal-1d": Case(
        _linear,
        _register("orthogonal", "bias"),
        ValueError,
        "Expected a matrix or batch of matrices. Got a tensor of 1 dimensions.",
        ("Linear.bias",),
    ),
    "orthogonal-0d": Case(
        _scalar,
        _register("orthogonal"),
        ValueError,
        "Expected a matrix or batch of matrices. Got a tensor of 0 dimensions.",
        ("Module.weight",),
    ),
    "orthogonal-unknown-map": Case(
        _linear,
        _register("orthogonal", orthogonal_map="qr"),
        ValueError,
        'orthogonal_map has to be one of "matrix_exp", "cayley", "householder". Got: qr',
        ("Linear.weight",),
    ),
    "orthogonal-householder-complex": Case(
        _complex,
        _register("orthogonal", orthogonal_map="householder"),
        ValueError,
        "The householder parametrization does not support complex tensors.",
        ("Module.weight", "complex64"),
    ),
    "orthogonal-name-not-a-string": Case(
        _linear,
        _register("orthogonal", 3),
        TypeError,
        "attribute name must be string, not 'int'",
        ("orthogonal",),
        InvalidNameError,
    ),
    "spectral_norm-name-not-a-string": Case(
        _linear,
        _register("spectral_norm", None),
        TypeError,
        "attribute name must be string, not 'NoneType'",
        ("spectral_norm",),
        InvalidNameError,
    ),
    "weight_norm-missing-tensor": Case(
        lambda: nn.Conv2d(1, 1, 1),
        _register("weight_norm", "kernel"),
        ValueError,
        "does not have a parameter, a buffer, or a parametrized element with name",
        ("weight_norm", "'kernel'"),
    ),
    "weight_norm-name-not-a-string": Case(
        _linear,
        _register("weight_norm", 3),
        ValueError,
        None,  # torch reports the int as a missing name
        ("weight_norm", "'int'"),
        InvalidNameError,
    ),
    **{
        f"weight_norm-dim-{dim}": Case(
            _linear,
            _register("weight_norm", dim=dim),
            IndexError,
            f"Dimension out of range (expected to be in range of [-2, 1], but got {dim})",
            ("Linear.weight", "(4, 3)"),
        )
        for dim in (2, -3, 7)
    },
    "weight_norm-0d-dim-0": Case(
        _scalar,
        _register("weight_norm", dim=0),
        IndexError,
        "Dimension specified as 0 but tensor has no dimensions",
        ("Module.weight",),
    ),
    "weight_norm-dim-not-an-int": Case(
        _linear,
        _register("weight_norm", dim=1.5),
        TypeError,
        "norm_except_dim(): argument 'dim' (position 3) must be int, not float",
        ("Linear.weight",),
    ),
    "spectral_norm-missing-tensor": Case(
        lambda: nn.ConvTranspose2d(1, 1, 1),
        _register("spectral_norm", "weight_orig"),
        ValueError,
        "has no parameter or buffer with name",
        ("spectral_norm", "'weight_orig'"),
    ),
    **{
        f"spectral_norm-dim-{dim}": Case(
            _linear,
            _register("spectral_norm", dim=dim),
            IndexError,
            f"Dimension out of range (expected to be in range of [-2, 1] but got {dim})",
            ("Linear.weight", "(4, 3)"),
        )
        for dim in (2, -3)
    },
    "spectral_norm-0d": Case(
        _scalar,
        _register("spectral_norm"),
        IndexError,
        "Dimension out of range (expected to be in range of [-0, -1] but got 0)",
        ("Module.weight",),
    ),
    **{
        f"spectral_norm-power-iterations-{n}": Case(
            _linear,
            _register("spectral_norm", n_power_iterations=n),
            ValueError,
            f"Expected n_power_iterations to be positive, but got n_power_iterations={n}",
            ("Linear.weight",),
        )
        for n in (0, -1)
    },
    **{
        f"orthogonal-assign-shape-{orthogonal_map}-{trivialization}": Case(
            _linear,
            _assign(
                "orthogonal",
                torch.eye(3, 4),
                orthogonal_map=orthogonal_map,
                use_trivialization=trivialization,
            ),
            ValueError,
            "Expected a matrix or batch of matrices of shape torch.Size([4, 3]). "
            "Got a tensor of shape torch.Size([3, 4]).",
            ("Linear.weight",),
        )
        for orthogonal_map, trivialization in (
            ("matrix_exp", True),
            ("cayley", True),
            ("householder", True),
            ("householder", False),
        )
    },
    **{
        f"orthogonal-assign-without-trivialization-{orthogonal_map}": Case(
            _linear,
            _assign(
                "orthogonal",
                torch.eye(4, 3),
                orthogonal_map=orthogonal_map,
                use_trivialization=False,
            ),
            NotImplementedError,
            "It is not possible to assign to the matrix exponential or the Cayley "
            "parametrizations when use_trivialization=False.",
        )
        for orthogonal_map in ("matrix_exp", "cayley")
    },
    **{
        f"orthogonal-assign-dtype-{orthogonal_map}": Case(
            _linear,
            _assign("orthogonal", _F64, orthogonal_map=orthogonal_map),
            ValueError,
            "The tensor returned by `right_inverse` has dtype torch.float64 while `original` "
            "has dtype torch.float32",
            ("Linear.weight",),
        )
        for orthogonal_map in ("matrix_exp", "cayley", "householder")
    },
    "weight_norm-assign-dtype": Case(
        _linear,
        _assign("weight_norm", _F64),
        ValueError,
        "Tensor 0 returned by `right_inverse` has dtype torch.float64 while `original0` has "
        "dtype torch.float32",
    ),
    "spectral_norm-assign-dtype": Case(
        _linear,
        _assign("spectral_norm", _F64),
        ValueError,
        "The tensor returned by `right_inverse` has dtype torch.float64 while `original` has "
        "dtype torch.float32",
    ),
    "spectral_norm-assign-not-a-tensor": Case(
        _linear,
        _assign("spectral_norm", "weights"),
        ValueError,
        "`right_inverse` should return a tensor. Got str",
        ("Linear.weight",),
        NotATensorError,
    ),
}

# Inputs torch rejects only by accident (an error from inside a kernel): geoparam says what is
# wrong, with a class derived from the type torch raises.
ACCIDENTAL = {
    "orthogonal-integer": Case(
        _integer,
        _register("orthogonal"),
        TypeError,
        None,
        ("Module.weight", "torch.int64", "floating-point or complex"),
        UnsupportedDtypeError,
    ),
    "weight_norm-integer": Case(
        _integer,
        _register("weight_norm"),
        RuntimeError,
        None,
        ("Module.weight", "torch.int64"),
        UnsupportedDtypeError,
    ),
    "spectral_norm-integer": Case(
        _integer,
        _register("spectral_norm"),
        NotImplementedError,
        None,
        ("Module.weight", "torch.int64"),
        UnsupportedDtypeError,
    ),
    **{
        f"{function}-not-a-module": Case(
            lambda: torch.zeros(3, 3),
            _register(function),
            error,
            None,
            (function, "Tensor"),
            NotAModuleError,
        )
        for function, error in (
            ("orthogonal", ValueError),
            ("weight_norm", AttributeError),
            ("spectral_norm", ValueError),
        )
    },
    "spectral_norm-power-iterations-not-an-int": Case(
        _linear,
        _register("spectral_norm", n_power_iterations=1.5),
        TypeError,
        None,
        ("n_power_iterations", "1.5"),
    ),
    "spectral_norm-dim-not-an-int": Case(
        _linear, _register("spectral_norm", dim="0"), TypeError, None, ("dim", "'0'")
    ),
    **{
        f"{function}-assign-not-a-tensor": Case(
            _linear,
            _assign(function, "weights"),
            error,
            None,
            ("Linear.weight", "Got str"),
            NotATensorError,
        )
        for function, error in (("orthogonal", AttributeError), ("weight_norm", TypeError))
    },
}

# Inputs torch accepts although they cannot work (or silently resize the weight).
STRICTER = {
    "weight_norm-complex": Case(
        _complex, _register("weight_norm"), ValueError, None, ("Module.weight", "complex")
    ),
    "spectral_norm-eps-0": Case(
        _linear, _register("spectral_norm", eps=0.0), ValueError, None, ("Linear.weight", "eps")
    ),
    **{
        f"{function}-assign-shape": Case(
            _linear,
            _assign(function, torch.randn(5, 5)),
            ValueError,
            None,
            ("Linear.weight", "(5, 5)", "(4, 3)"),
        )
        for function in ("weight_norm", "spectral_norm")
    },
}

ALL = {**DELIBERATE, **ACCIDENTAL, **STRICTER}


@pytest.mark.parametrize("case", ALL.values(), ids=ALL.keys())
def test_geoparam_raises_torch_type_and_wording(case: Case) -> None:
    torch.manual_seed(0)
    module = case.build()
    before = None
    if case.assignment:
        case.register(geoparam, module)
        before = module.weight.detach().clone()
    with pytest.raises(case.error) as raised:
        if case.assignment:
            module.weight = case.register.value
        else:
            case.register(geoparam, module)
    message = str(raised.value)
    if case.geoparam_error is not None:
        assert isinstance(raised.value, case.geoparam_error)
    if case.torch_wording is not None:
        assert case.torch_wording in message
    for name in case.names:
        assert name in message
    if before is not None:
        # A refused assignment leaves the weight (and so the stored tensors) as they were.
        assert torch.equal(module.weight, before)
    elif isinstance(module, nn.Module):
        # A failed registration leaves the module as it was.
        assert type(module).__name__ in {"Linear", "Conv2d", "ConvTranspose2d", "Module"}
        assert not parametrize.is_parametrized(module)


@pytest.mark.parametrize("case", DELIBERATE.values(), ids=DELIBERATE.keys())
def test_torch_raises_the_same_type_and_wording(case: Case) -> None:
    """The table is checked against the installed torch: its type, and its text verbatim."""
    torch.manual_seed(0)
    with pytest.raises(case.error) as from_torch:
        case.act(torch_parametrizations, case.build())
    if case.torch_wording is None:
        return
    if case.torch_wording not in str(from_torch.value):
        assert not TORCH_2_13, f"torch 2.13 words this case as: {from_torch.value}"
        pytest.skip(f"torch {torch.__version__} words this case differently")
    if TORCH_2_13:
        # geoparam's message contains torch's whole message, not only its fixed part.
        torch.manual_seed(0)
        with pytest.raises(case.error) as from_geoparam:
            case.act(geoparam, case.build())
        assert str(from_torch.value) in str(from_geoparam.value)


@pytest.mark.parametrize("case", ACCIDENTAL.values(), ids=ACCIDENTAL.keys())
def test_torch_fails_by_accident_with_the_tabled_type(case: Case) -> None:
    """Observation: torch's type for these inputs (geoparam's class derives from it)."""
    torch.manual_seed(0)
    try:
        case.act(torch_parametrizations, case.build())
    except case.error:
        return
    except Exception as error:
        pytest.skip(f"torch {torch.__version__} raises {type(error).__name__} here now")
    pytest.skip(f"torch {torch.__version__} no longer fails on this input")


@pytest.mark.parametrize("case", STRICTER.values(), ids=STRICTER.keys())
def test_torch_accepts_what_geoparam_rejects(case: Case) -> None:
    """Observation: torch does not reject these inputs (documented on the migration page)."""
    torch.manual_seed(0)
    try:
        case.act(torch_parametrizations, case.build())
    except Exception as error:
        pytest.skip(f"torch {torch.__version__} rejects this input now ({type(error).__name__})")
