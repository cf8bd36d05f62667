"""Constraints hold through training: Adam, SGD and AdamW with weight decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from parametrization_testing import MAPS, Holder, observe_torch_defect, orthogonality_error

STEPS = 300
ORTHOGONALITY_AFTER_TRAINING = 5e-5  # float32
SHAPE_KINDS = {"square": (6, 6), "tall": (7, 4), "wide": (4, 7), "batched": (2, 5, 3)}


def _regression(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x`` (16, n) and a random target for ``x @ Wᵀ`` with ``W`` of ``shape``."""
    x = torch.randn(16, shape[-1])
    target = torch.randn(*shape[:-2], 16, shape[-2])
    return x, target


def _fit(module: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """Regress ``x @ weightᵀ`` onto a random target; return the losses."""
    x, target = _regression(tuple(module.weight.shape))
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(x @ module.weight.mT, target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("use_trivialization", [True, False])
@pytest.mark.parametrize("shape", SHAPE_KINDS.values(), ids=SHAPE_KINDS.keys())
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_adam_keeps_orthogonality(orthogonal_map, shape, use_trivialization):
    module = geoparam.orthogonal(
        Holder(shape, torch.float32),
        orthogonal_map=orthogonal_map,
        use_trivialization=use_trivialization,
    )
    losses = _fit(module, torch.optim.Adam(module.parameters(), lr=1e-2), STEPS)
    assert losses[-1] < losses[0]  # Training did move the weight.
    assert orthogonality_error(module.weight) <= ORTHOGONALITY_AFTER_TRAINING


def _mlp(register) -> nn.Sequential:
    model = nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    for layer in model[::2]:
        register(layer)
    return model


def _fit_model(model: nn.Module, steps: int) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, target = torch.randn(32, 6), torch.randn(32, 3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _spectral_norms(model: nn.Module) -> list[float]:
    """Exact ``σ`` of every parametrized weight, read in eval mode (no power iteration)."""
    training = model.training
    model.eval()
    norms = [
        float(torch.linalg.matrix_norm(layer.weight.detach(), 2))
        for layer in model.modules()
        if hasattr(layer, "parametrizations")
    ]
    model.train(training)
    return norms


def test_adam_keeps_spectral_norm_at_one():
    layer = geoparam.spectral_norm(Holder((4, 8), torch.float32))
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x, target = _regression((4, 8))
    losses = []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(x @ layer.weight.mT, target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 25 == 24:
            (sigma,) = _spectral_norms(layer)
            assert abs(sigma - 1.0) <= 0.05, step  # Within a few percent all along.
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_spectral_norm_in_a_deeper_model_lags_as_torch_and_converges():
    # One power iteration per step lags behind weights that Adam moves at lr 1e-2: in a
    # three-layer model σ can drift by tens of percent during training. torch does exactly the
    # same; once the weights stop moving, further training-mode reads bring σ back to 1.
    torch.manual_seed(0)
    reference = _mlp(torch_parametrizations.spectral_norm)
    torch.manual_seed(0)
    model = _mlp(geoparam.spectral_norm)
    torch.manual_seed(1)
    reference_losses = _fit_model(reference, STEPS)
    torch.manual_seed(1)
    losses = _fit_model(model, STEPS)
    assert losses[-1] < losses[0]
    torch.testing.assert_close(losses, reference_losses)
    # In eval mode geoparam normalises u and v before use (robust to averaged buffers), which
    # moves σ by rounding only.
    torch.testing.assert_close(
        _spectral_norms(model), _spectral_norms(reference), rtol=1e-6, atol=0
    )

    with torch.no_grad():
        for _ in range(50):
            for layer in model[::2]:
                _ = layer.weight  # A training-mode read: one power iteration.
    for sigma in _spectral_norms(model):
        assert abs(sigma - 1.0) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("dim", [0, 1, None])
def test_adam_keeps_weight_norm_split(dim):
    model = _mlp(lambda layer: geoparam.weight_norm(layer, dim=dim))
    magnitudes = [layer.parametrizations.weight.original0.detach().clone() for layer in model[::2]]
    losses = _fit_model(model, STEPS)
    assert losses[-1] < losses[0]
    for layer, before in zip(model[::2], magnitudes, strict=True):
        g = layer.parametrizations.weight.original0.detach()
        v = layer.parametrizations.weight.original1.detach()
        assert not torch.allclose(g, before)  # The magnitude is trained too.
        norm = v.norm() if dim is None else torch.linalg.vector_norm(v, dim=1 - dim, keepdim=True)
        torch.testing.assert_close(layer.weight.detach(), g * v / norm)


# ---------------------------------------------------------------------------------------------
# Householder under weight decay. torch reads the column signs with `X.diagonal().int()`; decay
# shrinks a sign of ±1 to ±0.9999, which truncates to 0 and zeroes the column. geoparam compares
# the diagonal with zero instead.

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=1e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-4),
}


@pytest.mark.parametrize("use_trivialization", [True, False])
@pytest.mark.parametrize("shape", [(8, 5), (5, 5), (3, 7)], ids=["tall", "square", "wide"])
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_householder_stays_orthogonal_under_weight_decay(make_optimizer, shape, use_trivialization):
    torch.manual_seed(0)
    module = Holder(shape, torch.float32)
    geoparam.orthogonal(module, orthogonal_map="householder", use_trivialization=use_trivialization)
    torch.manual_seed(1)
    losses = _fit(module, make_optimizer(module.parameters()), steps=50)
    assert losses[-1] < losses[0]
    assert orthogonality_error(module.weight) <= ORTHOGONALITY_AFTER_TRAINING


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_torch_householder_loses_columns_under_weight_decay(make_optimizer):
    torch.manual_seed(0)
    module = Holder((8, 5), torch.float32)
    torch_parametrizations.orthogonal(module, orthogonal_map="householder")
    torch.manual_seed(1)
    _fit(module, make_optimizer(module.parameters()), steps=50)
    # torch reads the column signs with .int(), which truncates a decayed -0.9999 to 0.
    observe_torch_defect(
        orthogonality_error(module.weight) == pytest.approx(1.0, abs=1e-3),
        "weight decay zeroes whole columns of the Householder map (‖WᵀW - I‖ ≈ 1)",
    )
