"""Checkpoints move both ways between torch's parametrizations and geoparam's."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from parametrization_testing import MAPS, RTOL, SHAPES, Holder, assert_close_relative, linear_loss

F64 = torch.float64


def _orthogonal_cases():
    cases = []
    for orthogonal_map in MAPS:
        dtypes = [F64] if orthogonal_map == "householder" else [F64, torch.complex128]
        for dtype in dtypes:
            for shape_id, shape in SHAPES.items():
                for use_trivialization in (True, False):
                    kwargs = {
                        "orthogonal_map": orthogonal_map,
                        "use_trivialization": use_trivialization,
                    }
                    case_id = f"orthogonal-{orthogonal_map}-{str(dtype)[6:]}-{shape_id}"
                    cases.append(
                        pytest.param(
                            lambda shape=shape, dtype=dtype: Holder(shape, dtype),
                            lambda m, kwargs=kwargs: torch_parametrizations.orthogonal(m, **kwargs),
                            lambda m, kwargs=kwargs: geoparam.orthogonal(m, **kwargs),
                            id=f"{case_id}-triv{use_trivialization}",
                        )
                    )
    return cases


def _norm_cases():
    modules = {
        "linear": lambda: nn.Linear(5, 7, dtype=F64),
        "conv2d": lambda: nn.Conv2d(3, 4, 3, dtype=F64),
        "conv_transpose2d": lambda: nn.ConvTranspose2d(3, 4, 3, dtype=F64),
    }
    cases = []
    for module_id, make in modules.items():
        for dim in (0, 1, None, -1, -2):
            cases.append(
                pytest.param(
                    make,
                    lambda m, dim=dim: torch_parametrizations.weight_norm(m, dim=dim),
                    lambda m, dim=dim: geoparam.weight_norm(m, dim=dim),
                    id=f"weight_norm-{module_id}-dim{dim}",
                )
            )
        cases.append(
            pytest.param(
                make,
                torch_parametrizations.spectral_norm,
                geoparam.spectral_norm,
                id=f"spectral_norm-{module_id}",
            )
        )
    cases.append(
        pytest.param(
            lambda: Holder((6,)),
            torch_parametrizations.spectral_norm,
            geoparam.spectral_norm,
            id="spectral_norm-1d",
        )
    )
    return cases


def _train(module: nn.Module, steps: int) -> None:
    """A few optimizer steps on a random linear loss, as a checkpoint taken mid-training."""
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    direction = torch.randn_like(module.weight)
    for _ in range(steps):
        optimizer.zero_grad()
        linear_loss(module.weight, direction).backward()
        optimizer.step()


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("direction", ["torch_to_geoparam", "geoparam_to_torch"])
@pytest.mark.parametrize(
    ("make", "register_torch", "register_ours"), _orthogonal_cases() + _norm_cases()
)
def test_checkpoint_loads_in_the_other_library(
    make, register_torch, register_ours, direction, steps
):
    register_source, register_target = (
        (register_torch, register_ours)
        if direction == "torch_to_geoparam"
        else (register_ours, register_torch)
    )
    torch.manual_seed(0)
    source = make()
    register_source(source)
    _train(source, steps)
    state = _round_trip(source.state_dict())

    torch.manual_seed(1)  # Another initial weight, so that loading has something to change.
    target = make()
    register_target(target)
    source.eval()
    target.eval()
    weight = source.weight.detach()
    assert (target.weight - weight).abs().max() > 1e-3
    target.load_state_dict(state, strict=True)
    assert_close_relative(target.weight, weight, RTOL[weight.dtype])
    assert_close_relative(source.weight, weight, 0.0)  # The source is unchanged by saving.


def _model(register_orthogonal, register_spectral, register_weight_norm) -> nn.Module:
    model = nn.Sequential(
        nn.Linear(4, 6),
        nn.Tanh(),
        nn.Linear(6, 6),
        nn.Tanh(),
        nn.Linear(6, 3),
        nn.Tanh(),
        nn.Linear(3, 2),
    )
    register_orthogonal(model[0])
    register_orthogonal(model[2], orthogonal_map="cayley")
    register_spectral(model[4])
    register_weight_norm(model[6])
    return model


@pytest.mark.parametrize("direction", ["torch_to_geoparam", "geoparam_to_torch"])
def test_whole_model_checkpoint_after_training(direction):
    libraries = {
        "torch": (
            torch_parametrizations.orthogonal,
            torch_parametrizations.spectral_norm,
            torch_parametrizations.weight_norm,
        ),
        "geoparam": (geoparam.orthogonal, geoparam.spectral_norm, geoparam.weight_norm),
    }
    source_name, target_name = direction.split("_to_")
    torch.manual_seed(0)
    source = _model(*libraries[source_name])
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.mse_loss(source(x), y).backward()
        optimizer.step()
    torch.manual_seed(1)
    target = _model(*libraries[target_name])
    target.load_state_dict(_round_trip(source.state_dict()), strict=True)
    source.eval()
    target.eval()
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("shape", [(5, 5), (6, 3)], ids=["square", "tall"])
def test_full_base_is_stored_row_major_and_loads_torchs_column_major_one(shape):
    # geoparam keeps the n x n base row-major (its kernels read it fastest so); torch's comes
    # from a QR, column-major. The values move either way; the buffer keeps its layout.
    torch.manual_seed(0)
    ours = geoparam.orthogonal(Holder(shape, F64), orthogonal_map="householder")
    theirs = torch_parametrizations.orthogonal(Holder(shape, F64), orthogonal_map="householder")
    base = ours.parametrizations.weight[0].base
    assert base.is_contiguous()
    state = theirs.state_dict()
    assert not state["parametrizations.weight.0.base"].is_contiguous()
    ours.load_state_dict(state)
    assert ours.parametrizations.weight[0].base.is_contiguous()
    assert torch.equal(
        ours.parametrizations.weight[0].base, state["parametrizations.weight.0.base"]
    )
    assert_close_relative(ours.weight, theirs.weight, RTOL[F64])
    # Re-basing keeps the layout too.
    geoparam.update_base(ours)
    assert ours.parametrizations.weight[0].base.is_contiguous()
    assert_close_relative(ours.weight, theirs.weight, RTOL[F64])
