"""A constrained model's life beyond training: saving, copying, freezing, meta init, EMA."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize
from torch.optim.swa_utils import AveragedModel

import geoparam
from parametrization_testing import observe_torch_defect

MAPS = ("matrix_exp", "cayley", "householder")


def _model(orthogonal_map: str = "matrix_exp", dtype: torch.dtype = torch.float64) -> nn.Module:
    """Every constraint once: orthogonal square, orthogonal tall, spectral norm, weight norm."""
    model = nn.Sequential(
        nn.Linear(5, 5, dtype=dtype),
        nn.Tanh(),
        nn.Linear(5, 8, dtype=dtype),
        nn.Tanh(),
        nn.Linear(8, 6, dtype=dtype),
        nn.Tanh(),
        nn.Linear(6, 3, dtype=dtype),
    )
    geoparam.orthogonal(model[0], orthogonal_map=orthogonal_map)
    geoparam.orthogonal(model[2], orthogonal_map=orthogonal_map)
    geoparam.spectral_norm(model[4])
    geoparam.weight_norm(model[6])
    return model


X = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def _train(model: nn.Module, steps: int = 3) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        model(X).square().mean().backward()
        optimizer.step()


def _assert_constraints(model: nn.Module, tolerance: float = 1e-10) -> None:
    for layer in (model[0], model[2]):
        W = layer.weight.detach()
        eye = torch.eye(W.size(-1), dtype=W.dtype)
        assert (W.mT @ W - eye).abs().max() < tolerance
    sigma = torch.linalg.matrix_norm(model[4].weight.detach(), 2)
    assert abs(float(sigma) - 1.0) < 0.05
    assert bool(torch.isfinite(model[6].weight).all())


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    a_mode, b_mode = a.training, b.training
    a.eval(), b.eval()
    torch.testing.assert_close(a(X), b(X), rtol=0, atol=0)
    a.train(a_mode), b.train(b_mode)


def _roundtrip_pickle(model: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(model))


def _roundtrip_torch_save(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


ROUNDTRIPS = {
    "pickle": _roundtrip_pickle,
    "torch.save": _roundtrip_torch_save,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("roundtrip", ROUNDTRIPS.values(), ids=ROUNDTRIPS.keys())
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_saved_model_loads_and_trains_on(orthogonal_map, roundtrip):
    model = _model(orthogonal_map)
    _train(model)
    loaded = roundtrip(model)
    _same_outputs(loaded, model)
    assert type(loaded[0]).__name__ == "ParametrizedLinear"
    assert loaded.state_dict().keys() == model.state_dict().keys()
    # Independent tensors, and training goes on with the constraints.
    assert (
        loaded[0].parametrizations.weight.original is not model[0].parametrizations.weight.original
    )
    _train(loaded)
    _assert_constraints(loaded)
    # Loaded again, a second time: the rebuilt class is itself picklable.
    _same_outputs(roundtrip(loaded), loaded)


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")
def test_a_loaded_model_keeps_geoparams_load_hook():
    loaded = _roundtrip_pickle(_model())
    legacy = torch.nn.utils.weight_norm(nn.Linear(6, 3, dtype=torch.float64))
    loaded[6].load_state_dict(legacy.state_dict())
    torch.testing.assert_close(loaded[6].weight, legacy.weight)


def test_torch_refuses_to_pickle_its_parametrized_modules():
    layer = torch_parametrizations.orthogonal(nn.Linear(3, 3))
    try:
        pickle.dumps(layer)
        refused = False
    except RuntimeError:
        refused = True
    observe_torch_defect(refused, "parametrized modules cannot be pickled")


def test_state_dict_under_weights_only_still_loads():
    model = _model()
    _train(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _model()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    _same_outputs(fresh, model)


# ---------------------------------------------------------------------------------------------
# freeze


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_freeze_keeps_the_values_and_drops_the_machinery(orthogonal_map):
    model = _model(orthogonal_map)
    _train(model)
    model.train()
    expected = [layer.weight.detach().clone() for layer in model[::2]]
    frozen = geoparam.freeze(model)
    assert frozen is model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(layer) is nn.Linear for layer in model[::2])
    assert sorted(model.state_dict()) == sorted(
        f"{i}.{name}" for i in (0, 2, 4, 6) for name in ("weight", "bias")
    )
    for layer, weight in zip(model[::2], expected, strict=True):
        assert isinstance(layer.weight, nn.Parameter)
        # Spectral norm's value is the current one, without a further power-iteration step.
        torch.testing.assert_close(layer.weight, weight, rtol=0, atol=1e-15)
    assert all(not layer._load_state_dict_pre_hooks for layer in model[::2])


def test_freeze_of_a_plain_model_is_a_no_op():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    state = copy.deepcopy(model.state_dict())
    assert geoparam.freeze(model) is model
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_frozen_model_costs_what_the_plain_model_costs():
    model = geoparam.freeze(_model())
    # No parametrization is evaluated: the weights are plain attributes.
    assert all("weight" in layer._parameters for layer in model[::2])
    frozen_again = geoparam.freeze(model)
    assert frozen_again is model


# ---------------------------------------------------------------------------------------------
# Meta-device initialisation


def _meta_model(orthogonal_map: str) -> nn.Module:
    with torch.device("meta"):
        return _model(orthogonal_map)


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_every_front_door_registers_on_the_meta_device(orthogonal_map):
    model = _meta_model(orthogonal_map)
    for tensor in (*model.parameters(), *model.buffers()):
        assert tensor.device.type == "meta"
    assert model[0].weight.device.type == "meta"  # reads work, on shapes only


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_model_initialisation_after_to_empty_restores_the_constraints(orthogonal_map):
    model = _meta_model(orthogonal_map).to_empty(device="cpu")
    # The usual deferred-initialisation recipe: each module's own reset_parameters().
    torch.manual_seed(0)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    _assert_constraints(model)
    _train(model)
    _assert_constraints(model)


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_reset_parametrizations_after_to_empty(orthogonal_map):
    model = _meta_model(orthogonal_map).to_empty(device="cpu")
    assert geoparam.reset_parametrizations(model) == 4
    _assert_constraints(model)


def test_reset_parameters_draws_like_the_plain_layer():
    # A Linear's reset_parameters draws kaiming-uniform entries: through the orthogonal
    # constraint the weight is the QR factor of exactly that draw.
    torch.manual_seed(4)
    plain = nn.Linear(5, 5, dtype=torch.float64)
    layer = geoparam.orthogonal(nn.Linear(5, 5, dtype=torch.float64))
    torch.manual_seed(4)
    layer.reset_parameters()
    Q, R = torch.linalg.qr(plain.weight.detach())
    expected = Q * R.diagonal().sign()
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias, plain.bias)


def test_reset_of_a_module_without_reset_parameters():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 3))

    orthogonal = geoparam.orthogonal(Holder())
    geoparam.reset_parametrizations(orthogonal)
    W = orthogonal.weight.detach()
    assert (W.T @ W - torch.eye(3)).abs().max() < 1e-5
    normalised = geoparam.weight_norm(Holder())
    with pytest.raises(ValueError, match=r"Holder\.weight.*reset_parameters"):
        geoparam.reset_parametrizations(normalised)


# ---------------------------------------------------------------------------------------------
# EMA with torch.optim.swa_utils.AveragedModel


def _ema(use_buffers: bool) -> tuple[nn.Module, AveragedModel]:
    torch.manual_seed(0)
    model = _model()
    ema = AveragedModel(
        model,
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9),
        use_buffers=use_buffers,
    )
    return model, ema


@pytest.mark.parametrize("use_buffers", [False, True])
def test_ema_of_a_parametrized_model(use_buffers):
    model, ema = _ema(use_buffers)
    for _ in range(4):
        _train(model, steps=1)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ema.update_parameters(model)
        # Averaging reads the model and never writes into it (power-iteration vectors included).
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), key
    ema.eval()
    averaged = ema.module
    # The average of the unconstrained tensors, mapped through the constraints: orthogonal
    # (same base throughout), spectrally normalised with unit vectors even when the vectors
    # themselves were averaged, weight-normalised.
    u = averaged[4].parametrizations.weight[0]._u
    if use_buffers:
        assert abs(float(u.norm()) - 1.0) > 1e-9  # averaged vectors are not unit vectors...
    _assert_constraints(averaged, tolerance=1e-10 if not use_buffers else 1e-6)
    W = averaged[4].weight.detach()
    u_n, v_n = u / u.norm(), averaged[4].parametrizations.weight[0]._v
    v_n = v_n / v_n.norm()
    sigma_estimate = float(u_n @ (W * 1.0) @ v_n)
    assert sigma_estimate == pytest.approx(1.0, abs=1e-9)  # ...but are normalised before use
    assert torch.isfinite(ema(X)).all()
