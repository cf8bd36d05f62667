"""geoparam.compat.geotorch: geotorch 0.4's front doors, with geotorch's call shapes, on geoparam.

Three kinds of checks: the signatures equal geotorch's; geotorch's own usage patterns (README,
examples, docstrings) run through the compat module and keep their constraints, with geoparam's
documented behaviour where the two libraries differ; and the same scripts, run with real geotorch
and with the compat module, both satisfy the constraint (the oracles are torch.linalg's).
"""

from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from geoparam.compat import geotorch as compat

HAS_GEOTORCH = importlib.util.find_spec("geotorch") is not None
needs_geotorch = pytest.mark.skipif(not HAS_GEOTORCH, reason="geotorch is not installed")

FRONT_DOORS = [
    "skew",
    "symmetric",
    "sphere",
    "orthogonal",
    "grassmannian",
    "low_rank",
    "fixed_rank",
    "almost_orthogonal",
    "invertible",
    "sln",
    "positive_definite",
    "positive_semidefinite",
    "positive_semidefinite_low_rank",
    "positive_semidefinite_fixed_rank",
    "alpha_stable",
    "update_base",
]

# The two libraries under the same name, for the scripts that run on both.
LIBRARIES = [
    pytest.param("geotorch", marks=needs_geotorch, id="geotorch"),
    pytest.param("compat", id="compat"),
]


def library(which: str):
    return importlib.import_module("geotorch") if which == "geotorch" else compat


# --- oracles, independent of both libraries --------------------------------------------------


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    return bool((a - b).abs().max() <= atol)


def orthonormal(W: torch.Tensor, atol: float = 1e-4) -> bool:
    W = W.mT if W.size(-2) < W.size(-1) else W
    return close(W.mT @ W, torch.eye(W.size(-1)).expand(*W.shape[:-2], -1, -1), atol)


