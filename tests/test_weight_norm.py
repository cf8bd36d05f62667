"""geoparam.weight_norm against torch.nn.utils.parametrizations.weight_norm."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

import geoparam
from parametrization_testing import (
    PROPERTY_SETTINGS,
    RTOL,
    Holder,
    assert_close_relative,
    observe_torch_defect,
    register_pair,
    weight_and_grads,
)

# (module factory, dim): every way of choosing the kept dimension, on a 2-D and a 4-D weight.
CASES = {
    "linear-0": (lambda: nn.Linear(5, 7, dtype=torch.float64), 0),
    "linear-1": (lambda: nn.Linear(5, 7, dtype=torch.float64), 1),
    "linear-None": (lambda: nn.Linear(5, 7, dtype=torch.float64), None),
    "linear--1": (lambda: nn.Linear(5, 7, dtype=torch.float64), -1),
    "linear--2": (lambda: nn.Linear(5, 7, dtype=torch.float64), -2),
    "conv-0": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), 0),
    "conv-1": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), 1),
    "conv-3": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), 3),
    "conv-None": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), None),
    "conv--1": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), -1),
    "conv--2": (lambda: nn.Conv2d(3, 4, 3, dtype=torch.float64), -2),
}


def _norm_keeping(v: torch.Tensor, dim: int | None) -> torch.Tensor:
    """‖v‖ over every dimension but ``dim``; the whole tensor for ``None`` and, as torch, ``-1``."""
    if dim is None or dim == -1:
        return v.norm()
    dim = dim % v.ndim
    others = [d for d in range(v.ndim) if d != dim]
    if not others:  # A vector normalised along its only dimension: entry by entry.
        return v.abs()
    return torch.linalg.vector_norm(v, dim=others, keepdim=True)


def _move_originals(modules: list[nn.Module]) -> None:
    params = modules[0].parametrizations.weight
    steps = [0.3 * torch.randn_like(params.original0), 0.3 * torch.randn_like(params.original1)]
    with torch.no_grad():
        for module in modules:
            module.parametrizations.weight.original0.add_(steps[0])
            module.parametrizations.weight.original1.add_(steps[1])


def test_magnitude_and_direction_are_original0_and_original1():
    module = geoparam.weight_norm(nn.Linear(20, 40))
    weight = module.parametrizations.weight
    assert weight.original0.shape == (40, 1)
    assert weight.original1.shape == (40, 20)
    assert list(module.state_dict()) == list(
        torch_parametrizations.weight_norm(nn.Linear(20, 40)).state_dict()
    )


@pytest.mark.parametrize(("make", "dim"), CASES.values(), ids=CASES.keys())
def test_parity_with_torch(make, dim):
    reference, ours = register_pair(
        make,
        lambda m: torch_parametrizations.weight_norm(m, dim=dim),
        lambda m: geoparam.weight_norm(m, dim=dim),
    )
    for key, value in reference.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape
        assert_close_relative(ours.state_dict()[key], value, RTOL[torch.float64])
    _move_originals([reference, ours])
    direction = torch.randn_like(reference.weight)
    weight_ref, grads_ref = weight_and_grads(reference, direction)
    weight_ours, grads_ours = weight_and_grads(ours, direction)
    assert_close_relative(weight_ours, weight_ref, RTOL[torch.float64])
    for grad_ours, grad_ref in zip(grads_ours, grads_ref, strict=True):
        assert grad_ref.abs().max() > 0
        assert_close_relative(grad_ours, grad_ref, RTOL[torch.float64])


@pytest.mark.parametrize(("make", "dim"), CASES.values(), ids=CASES.keys())
def test_weight_is_magnitude_times_unit_direction(make, dim):
    module = make()
    W = module.weight.detach().clone()
    geoparam.weight_norm(module, dim=dim)
    # Registration keeps the weight and splits it.
    assert_close_relative(module.weight, W, 1e-12)
    _move_originals([module])
    g = module.parametrizations.weight.original0
    v = module.parametrizations.weight.original1
    assert_close_relative(module.weight, g * v / _norm_keeping(v, dim), 1e-12)


@PROPERTY_SETTINGS
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_property_parity_and_split(shape, data, seed):
    dim = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1), label="dim")
    reference, ours = register_pair(
        lambda: Holder(tuple(shape)),
        lambda m: torch_parametrizations.weight_norm(m, dim=dim),
        lambda m: geoparam.weight_norm(m, dim=dim),
        seed=seed,
    )
    _move_originals([reference, ours])
    direction = torch.randn(shape, dtype=torch.float64)
    weight_ref, grads_ref = weight_and_grads(reference, direction)
    weight_ours, grads_ours = weight_and_grads(ours, direction)
    assert_close_relative(weight_ours, weight_ref, RTOL[torch.float64])
    for grad_ours, grad_ref in zip(grads_ours, grads_ref, strict=True):
        assert_close_relative(grad_ours, grad_ref, RTOL[torch.float64])
    g = ours.parametrizations.weight.original0.detach()
    v = ours.parametrizations.weight.original1.detach()
    assert_close_relative(weight_ours, g * v / _norm_keeping(v, dim), 1e-12)


@pytest.mark.parametrize("dim", [None, -1])
def test_none_and_minus_one_normalise_the_whole_tensor(dim):
    module = geoparam.weight_norm(nn.Conv2d(3, 4, 3, dtype=torch.float64), dim=dim)
    g = module.parametrizations.weight.original0
    assert g.shape == ()
    assert_close_relative(g, module.weight.detach().norm(), 1e-12)


def test_gradcheck_through_registered_module():
    module = geoparam.weight_norm(nn.Conv2d(2, 3, 2, dtype=torch.float64), dim=1)
    _move_originals([module])
    params = module.parametrizations.weight
    g = params.original0.detach().clone().requires_grad_()
    v = params.original1.detach().clone().requires_grad_()

    def weight_of(g, v):
        tensors = {"parametrizations.weight.original0": g, "parametrizations.weight.original1": v}
        return torch.func.functional_call(module, tensors, (torch.ones(1, 2, 3, 3, dtype=g.dtype),))

    assert torch.autograd.gradcheck(weight_of, (g, v))


# ---------------------------------------------------------------------------------------------
# Checkpoints of torch's older hook-based torch.nn.utils.weight_norm.


def _legacy_weight_norm(module: nn.Module, dim: int | None) -> nn.Module:
    with pytest.warns(FutureWarning):
        return torch.nn.utils.weight_norm(module, dim=dim)


@pytest.mark.parametrize(
    ("make", "dim"),
    [
        (lambda: nn.Linear(5, 7), 0),
        (lambda: nn.Linear(5, 7), 1),
        (lambda: nn.Conv2d(3, 4, 3), 0),
        (lambda: nn.Conv2d(3, 4, 3), None),
    ],
)
def test_loads_legacy_weight_norm_checkpoint(make, dim):
    legacy = _legacy_weight_norm(make(), dim)
    with torch.no_grad():  # Move away from the initial split, as training would.
        legacy.weight_g.mul_(1.5)
        legacy.weight_v.add_(0.1 * torch.randn_like(legacy.weight_v))
    state = legacy.state_dict()
    assert {"weight_g", "weight_v"} <= state.keys()

    ours = geoparam.weight_norm(make(), dim=dim)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, *((5,) if isinstance(ours, nn.Linear) else (3, 6, 6)))
    torch.testing.assert_close(ours(x), legacy(x))
    torch.testing.assert_close(ours.weight, legacy.weight)
    torch.testing.assert_close(ours.parametrizations.weight.original0, legacy.weight_g)


def test_loads_legacy_checkpoint_in_a_submodule():
    legacy = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), _legacy_weight_norm(nn.Linear(7, 2), 0))
    ours = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), geoparam.weight_norm(nn.Linear(7, 2)))
    ours.load_state_dict(legacy.state_dict(), strict=True)
    x = torch.randn(3, 5)
    torch.testing.assert_close(ours(x), legacy(x))


def _hooks_from(module: nn.Module, package: str) -> int:
    return sum(
        getattr(hook, "hook", hook).__module__.startswith(package)
        for hook in module._load_state_dict_pre_hooks.values()
    )


def test_applying_and_removing_leaves_one_load_hook():
    ours = nn.Linear(5, 7)
    for _ in range(5):
        geoparam.weight_norm(ours)
        parametrize.remove_parametrizations(ours, "weight")
    assert len(ours._load_state_dict_pre_hooks) == 1
    assert _hooks_from(ours, "geoparam") == 1

    # The one hook still serves the constraint registered after it.
    geoparam.weight_norm(ours)
    legacy = _legacy_weight_norm(nn.Linear(5, 7), 0)
    ours.load_state_dict(legacy.state_dict(), strict=True)
    torch.testing.assert_close(
        ours.weight, legacy.weight_g * legacy.weight_v / _norm_keeping(legacy.weight_v, 0)
    )


def test_torch_piles_up_load_hooks():
    reference = nn.Linear(5, 7)
    for _ in range(5):
        torch_parametrizations.weight_norm(reference)
        parametrize.remove_parametrizations(reference, "weight")
    observe_torch_defect(
        _hooks_from(reference, "torch.nn.utils.parametrizations") == 5,
        "every weight_norm call adds a load hook that removal leaves behind",
    )
