"""The simple families: spheres, linear subspaces (skew, symmetric, Hermitian), entrywise sets.

What the catalogue's generic checks (``test_catalogue.py``) do not cover: parity with geotorch
(the same weight from the same stored tensors and base, and geotorch's checkpoints load), the
sphere's guards where a norm vanishes, re-basing, batches against loops, complex specifics, the
Sinkhorn iteration's convergence, the simplex projection's optimality, and one compiled model.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import geoparam
from geoparam.manifolds import (
    Bounded,
    DoublyStochastic,
    Oblique,
    Positive,
    Simplex,
    Skew,
    Sphere,
    SphereEmbedded,
    Symmetric,
)
from geoparam.manifolds.elementwise import _project_onto_simplex
from parametrization_testing import PROPERTY_SETTINGS, Holder

# --- Parity with geotorch ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def geotorch():
    """geotorch 0.4 (the ``bench`` extra); its import warns about ``torch.jit``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("geotorch")


@pytest.mark.parametrize("embedded", [False, True], ids=["exp", "embedded"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_sphere_loads_geotorch_checkpoints_and_gives_the_same_weight(geotorch, shape, embedded):
    theirs = geotorch.sphere(Holder(shape, torch.float32), "weight", 2.0, embedded=embedded)
    with torch.no_grad():  # move away from the base, so that the map does something
        theirs.parametrizations.weight.original.add_(0.5 * torch.randn(shape))
    ours = geoparam.sphere(Holder(shape, torch.float32), radius=2.0, embedded=embedded)
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours.weight, theirs.weight)
    theirs.weight.square().sum().backward()
    ours.weight.square().sum().backward()
    grads = [m.parametrizations.weight.original.grad for m in (ours, theirs)]
    torch.testing.assert_close(*grads)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("kind", ["skew", "symmetric"])
def test_skew_and_symmetric_read_the_triangle_geotorch_reads(geotorch, kind, lower):
    X = torch.randn(2, 4, 4)
    if kind == "skew":
        ours, theirs = Skew(X.shape, lower, label="W"), geotorch.Skew(X.shape, lower)
    else:
        ours, theirs = Symmetric(X.shape, lower, label="W"), geotorch.Symmetric(lower)
    assert torch.equal(ours(X), theirs(X))
    # geotorch's checkpoints (`original` only) load and give the same weight.
    source = getattr(geotorch, kind)(Holder((4, 4), torch.float32), "weight", lower)
    target = getattr(geoparam, kind)(Holder((4, 4), torch.float32), lower=lower)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.weight, source.weight)


def test_hermitian_of_a_real_weight_is_symmetric():
    X = torch.randn(3, 5, 5, dtype=torch.float64)
    hermitian = Symmetric(X.shape, hermitian=True, label="W")
    assert torch.equal(hermitian(X), Symmetric(X.shape, label="W")(X))


# --- Spheres ----------------------------------------------------------------------------------


@pytest.mark.parametrize("manifold", [SphereEmbedded, Oblique])
def test_normalisation_of_a_zero_slice_is_finite(manifold):
    param = manifold(torch.Size([3, 3]), radius=2.0, label="W")
    slices = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 1.0, 2.0]])  # a zero first slice
    X = (slices if manifold is SphereEmbedded else slices.mT).requires_grad_()
    W = param(X)
    W.square().sum().backward()
    assert torch.isfinite(W).all() and torch.isfinite(X.grad).all()
    W_slices = W if manifold is SphereEmbedded else W.mT
    assert torch.equal(W_slices[0], torch.zeros(3))  # the zero slice stays zero
    norms = W_slices[1:].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0))


@pytest.mark.parametrize("where", ["zero", "along the base, exactly", "along the base"])
def test_sphere_exp_map_gradient_where_the_tangent_part_vanishes(where):
    # There ‖v‖ has no derivative; the map's derivative is r times the projection onto the
    # tangent space at B, and the point is r·B.
    dtype = torch.float64
    param = Sphere(torch.Size([3, 4]), radius=2.0, label="W", dtype=dtype)
    B = (
        torch.eye(3, 4, dtype=dtype)
        if where.endswith("exactly")
        else torch.randn(3, 4, dtype=dtype)
    )
    B = B / B.norm(dim=-1, keepdim=True)
    param.right_inverse(2.0 * B)
    X = torch.zeros_like(B) if where == "zero" else 3.0 * B
    X.requires_grad_()
    G = torch.randn_like(B)
    W = param(X)
    (W * G).sum().backward()
    torch.testing.assert_close(W, 2.0 * B)
    torch.testing.assert_close(X.grad, 2.0 * (G - (G * B).sum(-1, keepdim=True) * B))