def rank(W: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    s = torch.linalg.svdvals(W)
    return (s > tol * s.amax(-1, keepdim=True)).sum(-1)


def case_id(name: str, kwargs: dict) -> str:
    return "-".join([name, *map(str, kwargs.values())])


# --- 1. signatures ---------------------------------------------------------------------------


def test_exports_are_geotorchs_functions():
    assert sorted(compat.__all__) == sorted(FRONT_DOORS)
    if HAS_GEOTORCH:
        geotorch = importlib.import_module("geotorch")
        functions = [n for n in geotorch.__all__ if inspect.isfunction(getattr(geotorch, n))]
        assert sorted(functions) == sorted(FRONT_DOORS)


@needs_geotorch
@pytest.mark.parametrize("name", FRONT_DOORS)
def test_signature_is_geotorchs(name):
    geotorch = importlib.import_module("geotorch")

    def shape(function):
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert shape(getattr(compat, name)) == shape(getattr(geotorch, name))


def test_geotorch_classes_point_to_geoparams():
    with pytest.raises(AttributeError, match=r"geoparam\.manifolds\.LowRank"):
        compat.LowRank  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        compat.nothing  # noqa: B018


# --- 2. geotorch's usage patterns, through the compat module ---------------------------------


def test_readme_model():
    # README.rst: an orthogonal Linear and a Conv2d of rank-1 kernels, cached forward, Adam,
    # re-initialisation by assignment.
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 32)
            compat.orthogonal(self.linear, "weight")
            self.cnn = nn.Conv2d(4, 8, 3)
            compat.low_rank(self.cnn, "weight", rank=1)

        def forward(self, x, image):
            return self.linear(x).square().sum() + self.cnn(image).square().sum()

    model = Model()
    model.linear.weight = torch.eye(32, 16)
    assert torch.equal(model.linear.weight, torch.eye(32, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        with parametrize.cached():
            loss = model(torch.randn(8, 16), torch.randn(2, 4, 5, 5))
        loss.backward()
        optimizer.step()
    assert orthonormal(model.linear.weight)
    assert not close(model.linear.weight, torch.eye(32, 16))
    assert (rank(model.cnn.weight) <= 1).all()


def test_exprnn_pattern_with_riemannian_sgd():
    # examples/copying_problem.py: orthogonal recurrent kernel, its own parameter group, a
    # sample assigned, SGD followed by update_base on that tensor.
    cell = nn.Module()
    cell.recurrent_kernel = nn.Linear(8, 8, bias=False)
    cell.input_kernel = nn.Linear(3, 8)
    compat.orthogonal(cell.recurrent_kernel, "weight")
    M = cell.recurrent_kernel.parametrizations.weight[0]
    cell.recurrent_kernel.weight = M.sample()
    assert orthonormal(cell.recurrent_kernel.weight)

    p_orth = cell.recurrent_kernel
    orth_params = list(p_orth.parameters())
    assert orth_params == [p_orth.parametrizations.weight.original]  # the base is a buffer
    others = [p for p in cell.parameters() if all(p is not q for q in orth_params)]
    optimizer = torch.optim.SGD([{"params": orth_params, "lr": 0.1}, {"params": others}], lr=0.01)
    x = torch.randn(5, 4, 3)
    for _ in range(3):
        optimizer.zero_grad()
        h = torch.zeros(4, 8)
        with parametrize.cached():
            for t in range(5):
                h = torch.tanh(cell.recurrent_kernel(h) + cell.input_kernel(x[t]))
        h.square().sum().backward()
        optimizer.step()
        before = cell.recurrent_kernel.weight.detach().clone()
        compat.update_base(cell.recurrent_kernel, "weight")
        assert close(cell.recurrent_kernel.weight, before, 1e-5)
        assert p_orth.parametrizations.weight.original is orth_params[0]  # updated in place
    assert orthonormal(cell.recurrent_kernel.weight)


@pytest.mark.parametrize("f", ["scaled_sigmoid", "tanh", "sin"])
def test_sequential_mnist_pattern(f):
    # examples/sequential_mnist.py: positional rank and positional (lam, f).
    full = compat.low_rank(nn.Linear(6, 6, bias=False), "weight", 6)
    assert full.weight.shape == (6, 6)
    layer = compat.almost_orthogonal(nn.Linear(6, 6, bias=False), "weight", 0.1, f)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        layer(torch.randn(4, 6)).square().sum().backward()
        optimizer.step()
    s = torch.linalg.svdvals(layer.weight)
    assert s.min() >= 0.9 - 1e-5 and s.max() <= 1.1 + 1e-5


def test_eigenvalue_pattern():
    # examples/eigenvalue.py: a vector on the sphere, resampled, SGD on the Rayleigh quotient.
    torch.manual_seed(1)
    B = torch.randn(5, 5)
    A = B + B.T

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.rand(5))
            compat.sphere(self, "x")
            self.x = self.parametrizations.x[0].sample()

        def forward(self):
            return self.x @ A @ self.x

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        (-model()).backward()
        optimizer.step()
    with torch.no_grad():
        assert abs(float(model.x.norm()) - 1) < 1e-5
        assert abs(float(model()) - float(torch.linalg.eigvalsh(A)[-1])) < 1e-2


def test_docstring_shapes():
    # geotorch's docstrings: a 1-D bias and the rows of a weight on the sphere, 3x3 kernels.
    layer = compat.sphere(nn.Linear(5, 3), "bias")
    compat.sphere(layer, "weight")
    assert close(layer.bias.detach().norm(), torch.tensor(1.0), 1e-5)
    assert close(layer.weight.detach().norm(dim=-1), torch.ones(3), 1e-5)
    for front_door in (compat.orthogonal, compat.grassmannian):
        conv = front_door(nn.Conv2d(2, 4, 3), "weight")
        assert conv.weight.shape == (4, 2, 3, 3)
        assert orthonormal(conv.weight)
    assert (rank(compat.fixed_rank(nn.Linear(7, 6), "weight", 5).weight) == 5).all()
    L = torch.linalg.eigvalsh(
        compat.positive_semidefinite_low_rank(nn.Linear(6, 6), "weight", 5).weight
    )
    assert L.min() >= -1e-5 and int((L > 1e-5).sum()) <= 5
    stable = compat.alpha_stable(nn.Linear(5, 5), "weight", alpha=2)
    assert torch.linalg.eigvals(stable.weight).real.max() <= -2 + 1e-4


def test_keeps_the_weight_instead_of_resampling():
    # geoparam's documented behaviour: a weight on the set is kept; one off it is projected.
    Q = torch.linalg.qr(torch.randn(6, 4)).Q
    layer = nn.Linear(4, 6)
    with torch.no_grad():
        layer.weight.copy_(Q)
    assert close(compat.orthogonal(layer, "weight").weight, Q, 1e-6)

    S = torch.randn(5, 5)
    S = S @ S.T + torch.eye(5)
    layer = nn.Linear(5, 5)
    with torch.no_grad():
        layer.weight.copy_(S)
    assert close(compat.positive_definite(layer, "weight").weight, S, 1e-4)

    R = torch.randn(5, 2) @ torch.randn(2, 4)
    layer = nn.Linear(4, 5)
    with torch.no_grad():
        layer.weight.copy_(R)
    assert close(compat.low_rank(layer, "weight", 2).weight, R, 1e-5)

    layer = compat.low_rank(nn.Linear(5, 5), "weight", 2)  # a random weight: projected
    assert (rank(layer.weight) <= 2).all()


def test_triv_names():
    layer = compat.orthogonal(nn.Linear(4, 4), "weight")
    assert layer.parametrizations.weight[0].orthogonal_map == "matrix_exp"
    layer = compat.orthogonal(nn.Linear(4, 4), "weight", triv="cayley")
    assert layer.parametrizations.weight[0].orthogonal_map == "cayley"
    with pytest.raises(ValueError, match="householder"):
        compat.orthogonal(nn.Linear(4, 4), "weight", triv="householder")
    with pytest.raises(ValueError, match="triv"):
        compat.low_rank(nn.Linear(4, 4), "weight", 2, triv="exp")


def test_callable_triv():
    # A square orthogonal weight takes any map from skew-symmetric to orthogonal matrices.
    calls = []

    def triv(A):
        calls.append(A)
        return torch.linalg.matrix_exp(A)

    layer = compat.orthogonal(nn.Linear(5, 5), "weight", triv=triv)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        layer(torch.randn(3, 5)).square().sum().backward()
        optimizer.step()
    assert calls and close(calls[-1], -calls[-1].mT, 0)
    assert orthonormal(layer.weight)
    before = layer.weight.detach().clone()
    compat.update_base(layer, "weight")
    assert close(layer.weight, before, 1e-5)

    Q = torch.linalg.qr(torch.randn(5, 5)).Q
    layer = nn.Linear(5, 5)
    with torch.no_grad():
        layer.weight.copy_(Q)
    assert close(compat.orthogonal(layer, "weight", triv=triv).weight, Q, 1e-6)  # kept

    with pytest.raises(NotImplementedError, match="custom_constraint"):
        compat.orthogonal(nn.Linear(3, 5), "weight", triv=triv)
    with pytest.raises(NotImplementedError, match='"expm"'):
        compat.low_rank(nn.Linear(4, 4), "weight", 2, triv=triv)


def test_f_passes_through():
    # A pair (f, f_inverse) on the singular values, as geotorch takes it.
    f = (torch.exp, torch.log)
    layer = compat.fixed_rank(nn.Linear(5, 4), "weight", 2, f=f)
    assert (rank(layer.weight) == 2).all()
    layer = compat.almost_orthogonal(nn.Linear(4, 4), "weight", 0.3, f=(torch.tanh, torch.atanh))
    s = torch.linalg.svdvals(layer.weight)
    assert s.min() >= 0.7 - 1e-5 and s.max() <= 1.3 + 1e-5


def test_update_base_rebases_that_tensor_only():
    model = nn.Linear(4, 4)
    compat.orthogonal(model, "weight")
    compat.sphere(model, "bias")
    for tensor in model.parametrizations.values():
        with torch.no_grad():
            tensor.original.add_(0.1)
    biases = model.parametrizations.bias.original.detach().clone()
    weight = model.weight.detach().clone()
    compat.update_base(model, "weight")
    assert close(model.weight, weight, 1e-5)
    assert torch.equal(model.parametrizations.bias.original, biases)
    with pytest.raises(ValueError, match="not a constrained tensor"):
        compat.update_base(nn.Linear(3, 3), "weight")


LOADABLE = [
    ("skew", (4, 4), {}),
    ("symmetric", (4, 4), {}),
    ("sphere", (5, 3), {}),
    ("sphere", (5, 3), {"embedded": True}),
    ("orthogonal", (3, 6), {}),
    ("orthogonal", (6, 3), {"triv": "cayley"}),
    ("grassmannian", (2, 5), {}),
]
NOT_LOADABLE = [
    ("low_rank", (5, 4), {"rank": 2}),
    ("almost_orthogonal", (4, 4), {}),
    ("sln", (4, 4), {}),  # invertible would do too, for a weight of det > 0
    ("positive_definite", (4, 4), {}),
    ("alpha_stable", (4, 4), {}),
]


@needs_geotorch
@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    LOADABLE + NOT_LOADABLE,
    ids=[case_id(c[0], c[2]) for c in LOADABLE + NOT_LOADABLE],
)
def test_checkpoints(name, shape, kwargs):
    # Same keys and meaning for the constraints of one stored tensor. The products' keys differ;
    # their weights move as the migration page says: unregister geotorch's, keeping the value,
    # and register geoparam's, which keeps it.
    geotorch = importlib.import_module("geotorch")
    source = getattr(geotorch, name)(nn.Linear(*shape), "weight", **kwargs)
    with torch.no_grad():
        for tensor in source.parametrizations.weight.parameters():
            tensor.add_(0.1 * torch.randn_like(tensor))
    weight = source.weight.detach().clone()
    target = getattr(compat, name)(nn.Linear(*shape), "weight", **kwargs)
    if (name, shape, kwargs) in LOADABLE:
        target.load_state_dict(source.state_dict())
    else:
        with pytest.raises(RuntimeError, match="loading state_dict"):
            target.load_state_dict(source.state_dict())
        parametrize.remove_parametrizations(source, "weight", leave_parametrized=True)
        target = getattr(compat, name)(source, "weight", **kwargs)
    assert close(target.weight, weight, 1e-5)


