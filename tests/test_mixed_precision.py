"""Mixed precision: CPU autocast (bfloat16, float16 with GradScaler) and half-precision parameters.

geoparam evaluates every parametrization with autocast disabled (``_reuse.evaluate``): a
constrained weight is computed in the precision of its stored tensors, float32 here, whatever
autocast is active, and the layer that uses it then casts it as autocast decides. So under autocast
the orthogonality error of the weights stays at float32 rounding (~1e-6), not bfloat16's (~1e-2).
Half-precision parameters (``model.to(torch.bfloat16)``) are orthogonalised in float32 and rounded
once, so their weights are orthogonal to the precision of the type.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import geoparam

ORTHOGONAL = (0, 2, 4, 6)  # indices of the orthogonal layers in `_model`
SPECTRAL, WEIGHT_NORM = 8, 10
CONSTRAINED = (*ORTHOGONAL, SPECTRAL, WEIGHT_NORM)
STEPS = 5


def _model() -> nn.Sequential:
    return nn.Sequential(
        geoparam.orthogonal(nn.Linear(6, 6), orthogonal_map="matrix_exp"),  # square
        nn.Tanh(),
        geoparam.orthogonal(nn.Linear(6, 4), orthogonal_map="cayley"),  # wide weight
        nn.Tanh(),
        geoparam.orthogonal(nn.Linear(4, 8), orthogonal_map="householder"),  # tall weight
        nn.Tanh(),
        geoparam.orthogonal(nn.Linear(8, 5), orthogonal_map="matrix_exp"),  # wide weight
        nn.Tanh(),
        geoparam.spectral_norm(nn.Linear(5, 5)),
        nn.Tanh(),
        geoparam.weight_norm(nn.Linear(5, 3)),
    )


def _orthogonality_error(weight: Tensor) -> float:
    W = weight.detach().float()
    if W.size(0) < W.size(1):
        W = W.T
    return float((W.T @ W - torch.eye(W.size(1))).abs().max())


def _spectral_norm_after_refining(model: nn.Sequential) -> float:
    """σ of the spectrally normalised weight, once the power iteration has caught up."""
    layer = model[SPECTRAL]
    with torch.no_grad():
        for _ in range(100):  # each training-mode read is one more power iteration
            layer.weight  # noqa: B018
        layer.eval()
        sigma = float(torch.linalg.matrix_norm(layer.weight.float(), 2))
        layer.train()
    return sigma


def _weight_norm_error(model: nn.Sequential) -> float:
    layer = model[WEIGHT_NORM]
    with torch.no_grad():
        g = layer.parametrizations.weight.original0.detach().float()
        rows = layer.weight.float().norm(dim=1, keepdim=True)
    return float((rows - g.abs()).abs().max())


def _assert_finite_grads(model: nn.Module) -> None:
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name


def test_cpu_grad_scaler_exists():
    scaler = torch.amp.GradScaler("cpu")
    assert scaler.is_enabled()
    assert scaler.get_scale() > 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_training_keeps_constraints(dtype):
    model = _model()
    initial = {i: model[i].weight.detach().clone() for i in ORTHOGONAL}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    # float16 gradients can underflow: the scaler's usual recipe. bfloat16 needs none.
    scaler = torch.amp.GradScaler("cpu") if dtype == torch.float16 else None
    x, target = torch.randn(16, 6), torch.randn(16, 3)

    seen: dict[int, Tensor] = {}
    hooks = [
        model[i].register_forward_pre_hook(
            lambda module, args, i=i: seen.__setitem__(i, module.weight)
        )
        for i in CONSTRAINED
    ]
    for _ in range(STEPS):
        optimizer.zero_grad()
        # The weights as read outside autocast (spectral norm's read has a side effect: not here),
        # with gradients enabled as inside: without them, the Householder product of a square-ish
        # weight takes another route (LAPACK's orgqr), equal up to rounding only.
        with geoparam.caching(False):
            outside = {i: model[i].weight.detach().clone() for i in (*ORTHOGONAL, WEIGHT_NORM)}
        with torch.autocast("cpu", dtype=dtype):
            out = model(x)
            loss = (out.float() - target).pow(2).mean()
        assert out.dtype == dtype  # autocast did run the layers in low precision
        for i in CONSTRAINED:
            # The weight read inside autocast is float32, and is the weight read outside it.
            assert seen[i].dtype == torch.float32, i
            if i in outside:
                torch.testing.assert_close(seen[i], outside[i], rtol=0, atol=0)
        if scaler is None:
            loss.backward()
            _assert_finite_grads(model)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            _assert_finite_grads(model)  # no overflow: the scaler will not skip this step
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            assert scaler.get_scale() >= scale
    for hook in hooks:
        hook.remove()

    for i in ORTHOGONAL:
        weight = model[i].weight
        assert weight.dtype == torch.float32
        assert not torch.allclose(weight, initial[i], atol=1e-3), i  # the optimizer moved it
        assert _orthogonality_error(weight) < 1e-5, i
    assert abs(_spectral_norm_after_refining(model) - 1.0) < 1e-4
    assert _weight_norm_error(model) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_parameters_stay_constrained(dtype):
    model = _model().to(dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(b.dtype == dtype for b in model.buffers())
    initial = {i: model[i].weight.detach().clone() for i in ORTHOGONAL}
    # Adam's default eps (1e-8) is 0 in float16: a zero second moment then divides by zero, in any
    # model. 1e-4 is representable.
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, eps=1e-4)
    x, target = torch.randn(16, 6, dtype=dtype), torch.randn(16, 3)
    eps = torch.finfo(dtype).eps

    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = (model(x).float() - target).pow(2).mean()
        loss.backward()
        _assert_finite_grads(model)
        optimizer.step()

    for i in ORTHOGONAL:
        weight = model[i].weight
        assert weight.dtype == dtype
        assert not torch.equal(weight, initial[i]), i
        # Orthogonal in float32, then rounded once: a few units in the last place of the type.
        assert _orthogonality_error(weight) < 3 * eps, i
    assert abs(_spectral_norm_after_refining(model) - 1.0) < 3 * eps
    assert _weight_norm_error(model) < 3 * eps
