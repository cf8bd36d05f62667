"""Every constraint of the catalogue, checked the same way (cases in ``tests/catalogue_cases/``).

For each case: the property holds after 200 Adam steps on a random loss; the float64 gradient
is right (``gradcheck``); ``sample()`` lands on the set with the weight's shape and dtype;
``in_manifold`` accepts points on the set and rejects points off it and of the wrong shape;
registration keeps a weight already on the set and projects one off it; assignments on the set
are kept exactly and assignments off it are refused, leaving the module as it was; checkpoints
round-trip; non-finite weights and missing tensors are refused at registration.
"""

from __future__ import annotations

import pytest
import torch

import geoparam
from constraint_testing import (
    ATOL,
    Case,
    Holder,
    double,
    load_cases,
    originals,
    parametrization,
    randn,
)

CASES, BAD_CALLS = load_cases()


def _params(cases):
    return [pytest.param(case, id=case.id, marks=case.marks) for case in cases]


def _registered(case: Case, value: torch.Tensor) -> Holder:
    module = Holder(value)
    case.register(module)
    return module


def _assert_on_set(case: Case, W: torch.Tensor, atol: float) -> None:
    problem = case.satisfies(W.detach(), atol)
    assert problem is None, f"{case.id}: {problem}"


def test_every_front_door_of_the_catalogue_has_cases():
    # A family module that lost its CASES (or a new front door without any) would test nothing.
    drop_ins = {"orthogonal", "weight_norm", "spectral_norm"}
    front_doors = set(geoparam.constraints.__all__) - drop_ins
    assert front_doors <= {case.id.split("-")[0] for case in CASES}
    assert front_doors <= {bad.id.split("-")[0] for bad in BAD_CALLS}


@pytest.mark.parametrize("case", _params(CASES))
def test_property_holds_after_training(case: Case):
    module = _registered(case, randn(case))
    target = randn(case, seed=1)
    optimizer = torch.optim.Adam(module.parameters(), lr=case.lr)
    for _ in range(200):
        optimizer.zero_grad()
        W = module.weight
        loss = (W - target).abs().pow(2).sum() + (W * target.roll(1, -1)).real.sum()
        loss.backward()
        optimizer.step()
    W = module.weight.detach()
    assert W.shape == case.shape and W.dtype == case.dtype
    assert torch.isfinite(W).all()
    _assert_on_set(case, W, ATOL[case.dtype])
    assert parametrization(module).in_manifold(W)