# --- 3. the same scripts on geotorch and on the compat module --------------------------------


def eigenvalues(W: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh((W + W.mT) / 2)


# name, (in, out) of the Linear, extra arguments, the property (oracle) of the weight.
SCRIPTS = [
    ("skew", (4, 4), {}, lambda W: close(W, -W.mT, 1e-6)),
    ("symmetric", (4, 4), {}, lambda W: close(W, W.mT, 1e-6)),
    ("sphere", (5, 3), {"radius": 2.0}, lambda W: close(W.norm(dim=-1), 2 * torch.ones(3))),
    ("sphere", (5, 3), {"embedded": True}, lambda W: close(W.norm(dim=-1), torch.ones(3))),
    ("orthogonal", (3, 5), {}, orthonormal),
    ("orthogonal", (5, 5), {"triv": "cayley"}, orthonormal),
    ("grassmannian", (2, 5), {}, orthonormal),
    ("low_rank", (5, 4), {"rank": 2}, lambda W: rank(W) <= 2),
    ("fixed_rank", (5, 4), {"rank": 2}, lambda W: rank(W) == 2),
    (
        "almost_orthogonal",
        (4, 5),
        {"lam": 0.3},
        lambda W: torch.linalg.svdvals(W).sub(1).abs().max() <= 0.3 + 1e-5,
    ),
    ("invertible", (4, 4), {}, lambda W: torch.linalg.svdvals(W).min() > 1e-6),
    ("sln", (4, 4), {}, lambda W: close(torch.linalg.det(W), torch.tensor(1.0), 1e-3)),
    (
        "positive_definite",
        (4, 4),
        {},
        lambda W: close(W, W.mT) and eigenvalues(W).min() > 0,
    ),
    (
        "positive_semidefinite",
        (4, 4),
        {},
        lambda W: close(W, W.mT) and eigenvalues(W).min() > -1e-5,
    ),
    (
        "positive_semidefinite_low_rank",
        (5, 5),
        {"rank": 2},
        lambda W: close(W, W.mT) and eigenvalues(W).min() > -1e-5 and rank(W) <= 2,
    ),
    (
        "positive_semidefinite_fixed_rank",
        (5, 5),
        {"rank": 2},
        lambda W: close(W, W.mT) and eigenvalues(W).min() > -1e-5 and rank(W) == 2,
    ),
    (
        "alpha_stable",
        (4, 4),
        {"alpha": 0.5},
        lambda W: torch.linalg.eigvals(W).real.max() <= -0.5 + 1e-4,
    ),
]


@pytest.mark.parametrize("which", LIBRARIES)
@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "holds"),
    SCRIPTS,
    ids=[case_id(c[0], c[2]) for c in SCRIPTS],
)
def test_same_script_on_both(which, name, shape, kwargs, holds):
    gt = library(which)
    layer = nn.Linear(*shape, bias=False)
    getattr(gt, name)(layer, "weight", **kwargs)
    assert holds(layer.weight.detach())
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    target = torch.randn(shape[1], shape[0])
    for step in range(10):
        optimizer.zero_grad()
        with parametrize.cached():
            (layer.weight - target).square().sum().backward()
        optimizer.step()
        if step == 4 and name != "symmetric":  # geotorch cannot re-base a symmetric weight
            gt.update_base(layer, "weight")
    assert holds(layer.weight.detach())


