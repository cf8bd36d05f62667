"""geoparam's constraints under torch.func: ``functional_call``, ``grad`` and ``vmap``.

Semantics. A constrained weight is stored as unconstrained tensors under
``<layer>.parametrizations.<name>.original`` (``original0`` and ``original1``, i.e. ``g`` and ``v``,
for ``weight_norm``). ``torch.func.functional_call(model, {key: X}, args)`` with such a key
substitutes the unconstrained tensor for the duration of the call, and the constraint is applied
to it: the layer computes with ``orthogonal(X)`` (or ``g · v / ‖v‖``), exactly as the module would
after ``original.copy_(X)``. Buffers that are not substituted (the orthogonal ``base``) keep their
values, the module is left as it was, and geoparam's weight cache is neither read nor written for
substituted tensors (they are not the module's parameters). So ``grad`` and ``vmap`` over the
originals differentiate and batch through the constraint.

Substituting the constrained tensor's own key (``<layer>.weight``) instead is torch's semantics,
which geoparam shares: the value is assigned through the parametrization's ``right_inverse``
(an orthogonal weight is orthogonalised and becomes the ``base``), and on exit the previous weight
is assigned back the same way, so ``original`` (and ``base``) may hold a different but equivalent
pair of tensors afterwards. Use the ``original`` keys for functional training.

Every kernel's custom autograd rule is written with ``setup_context`` (the form torch.func's
transforms take), so ``grad``, ``jacrev`` and ``vmap`` of ``grad`` work for every map.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from geoparam.linalg import qr_positive

MAPS = ("matrix_exp", "cayley", "householder")
# (in_features, out_features) of the constrained Linear: its weight is (out, in).
SHAPES = {"square": (4, 4), "tall": (3, 6), "wide": (6, 3)}


def _assert_close(actual: Tensor, expected: Tensor) -> None:
    scale = max(1.0, float(expected.detach().abs().max()))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _model(case: str) -> nn.Sequential:
    """A constrained Linear layer, then a plain head; the originals moved off the start point."""
    kind, _, shape = case.partition("-")
    fan_in, fan_out = SHAPES[shape or "square"]
    layer = nn.Linear(fan_in, fan_out)
    if kind == "weight_norm":
        geoparam.weight_norm(layer)
    else:
        geoparam.orthogonal(layer, orthogonal_map=kind)
    model = nn.Sequential(layer, nn.Tanh(), nn.Linear(fan_out, 2))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "original" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _originals(model: nn.Module) -> dict[str, Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if "original" in k}


def _input(model: nn.Module) -> Tensor:
    return torch.randn(5, model[0].in_features)


CASES = [f"{m}-{s}" for m in MAPS for s in SHAPES] + ["weight_norm"]


def _loss(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    return functional_call(model, params, (x,)).pow(2).sum()


def _perturbed(params: dict[str, Tensor], scale: float = 0.2) -> dict[str, Tensor]:
    return {k: v + scale * torch.randn_like(v) for k, v in params.items()}


@pytest.mark.parametrize("case", CASES)
def test_functional_call_applies_the_constraint_to_the_original(case):
    model = _model(case)
    x = _input(model)
    before = model(x).detach()  # also fills geoparam's cache
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = _perturbed(_originals(model))
    seen = []  # the weight the layer computes with, read inside the call
    hook = model[0].register_forward_pre_hook(lambda module, args: seen.append(module.weight))

    out = functional_call(model, params, (x,))
    hook.remove()

    # The module with those originals written into it gives the same output.
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for key, value in params.items():
            reference.get_parameter(key).copy_(value)
    _assert_close(out, reference(x))
    assert not torch.allclose(out, before)  # the substitution did take effect
    # The constraint was applied to the substitute.
    (weight,) = seen
    if case != "weight_norm":
        Q = weight if weight.size(-2) >= weight.size(-1) else weight.mT
        assert float((Q.mT @ Q - torch.eye(Q.size(-1))).abs().max()) < 1e-5
    else:
        g = params["0.parametrizations.weight.original0"]
        v = params["0.parametrizations.weight.original1"]
        _assert_close(weight, g * v / v.norm(dim=1, keepdim=True))
    # The module is untouched, and its cache was not fed the substitute.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("case", CASES)
def test_grad_over_originals_equals_autograd(case):
    model = _model(case)
    x = _input(model)
    params = _perturbed(_originals(model))
    params["2.weight"] = model[2].weight.detach().clone()

    grads = grad(lambda p: _loss(model, p, x))(params)

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    with geoparam.caching(False):
        expected = torch.autograd.grad(_loss(model, leaves, x), list(leaves.values()))
    assert grads.keys() == params.keys()
    for key, g in zip(leaves, expected, strict=True):
        _assert_close(grads[key], g)
        assert bool(g.abs().max() > 0), key


# torch has no batching rule for aten::_weight_norm (torch's weight_norm uses it too): vmap falls
# back to a loop, and says so.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("case", CASES)
def test_vmap_over_originals_equals_loop(case):
    model = _model(case)
    x = _input(model)
    params = _originals(model)
    # One key batched (weight_norm: the direction v), the others shared.
    key = sorted(params)[-1]
    batch = torch.stack([params[key] + 0.2 * torch.randn_like(params[key]) for _ in range(4)])

    batched = vmap(lambda X: functional_call(model, {key: X}, (x,)))(batch)

    looped = torch.stack([functional_call(model, {key: X}, (x,)) for X in batch])
    _assert_close(batched, looped)
    assert not torch.allclose(looped[0], looped[1])


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("case", CASES)
def test_vmap_of_grad_over_originals_equals_loop(case):
    model = _model(case)
    x = _input(model)
    params = _originals(model)
    key = sorted(params)[-1]
    batch = torch.stack([params[key] + 0.2 * torch.randn_like(params[key]) for _ in range(3)])

    def loss(X: Tensor) -> Tensor:
        return _loss(model, {key: X}, x)

    batched = vmap(grad(loss))(batch)

    looped = []
    for X in batch:
        leaf = X.clone().requires_grad_()
        with geoparam.caching(False):
            looped.append(torch.autograd.grad(loss(leaf), leaf)[0])
    _assert_close(batched, torch.stack(looped))


def test_weight_norm_grad_over_both_originals():
    model = _model("weight_norm")
    x = _input(model)
    params = _perturbed(_originals(model))
    g_key, v_key = "0.parametrizations.weight.original0", "0.parametrizations.weight.original1"

    def loss(g: Tensor, v: Tensor) -> Tensor:
        return _loss(model, {g_key: g, v_key: v}, x)

    grad_g, grad_v = grad(loss, argnums=(0, 1))(params[g_key], params[v_key])
    g, v = params[g_key].clone().requires_grad_(), params[v_key].clone().requires_grad_()
    expected_g, expected_v = torch.autograd.grad(loss(g, v), (g, v))
    _assert_close(grad_g, expected_g)
    _assert_close(grad_v, expected_v)
    # w = g v / ‖v‖ is invariant to the scale of v: its gradient is orthogonal to v, row by row.
    assert float((grad_v * params[v_key]).sum(dim=1).abs().max().detach()) < 1e-5


def test_substituting_the_constrained_weight_goes_through_right_inverse_as_in_torch():
    outputs = []
    for register in (torch_parametrizations.orthogonal, geoparam.orthogonal):
        torch.manual_seed(0)
        model = register(nn.Linear(4, 4))
        with torch.no_grad():
            model.parametrizations.weight.original.add_(0.3 * torch.randn(4, 4))
        weight = model.weight.detach().clone()
        x, W = torch.randn(3, 4), torch.randn(4, 4)
        out = functional_call(model, {"weight": W}, (x,))
        # W was orthogonalised (QR with a positive diagonal of R), not used as it is.
        _assert_close(out, nn.functional.linear(x, qr_positive(W), model.bias))
        # The old weight was assigned back: same value, through new stored tensors.
        _assert_close(model.weight, weight)
        outputs.append(out)
    _assert_close(outputs[1], outputs[0])
