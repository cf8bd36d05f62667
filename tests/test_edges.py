"""The edges of the input space: zero weights, NaN and Inf, tensors with no elements, huge norms."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from parametrization_testing import (
    Holder,
    observe_torch_defect,
    orthogonality_bound,
    orthogonality_error,
)

MAPS = ("matrix_exp", "cayley", "householder")
FRONT_DOORS = {
    "orthogonal": geoparam.orthogonal,
    "weight_norm": geoparam.weight_norm,
    "spectral_norm": geoparam.spectral_norm,
}


def _zero_holder(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Holder:
    holder = Holder(shape, dtype)
    with torch.no_grad():
        holder.weight.zero_()
    return holder


# ---------------------------------------------------------------------------------------------
# Zero weights.


@pytest.mark.parametrize("constraint", ["weight_norm", "spectral_norm"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (6,)])
def test_zero_weight_gives_zero_with_finite_gradients(constraint, shape):
    module = FRONT_DOORS[constraint](_zero_holder(shape))
    W = module.weight
    assert torch.equal(W, torch.zeros(shape, dtype=W.dtype))
    (W * torch.randn_like(W)).sum().backward()
    for parameter in module.parameters():
        assert bool(torch.isfinite(parameter.grad).all())


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_zero_slices_stay_zero_and_the_others_normalised(dim):
    module = geoparam.weight_norm(Holder((4, 5)), dim=dim)
    value = torch.randn(4, 5, dtype=torch.float64)
    if dim == 0:
        value[1] = 0.0
    elif dim == 1:
        value[:, 2] = 0.0
    else:
        value.zero_()
    module.weight = value  # through right_inverse: g = 0 with a direction where it is zero
    W = module.weight
    torch.testing.assert_close(W, value, rtol=1e-12, atol=1e-12)
    W.sum().backward()
    assert bool(torch.isfinite(W).all())
    for parameter in module.parameters():
        assert bool(torch.isfinite(parameter.grad).all())
    g, v = module.parametrizations.weight.original0, module.parametrizations.weight.original1
    assert bool((g.detach() == 0).any()) and bool(v.detach().abs().sum(dim=-1).gt(0).all())


def test_spectral_norm_trains_away_from_a_zero_initialisation():
    # The power iteration keeps its vectors while the weight is zero, so once training moves the
    # weight, σ is estimated again and the weight is normalised.
    torch.manual_seed(0)
    layer = nn.Linear(4, 6)
    nn.init.zeros_(layer.weight)
    geoparam.spectral_norm(layer)
    u = layer.parametrizations.weight[0]._u
    assert abs(float(u.norm()) - 1.0) < 1e-6
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    x, target = torch.randn(32, 4), torch.randn(32, 6)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
    for _ in range(30):
        _ = layer.weight  # training-mode reads: power iterations
    sigma = torch.linalg.matrix_norm(layer.weight.detach(), 2)
    assert abs(float(sigma) - 1.0) < 1e-3


def test_torch_gives_nan_on_zero_weights():
    spectral = torch_parametrizations.spectral_norm(_zero_holder((4, 3)))
    normalised = torch_parametrizations.weight_norm(_zero_holder((4, 3)))
    observe_torch_defect(
        bool(spectral.weight.isnan().all() and normalised.weight.isnan().all()),
        "zero weights give all-NaN spectral_norm and weight_norm",
    )


# ---------------------------------------------------------------------------------------------
# NaN and Inf.


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("constraint", FRONT_DOORS)
def test_non_finite_weight_is_refused_at_registration(constraint, bad):
    module = nn.Linear(3, 4)
    with torch.no_grad():
        module.weight[1, 2] = bad
        module.weight[0, 0] = bad
    with pytest.raises(ValueError, match=r"Linear\.weight holds 2 non-finite entries .* of 12"):
        FRONT_DOORS[constraint](module)
    assert type(module) is nn.Linear


@pytest.mark.parametrize("constraint", FRONT_DOORS)
def test_non_finite_assignment_is_refused(constraint):
    module = FRONT_DOORS[constraint](nn.Linear(3, 4))
    before = module.weight.detach().clone()
    value = torch.randn(4, 3)
    value[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"Linear\.weight.*1 non-finite entries"):
        module.weight = value
    assert torch.equal(module.weight, before)


def test_detect_nonfinite_names_where_a_nan_step_entered():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2))
    geoparam.weight_norm(model[0])
    geoparam.orthogonal(model[2])
    geoparam.spectral_norm(model[4])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    # A bad gradient, below the diagonal (the map reads X's lower triangle).
    model[2].parametrizations.weight.original.grad[1, 0] = math.nan
    optimizer.step()
    assert math.isnan(float(model(torch.randn(2, 3)).sum().detach()))

    assert geoparam.find_nonfinite(model) == {
        "2.parametrizations.weight.original": 1,
        "2.weight": 25,
    }
    with geoparam.detect_nonfinite(model), pytest.raises(FloatingPointError) as raised:
        model(torch.randn(2, 3))
    assert str(raised.value).startswith("2.weight: its unconstrained tensor 0 has 1 non-finite")


def test_detect_nonfinite_blames_the_map_for_a_nan_from_finite_inputs(monkeypatch):
    model = nn.Sequential(geoparam.orthogonal(nn.Linear(3, 3)))

    def broken(A):
        return A * math.nan

    monkeypatch.setattr("geoparam.manifolds.orthogonal.expm_skew", broken)
    geoparam.clear_caches(model)
    with geoparam.detect_nonfinite(model), pytest.raises(FloatingPointError, match="its value"):
        model(torch.ones(1, 3))


def test_detect_nonfinite_is_quiet_on_a_healthy_model():
    model = nn.Sequential(
        geoparam.orthogonal(nn.Linear(3, 3)), geoparam.weight_norm(nn.Linear(3, 2))
    )
    with geoparam.detect_nonfinite(model):
        model(torch.randn(4, 3)).sum().backward()
    assert geoparam.find_nonfinite(model) == {}


# ---------------------------------------------------------------------------------------------
# Tensors with no elements.

EMPTY_SHAPES = [(0, 3), (3, 0), (2, 0, 3), (0, 0), (0, 2, 2)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_orthogonal_of_empty_weights(orthogonal_map, shape):
    module = geoparam.orthogonal(Holder(shape), orthogonal_map=orthogonal_map)
    W = module.weight
    assert W.shape == shape
    W.sum().backward()
    assert module.parametrizations.weight.original.grad.shape == shape
    if orthogonal_map != "householder":  # torch's Householder map fails on these shapes
        reference = torch_parametrizations.orthogonal(Holder(shape), orthogonal_map=orthogonal_map)
        assert reference.weight.shape == W.shape


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("constraint", ["weight_norm", "spectral_norm"])
def test_norms_of_empty_weights(constraint, shape):
    module = FRONT_DOORS[constraint](Holder(shape))
    W = module.weight
    assert W.shape == shape
    W.sum().backward()
    for parameter in module.parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all())


# ---------------------------------------------------------------------------------------------
# Properties over shapes, dtypes, maps and norms.

ORTHOGONAL_DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def _with_norm(module: nn.Module, norm: float, seed: int) -> None:
    """Set the unconstrained tensor to a random X whose skew part has spectral norm ``norm``."""
    original = module.parametrizations.weight.original
    generator = torch.Generator().manual_seed(seed)
    wide = torch.complex128 if original.is_complex() else torch.float64
    X = torch.randn(original.shape, dtype=wide, generator=generator)
    tall = X.mT if X.size(-2) < X.size(-1) else X
    if tall.numel():
        n, k = tall.size(-2), tall.size(-1)
        L = torch.cat([tall.tril(), tall.new_zeros(*tall.shape[:-1], n - k)], dim=-1)
        spectral = torch.linalg.matrix_norm(L - L.mH, 2).amax().clamp_min(1e-300)
        X = X * (norm / spectral)
    with torch.no_grad():
        original.copy_(X.to(original.dtype))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    batch=st.lists(st.integers(0, 2), max_size=1),
    rows=st.integers(0, 6),
    columns=st.integers(0, 6),
    orthogonal_map=st.sampled_from(MAPS),
    dtype=st.sampled_from(ORTHOGONAL_DTYPES),
    log_norm=st.floats(-3.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_property_orthogonal_everywhere(
    batch, rows, columns, orthogonal_map, dtype, log_norm, seed
):
    if orthogonal_map == "householder" and dtype.is_complex:
        dtype = dtype.to_real()
    shape = (*batch, rows, columns)
    module = geoparam.orthogonal(Holder(shape, dtype), orthogonal_map=orthogonal_map)
    _with_norm(module, 10.0**log_norm, seed)
    W = module.weight
    assert W.shape == shape and W.dtype == dtype
    assert bool(torch.isfinite(W).all())
    if W.numel():
        assert orthogonality_error(W) <= orthogonality_bound(W)
    (W.real.sum() if W.is_complex() else W.sum()).backward()
    grad = module.parametrizations.weight.original.grad
    assert grad.shape == shape and bool(torch.isfinite(grad).all())


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    rows=st.integers(0, 6),
    columns=st.integers(0, 6),
    constraint=st.sampled_from(["weight_norm", "spectral_norm"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_property_norms_finite_everywhere(rows, columns, constraint, dtype, scale, seed):
    holder = Holder((rows, columns), dtype)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        holder.weight.copy_(scale * torch.randn(rows, columns, dtype=dtype, generator=generator))
    module = FRONT_DOORS[constraint](holder)
    W = module.weight
    assert bool(torch.isfinite(W).all())
    W.sum().backward()
    for parameter in module.parameters():
        assert bool(torch.isfinite(parameter.grad).all())
    if scale == 0.0:
        assert not bool(W.any())


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    constraint=st.sampled_from(list(FRONT_DOORS)),
    rows=st.integers(1, 5),
    columns=st.integers(1, 5),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    data=st.data(),
)
def test_property_non_finite_entries_are_counted_and_refused(constraint, rows, columns, bad, data):
    holder = Holder((rows, columns))
    count = data.draw(st.integers(1, rows * columns))
    positions = torch.randperm(rows * columns, generator=torch.Generator().manual_seed(count))
    with torch.no_grad():
        holder.weight.view(-1)[positions[:count]] = bad
    with pytest.raises(ValueError, match=rf"holds {count} non-finite entries"):
        FRONT_DOORS[constraint](holder)