@pytest.mark.parametrize("which", LIBRARIES)
@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "holds"),
    SCRIPTS,
    ids=[case_id(c[0], c[2]) for c in SCRIPTS],
)
def test_torch_patterns_on_both(which, name, shape, kwargs, holds):
    # geotorch's notes: a state_dict moves between two constrained models, .double() follows,
    # and removing the constraint leaves the constrained value.
    gt = library(which)
    source = getattr(gt, name)(nn.Linear(*shape), "weight", **kwargs)
    with torch.no_grad():
        for tensor in source.parametrizations.weight.parameters():
            tensor.add_(0.1 * torch.randn_like(tensor))
    target = getattr(gt, name)(nn.Linear(*shape), "weight", **kwargs)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.weight, source.weight)
    target.double()
    assert target.weight.dtype == torch.float64
    assert holds(target.weight.detach().float())
    weight = source.weight.detach().clone()
    parametrize.remove_parametrizations(source, "weight", leave_parametrized=True)
    assert torch.equal(source.weight, weight) and not parametrize.is_parametrized(source)


BAD_CALLS = [
    ("orthogonal", (4, 4), {"triv": "householder"}),
    ("low_rank", (4, 4), {"rank": 5}),
    ("fixed_rank", (4, 4), {"rank": 2, "f": torch.exp}),  # no inverse
    ("almost_orthogonal", (4, 4), {"lam": 2.0}),
    ("sphere", (4, 4), {"radius": 0.0}),
    ("invertible", (4, 5), {}),
    ("positive_definite", (4, 4), {"f": "tan"}),
    ("alpha_stable", (4, 4), {"alpha": -1.0}),
]