@pytest.mark.parametrize("case", _params([c for c in CASES if c.gradcheck]))
def test_gradient_float64(case: Case):
    dtype = double(case.dtype)
    module = _registered(case, case.on_set(randn(case, dtype)))
    param = parametrization(module)
    inputs = tuple(
        x.detach().clone().add_(0.1 * torch.randn_like(x)).requires_grad_()
        for x in originals(module)
    )
    assert torch.autograd.gradcheck(param._evaluate, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", _params(CASES))
def test_sample_lands_on_the_set(case: Case):
    for dtype in (case.dtype, double(case.dtype)):
        param = parametrization(_registered(case, randn(case, dtype)))
        W = param.sample()
        assert W.shape == case.shape and W.dtype == dtype and W.device == param.device
        _assert_on_set(case, W, ATOL[dtype])
        assert param.in_manifold(W)
    generator = torch.Generator().manual_seed(3)
    first = param.sample(generator=generator)
    assert torch.equal(first, param.sample(generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("case", _params(CASES))
def test_in_manifold_accepts_and_rejects(case: Case):
    dtype = double(case.dtype)
    param = parametrization(_registered(case, randn(case, dtype)))
    on = case.on_set(randn(case, dtype, seed=2))
    off = randn(case, dtype, seed=2)
    if case.off_set is not None:
        off = case.off_set(off)
    assert case.satisfies(on, ATOL[dtype]) is None, "the case's own point is off the set"
    assert case.satisfies(off, ATOL[dtype]) is not None, "the case's own off point is on the set"
    assert param.in_manifold(on)
    assert not param.in_manifold(off)
    wrong_shape = torch.zeros(*case.shape, 1, dtype=dtype)
    assert not param.in_manifold(wrong_shape)
    assert not param.in_manifold(torch.full(case.shape, float("nan"), dtype=dtype))


@pytest.mark.parametrize("case", _params(CASES))
def test_registration_keeps_a_weight_on_the_set(case: Case):
    dtype = double(case.dtype)
    on = case.on_set(randn(case, dtype))
    module = _registered(case, on)
    torch.testing.assert_close(module.weight.detach(), on, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("case", _params(CASES))
def test_registration_projects_a_weight_off_the_set(case: Case):
    dtype = double(case.dtype)
    off = randn(case, dtype)
    if case.off_set is not None:
        off = case.off_set(off)
    module = _registered(case, off)
    _assert_on_set(case, module.weight, ATOL[dtype])


@pytest.mark.parametrize("case", _params(CASES))
def test_assignment_on_the_set_is_kept_and_off_it_refused(case: Case):
    dtype = double(case.dtype)
    module = _registered(case, randn(case, dtype))
    on = case.on_set(randn(case, dtype, seed=4))
    module.weight = on
    torch.testing.assert_close(module.weight.detach(), on, atol=1e-9, rtol=1e-9)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    off = randn(case, dtype, seed=5)
    if case.off_set is not None:
        off = case.off_set(off)
    refused = r"Holder\.weight: cannot assign a value off the constraint"
    with pytest.raises(ValueError, match=refused):
        module.weight = off
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("case", _params(CASES))
def test_checkpoint_round_trip(case: Case):
    source = _registered(case, randn(case, seed=6))
    with torch.no_grad():
        for x in originals(source):
            x.add_(0.1 * torch.randn_like(x))
    target = _registered(case, randn(case, seed=7))
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.weight, source.weight, atol=0, rtol=0)


@pytest.mark.parametrize("case", _params(CASES))
def test_nonfinite_weight_or_missing_tensor_refused(case: Case):
    value = randn(case)
    value.view(-1)[0] = float("nan")
    module = Holder(value)
    with pytest.raises(ValueError, match="non-finite"):
        case.register(module)
    assert not hasattr(module, "parametrizations")
    module.weight = torch.nn.Parameter(randn(case))
    module.other = torch.nn.Parameter(randn(case))
    del module.weight
    with pytest.raises(ValueError, match="has no parameter or buffer with name 'weight'"):
        case.register(module)


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in BAD_CALLS])
def test_bad_arguments_are_refused(bad):
    module = Holder(torch.randn(bad.shape, dtype=bad.dtype))
    with pytest.raises(bad.error, match=bad.match):
        bad.call(module)
    assert not hasattr(module, "parametrizations"), "a refused call must leave the module alone"


@pytest.mark.parametrize("case", _params(CASES))
def test_meta_device_then_initialised(case: Case):
    # Built on the meta device (shapes only), then materialised and initialised through the
    # constraint, as large models are.
    module = Holder(torch.empty(case.shape, dtype=case.dtype, device="meta"))
    case.register(module)
    module.to_empty(device="cpu")
    geoparam.reset_parametrizations(module)
    _assert_on_set(case, module.weight, ATOL[case.dtype])


# simplex-columns constrains dim=0, which a leading batch dimension would make the empty one.
_BATCHABLE = [case for case in CASES if case.id != "simplex-columns"]


@pytest.mark.parametrize("case", _params(_BATCHABLE))
def test_an_empty_batch_registers_reads_samples_and_assigns(case: Case):
    # A batch of no matrices (or vectors): nothing to constrain, nothing may crash.
    shape = (0, *case.shape)
    module = Holder(torch.empty(shape, dtype=case.dtype))
    case.register(module)
    W = module.weight
    assert W.shape == shape
    W.abs().sum().backward()
    assert all(x.grad is not None and x.grad.numel() == 0 for x in originals(module))
    sample = parametrization(module).sample()
    assert sample.shape == shape and sample.dtype == case.dtype
    assert parametrization(module).in_manifold(sample)
    module.weight = sample
    assert module.weight.shape == shape