def test_sphere_walks_great_circles():
    param = Sphere(torch.Size([2]), label="w", dtype=torch.float64)
    param.right_inverse(torch.tensor([1.0, 0.0], dtype=torch.float64))
    for angle in (0.3, 2.0, 5.0):
        W = param(torch.tensor([0.7, angle], dtype=torch.float64))  # 0.7: normal, removed
        expected = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        torch.testing.assert_close(W, expected)


def test_complex_sphere_projects_onto_the_real_tangent_space():
    param = Sphere(torch.Size([3]), label="w", dtype=torch.complex128)
    B = torch.tensor([1j, 0, 0], dtype=torch.complex128)
    param.right_inverse(B)
    # A step along B is normal to the sphere (Re⟨B, B⟩ = 1) and removed; a step along -iB = 1
    # is tangent (Re⟨B, 1⟩ = Re(-i) = 0) and moves along a great circle.
    torch.testing.assert_close(param(0.5 * B), B)
    W = param(-0.5j * B)
    expected = torch.tensor([math.sin(0.5) + 1j * math.cos(0.5), 0, 0], dtype=torch.complex128)
    torch.testing.assert_close(W, expected)


def test_update_base_moves_the_sphere_base_and_keeps_the_weight():
    layer = geoparam.sphere(nn.Linear(5, 3), radius=3.0)
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    before = layer.weight.detach().clone()
    assert geoparam.update_base(layer) == 1
    torch.testing.assert_close(layer.weight.detach(), before)
    assert not layer.parametrizations.weight.original.any()
    base = layer.parametrizations.weight[0].base
    torch.testing.assert_close(base.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)


def test_sphere_refuses_another_dtype_and_keeps_its_base():
    layer = geoparam.sphere(nn.Linear(4, 2).double())
    base = layer.parametrizations.weight[0].base.clone()
    with pytest.raises(ValueError, match=r"cannot assign a tensor of dtype torch\.float32"):
        layer.weight = torch.eye(2, 4)
    assert torch.equal(layer.parametrizations.weight[0].base, base)


def test_off_sphere_assignment_says_which_norm():
    layer = geoparam.sphere(nn.Linear(3, 2), embedded=True)
    with pytest.raises(ValueError, match=r"one of its rows \(last dimension\) has norm 2, not"):
        layer.weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    layer = geoparam.oblique(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"one of its columns \(dimension -2\) has norm 0"):
        layer.weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


# --- Linear subspaces -------------------------------------------------------------------------


def test_complex_skew_is_skew_hermitian_with_an_imaginary_diagonal():
    X = torch.randn(4, 4, dtype=torch.complex128)
    W = Skew(X.shape, label="W")(X)
    assert torch.equal(W, -W.mH)
    torch.testing.assert_close(W.diagonal(), 1j * X.diagonal().imag)
    torch.testing.assert_close(W.tril(-1), X.tril(-1))


def test_hermitian_has_a_real_diagonal_and_complex_symmetric_is_transposed():
    X = torch.randn(4, 4, dtype=torch.complex128)
    W = Symmetric(X.shape, hermitian=True, label="W")(X)
    assert torch.equal(W, W.mH)
    assert torch.equal(W.diagonal().imag, torch.zeros(4, dtype=torch.float64))
    S = Symmetric(X.shape, label="W")(X)
    assert torch.equal(S, S.mT) and not torch.equal(S, S.mH)


def test_off_subspace_assignment_says_how_far():
    layer = geoparam.skew(nn.Linear(2, 2, bias=False))
    with pytest.raises(ValueError, match=r"not skew-symmetric: max \|W \+ Wᵀ\| is 2"):
        layer.weight = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    "make",
    [
        lambda s: Skew(s, label="W", dtype=torch.complex128),
        lambda s: Symmetric(s, hermitian=True, label="W", dtype=torch.complex128),
        lambda s: Oblique(s, label="W", dtype=torch.complex128),
        lambda s: DoublyStochastic(s, label="W", dtype=torch.float64),
    ],
    ids=["skew", "hermitian", "oblique", "doubly_stochastic"],
)
def test_a_batch_is_a_loop(make):
    X = torch.randn(3, 4, 4, dtype=torch.float64)
    if make(torch.Size([4, 4])).dtype.is_complex:
        X = torch.complex(X, torch.randn_like(X))
    batched = make(torch.Size([3, 4, 4]))(X)
    single = make(torch.Size([4, 4]))
    torch.testing.assert_close(batched, torch.stack([single(x) for x in X]))