@pytest.mark.parametrize("which", LIBRARIES)
@pytest.mark.parametrize(("name", "shape", "kwargs"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_same_errors_on_both(which, name, shape, kwargs):
    with pytest.raises(ValueError):
        getattr(library(which), name)(nn.Linear(*shape), "weight", **kwargs)


def train(layer: nn.Module, steps: int = 10) -> None:
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    target = torch.randn_like(layer.weight)
    for _ in range(steps):
        optimizer.zero_grad()
        (layer.weight - target).square().sum().backward()
        optimizer.step()


def test_where_geoparam_keeps_more():
    # invertible is GL+ (geotorch: det != 0 only, from a base of either sign).
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([-1.0, 2.0, 3.0])))
    compat.invertible(layer, "weight")
    train(layer)
    assert torch.linalg.det(layer.weight) > 0
    # sln keeps det = 1 with any f (geotorch: with its default f only).
    layer = compat.sln(nn.Linear(4, 4), "weight", f=(torch.exp, torch.log))
    train(layer)
    assert close(torch.linalg.det(layer.weight), torch.tensor(1.0), 1e-4)
    # almost_orthogonal takes wide weights (geotorch fails to register them).
    layer = compat.almost_orthogonal(nn.Linear(6, 3), "weight", 0.2)
    train(layer)
    s = torch.linalg.svdvals(layer.weight)
    assert s.min() >= 0.8 - 1e-5 and s.max() <= 1.2 + 1e-5
