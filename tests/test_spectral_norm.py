"""geoparam.spectral_norm against torch.nn.utils.parametrizations.spectral_norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from parametrization_testing import (
    RTOL,
    Holder,
    assert_close_relative,
    move_original,
    observe_torch_defect,
    register_pair,
    weight_and_grads,
)

F64 = torch.float64
MODULES = {
    "linear": lambda: nn.Linear(5, 7, dtype=F64),
    "conv1d": lambda: nn.Conv1d(3, 4, 2, dtype=F64),
    "conv2d": lambda: nn.Conv2d(3, 4, 3, dtype=F64),
    "conv_transpose1d": lambda: nn.ConvTranspose1d(3, 4, 2, dtype=F64),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(3, 4, 3, dtype=F64),
    "conv_transpose3d": lambda: nn.ConvTranspose3d(2, 3, 2, dtype=F64),
    "batched_holder": lambda: Holder((2, 3, 4)),
}
BUFFERS = ("parametrizations.weight.0._u", "parametrizations.weight.0._v")


def _spectral_pair(make, **kwargs):
    return register_pair(
        make,
        lambda m: torch_parametrizations.spectral_norm(m, **kwargs),
        lambda m: geoparam.spectral_norm(m, **kwargs),
    )


def _assert_same_state(ours: nn.Module, reference: nn.Module) -> None:
    reference_state = reference.state_dict()
    assert list(ours.state_dict()) == list(reference_state)
    for key, value in ours.state_dict().items():
        assert_close_relative(value, reference_state[key], RTOL[value.dtype])


@pytest.mark.parametrize("n_power_iterations", [1, 3])
@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
def test_parity_with_torch_in_training(make, n_power_iterations):
    reference, ours = _spectral_pair(make, n_power_iterations=n_power_iterations)
    # Same warm-up from the same random vectors: equal _u and _v, also after reshaping.
    assert set(BUFFERS) <= ours.state_dict().keys()
    _assert_same_state(ours, reference)
    direction = torch.randn_like(reference.parametrizations.weight.original)
    for _ in range(3):  # Each training-mode read refines _u and _v.
        move_original([reference, ours], scale=0.1)
        weight_ref, grads_ref = weight_and_grads(reference, direction)
        weight_ours, grads_ours = weight_and_grads(ours, direction)
        assert_close_relative(weight_ours, weight_ref, RTOL[F64])
        assert_close_relative(grads_ours[0], grads_ref[0], RTOL[F64])
        _assert_same_state(ours, reference)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.ConvTranspose1d(3, 4, 2),
        lambda: nn.ConvTranspose2d(3, 4, 3),
        lambda: nn.ConvTranspose3d(2, 3, 2),
    ],
    ids=["1d", "2d", "3d"],
)
def test_conv_transpose_normalises_along_output_channels(make):
    reference, ours = _spectral_pair(make)
    assert ours.parametrizations.weight[0].dim == 1
    assert reference.parametrizations.weight[0].dim == 1
    out_channels = ours.parametrizations.weight.original.size(1)
    assert ours.parametrizations.weight[0]._u.shape == (out_channels,)
    _assert_same_state(ours, reference)
    assert_close_relative(ours.weight, reference.weight, RTOL[torch.float32])


@pytest.mark.parametrize("dim", [1, -1, 2])
def test_explicit_dim_as_torch(dim):
    reference, ours = _spectral_pair(lambda: nn.Conv2d(3, 4, 3, dtype=F64), dim=dim)
    _assert_same_state(ours, reference)
    assert_close_relative(ours.weight, reference.weight, RTOL[F64])


def test_buffers_are_persistent_and_updated_only_in_training():
    module = geoparam.spectral_norm(nn.Linear(5, 7, dtype=F64))
    parametrization = module.parametrizations.weight[0]
    move_original([module], scale=0.5)
    u, v = parametrization._u.clone(), parametrization._v.clone()
    _ = module.weight  # A training-mode read: one power iteration.
    assert not torch.equal(parametrization._u, u)
    assert not torch.equal(parametrization._v, v)

    module.eval()
    u, v = parametrization._u.clone(), parametrization._v.clone()
    first = module.weight.detach().clone()
    second = module.weight.detach().clone()
    assert torch.equal(parametrization._u, u)
    assert torch.equal(parametrization._v, v)
    assert torch.equal(first, second)
    sigma = torch.vdot(u, module.parametrizations.weight.original.detach() @ v)
    assert_close_relative(first, module.parametrizations.weight.original.detach() / sigma, 1e-12)


def test_one_dimensional_weight_is_divided_by_its_norm():
    reference, ours = _spectral_pair(lambda: Holder((6,)))
    assert not any(name.endswith(("_u", "_v")) for name in ours.state_dict())
    assert list(ours.state_dict()) == list(reference.state_dict())
    move_original([reference, ours])
    original = ours.parametrizations.weight.original.detach()
    assert_close_relative(ours.weight, original / original.norm(), 1e-14)
    direction = torch.randn(6, dtype=F64)
    weight_ours, grads_ours = weight_and_grads(ours, direction)
    weight_ref, grads_ref = weight_and_grads(reference, direction)
    assert_close_relative(weight_ours, weight_ref, RTOL[F64])
    assert_close_relative(grads_ours[0], grads_ref[0], RTOL[F64])


def test_gradcheck_in_eval_mode():
    module = geoparam.spectral_norm(nn.Conv2d(2, 3, 2, dtype=F64)).eval()
    original = module.parametrizations.weight.original.detach().clone().requires_grad_()

    def weight_of(original):
        x = torch.ones(1, 2, 3, 3, dtype=F64)
        return torch.func.functional_call(
            module, {"parametrizations.weight.original": original}, (x,)
        )

    assert torch.autograd.gradcheck(weight_of, (original,))


def _discriminator():
    return nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))


def test_gan_pattern_two_forwards_then_one_backward():
    def register_all(register):
        def apply(model):
            for layer in (model[0], model[2]):
                register(layer)

        return apply

    reference, ours = register_pair(
        _discriminator,
        register_all(torch_parametrizations.spectral_norm),
        register_all(geoparam.spectral_norm),
    )
    real, fake = torch.randn(5, 4), torch.randn(5, 4)
    for model in (reference, ours):
        model.train()
        loss = model(real).mean() - model(fake).mean()
        loss.backward()
    for (name, p_ours), p_ref in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert p_ours.grad is not None and torch.isfinite(p_ours.grad).all(), name
        assert_close_relative(p_ours.grad, p_ref.grad, RTOL[torch.float32])
    _assert_same_state(ours, reference)


# ---------------------------------------------------------------------------------------------
# Checkpoints of torch's older hook-based torch.nn.utils.spectral_norm.

LEGACY = {
    "linear": (lambda: nn.Linear(5, 7), (5,)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3), (3, 6, 6)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 4, 3), (3, 6, 6)),
}


@pytest.mark.parametrize(("make", "input_shape"), LEGACY.values(), ids=LEGACY.keys())
def test_loads_legacy_spectral_norm_checkpoint(make, input_shape):
    legacy = torch.nn.utils.spectral_norm(make())
    x = torch.randn(2, *input_shape)
    optimizer = torch.optim.SGD(legacy.parameters(), lr=0.1)
    for _ in range(3):  # Training moves weight_orig and the power-iteration vectors.
        optimizer.zero_grad()
        legacy(x).square().mean().backward()
        optimizer.step()
    state = legacy.state_dict()
    assert {"weight_orig", "weight_u", "weight_v"} <= state.keys()

    ours = geoparam.spectral_norm(make())
    ours.load_state_dict(state, strict=True)
    legacy.eval()
    ours.eval()
    torch.testing.assert_close(ours(x), legacy(x))
    torch.testing.assert_close(ours.weight, legacy.weight)


def test_torch_refuses_legacy_spectral_norm_keys():
    legacy = torch.nn.utils.spectral_norm(nn.Linear(3, 5))
    try:
        torch_parametrizations.spectral_norm(nn.Linear(3, 5)).load_state_dict(legacy.state_dict())
        refused = False
    except RuntimeError as error:
        refused = "weight_orig" in str(error)
    observe_torch_defect(refused, "checkpoints of the hook-based spectral_norm do not load")


def test_loads_legacy_checkpoint_in_a_submodule():
    legacy = nn.Sequential(torch.nn.utils.spectral_norm(nn.Linear(4, 6)), nn.ReLU())
    ours = nn.Sequential(geoparam.spectral_norm(nn.Linear(4, 6)), nn.ReLU())
    ours.load_state_dict(legacy.state_dict(), strict=True)
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours.eval()(x), legacy.eval()(x))