# --- Entrywise --------------------------------------------------------------------------------


def test_doubly_stochastic_rows_are_exact_and_columns_converge():
    X = 3 * torch.randn(2, 6, 6)  # spread entries: a slow case for Sinkhorn
    errors = []
    for n_iterations in (1, 10, 100, 1000):
        W = DoublyStochastic(X.shape, n_iterations, label="W")(X)
        assert float((W.sum(-1) - 1).abs().max()) <= 1e-6
        errors.append(float((W.sum(-2) - 1).abs().max()))
    # Far off after one iteration, converged (to float32 rounding) long before a thousand.
    assert errors[0] > errors[1] > 1e-3
    assert errors[3] <= 1e-6


def test_doubly_stochastic_projection_converges():
    param = DoublyStochastic(torch.Size([8, 8]), label="W", dtype=torch.float64)
    W = param.project(torch.randn(8, 8, dtype=torch.float64))
    assert float(W.min()) > 0
    for dim in (-1, -2):
        assert float((W.sum(dim) - 1).abs().max()) <= 1e-13


@PROPERTY_SETTINGS
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=8))
def test_simplex_projection_is_the_euclidean_one(values):
    v = torch.tensor(values, dtype=torch.float64)
    p = _project_onto_simplex(v)
    assert float(p.min()) >= 0 and abs(float(p.sum()) - 1) <= 1e-12
    # Optimality (KKT): p = max(v - θ, 0) for one θ, so v - p = θ on the support, v <= θ off it.
    support = p > 0
    theta = (v - p)[support]
    assert float(theta.max() - theta.min()) <= 1e-12
    assert bool((v[~support] <= theta.min() + 1e-12).all())


def test_simplex_projection_keeps_every_entry_trainable():
    param = Simplex(torch.Size([2, 5]), label="W", dtype=torch.float64)
    W = param.project(torch.tensor([[3.0, 0, 0, 0, 0], [-1, -1, 2, 0.5, 0]]).double())
    assert float(W.min()) >= 1e-3 / 5 / 1.001
    torch.testing.assert_close(W.sum(-1), torch.ones(2, dtype=torch.float64))


def test_positive_and_bounded_projections_and_bounds():
    positive = Positive(torch.Size([3]), label="w")
    torch.testing.assert_close(
        positive.project(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([2e-3, 2e-3, 2.0])
    )
    bounded = Bounded(torch.Size([4]), low=-1.0, high=1.0, label="w", dtype=torch.float64)
    torch.testing.assert_close(
        bounded.project(torch.tensor([-5.0, 0.5, 1.0, 3.0], dtype=torch.float64)),
        torch.tensor([-0.998, 0.5, 0.998, 0.998], dtype=torch.float64),
    )
    # Entries exactly at the bounds are on the set: stored finite, returned within eps.
    at_bounds = torch.tensor([-1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    X = bounded.right_inverse(at_bounds)
    assert torch.isfinite(X).all()
    torch.testing.assert_close(bounded(X), at_bounds, atol=1e-15, rtol=0)


# --- torch.compile ----------------------------------------------------------------------------


def test_sphere_and_doubly_stochastic_compile_without_graph_breaks():
    torch._dynamo.reset()
    net = nn.Sequential(
        geoparam.sphere(nn.Linear(4, 3, bias=False)),
        geoparam.doubly_stochastic(nn.Linear(3, 3, bias=False), n_iterations=5),
    )
    x = torch.randn(8, 4)
    with geoparam.caching(False):
        eager = net(x)
        eager.square().sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net, fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager)
    for parameter, grad in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad)
    torch._dynamo.reset()


@pytest.mark.parametrize("front_door", ["doubly_stochastic", "simplex", "positive"])
def test_projection_is_per_matrix_in_a_batch(front_door):
    # One matrix of the batch is on the set, the other is not: only the other moves.
    on = torch.full((3, 3), 0.02, dtype=torch.float64)
    on.fill_diagonal_(0.96)
    off = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    module = nn.Linear(3, 3, bias=False, dtype=torch.float64)
    module.weight = nn.Parameter(torch.stack([on, off]))
    getattr(geoparam, front_door)(module)
    torch.testing.assert_close(module.weight[0].detach(), on, atol=1e-12, rtol=0)
    assert not torch.allclose(module.weight[1].detach(), off)
