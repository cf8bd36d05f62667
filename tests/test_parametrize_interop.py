"""geoparam's constraints with torch's parametrize tools: deepcopy, removal, caching."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

import geoparam
from parametrization_testing import RTOL, assert_close_relative, observe_torch_defect, register_pair

F64 = torch.float64


def _square_linear():
    return nn.Linear(5, 5, dtype=F64)


def _tall_linear():
    return nn.Linear(3, 6, dtype=F64)


# (module factory, torch registration, geoparam registration)
CONSTRAINTS = {
    "orthogonal-matrix_exp": (
        _square_linear,
        lambda m: torch_parametrizations.orthogonal(m, orthogonal_map="matrix_exp"),
        lambda m: geoparam.orthogonal(m, orthogonal_map="matrix_exp"),
    ),
    "orthogonal-cayley-no_trivialization": (
        _tall_linear,
        lambda m: torch_parametrizations.orthogonal(
            m, orthogonal_map="cayley", use_trivialization=False
        ),
        lambda m: geoparam.orthogonal(m, orthogonal_map="cayley", use_trivialization=False),
    ),
    "orthogonal-householder": (
        _tall_linear,
        lambda m: torch_parametrizations.orthogonal(m, orthogonal_map="householder"),
        lambda m: geoparam.orthogonal(m, orthogonal_map="householder"),
    ),
    "orthogonal-householder-no_trivialization": (
        _tall_linear,
        lambda m: torch_parametrizations.orthogonal(
            m, orthogonal_map="householder", use_trivialization=False
        ),
        lambda m: geoparam.orthogonal(m, orthogonal_map="householder", use_trivialization=False),
    ),
    "weight_norm": (_tall_linear, torch_parametrizations.weight_norm, geoparam.weight_norm),
    "weight_norm-none": (
        _tall_linear,
        lambda m: torch_parametrizations.weight_norm(m, dim=None),
        lambda m: geoparam.weight_norm(m, dim=None),
    ),
    "spectral_norm": (_tall_linear, torch_parametrizations.spectral_norm, geoparam.spectral_norm),
}
CASES = pytest.mark.parametrize(
    ("make", "register_torch", "register_ours"), CONSTRAINTS.values(), ids=CONSTRAINTS.keys()
)


def _move(module: nn.Module) -> None:
    with torch.no_grad():
        for tensor in module.parametrizations.weight.parameters():
            step = 0.2 * torch.randn_like(tensor)
            # Off the diagonal, where the Householder map keeps its column signs.
            tensor.add_(step.tril(-1) if step.ndim == 2 else step)


@CASES
def test_deepcopy_is_equal_and_independent(make, register_torch, register_ours):
    module = make()
    register_ours(module)
    _move(module)
    module.eval()
    clone = copy.deepcopy(module)
    torch.testing.assert_close(clone.weight, module.weight, rtol=0, atol=0)
    assert type(clone) is type(module)

    weight = module.weight.detach().clone()
    state = {key: value.clone() for key, value in module.state_dict().items()}
    _move(clone)
    clone.train()
    _ = clone.weight  # A training-mode read updates the power-iteration buffers, if any.
    for key, value in clone.state_dict().items():
        if key.endswith(".base"):
            value.mul_(-1)  # In place: the original must not see it.
    assert not torch.equal(clone.weight, weight)
    assert torch.equal(module.weight, weight)
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_deepcopy_keeps_a_working_legacy_hook():
    module = geoparam.weight_norm(nn.Linear(4, 3))
    clone = copy.deepcopy(module)
    with pytest.warns(FutureWarning):
        legacy = torch.nn.utils.weight_norm(nn.Linear(4, 3))
    weight = module.weight.detach().clone()
    clone.load_state_dict(legacy.state_dict(), strict=True)
    torch.testing.assert_close(clone.weight, legacy.weight)
    assert torch.equal(module.weight, weight)


@pytest.mark.parametrize("leave_parametrized", [True, False])
@CASES
def test_remove_parametrizations_as_torch(make, register_torch, register_ours, leave_parametrized):
    reference, ours = register_pair(make, register_torch, register_ours)
    _move(ours)
    reference.load_state_dict(ours.state_dict())
    # In training mode removal runs one more power iteration; eval keeps the weight as read.
    reference.eval()
    ours.eval()
    parametrized_weight = ours.weight.detach().clone()
    original = (
        ours.parametrizations.weight.original.detach().clone()
        if hasattr(ours.parametrizations.weight, "original")
        else None
    )

    def remove(module):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_parametrized)

    try:
        remove(reference)
    except Exception as torch_error:
        # torch refuses (weight_norm: two tensors cannot become one); geoparam does the same.
        with pytest.raises(type(torch_error), match=r"leave_parametrized=False"):
            remove(ours)
        assert parametrize.is_parametrized(ours, "weight")
        return
    remove(ours)
    assert not parametrize.is_parametrized(ours)
    assert isinstance(ours.weight, nn.Parameter)
    assert_close_relative(ours.weight, reference.weight, RTOL[F64])
    expected = parametrized_weight if leave_parametrized else original
    assert_close_relative(ours.weight, expected, 1e-12)


@CASES
def test_cached_reads_the_weight_once(make, register_torch, register_ours):
    reference, ours = register_pair(make, register_torch, register_ours)
    x = torch.randn(4, ours.in_features, dtype=F64)
    outputs = {}
    for name, module in (("torch", reference), ("geoparam", ours)):
        with parametrize.cached():
            first = module.weight
            assert module.weight is first
            out = module(x) + module(x)
        out.square().sum().backward()
        outputs[name] = out.detach()
        assert all(p.grad is not None for p in module.parametrizations.weight.parameters())
    assert_close_relative(outputs["geoparam"], outputs["torch"], RTOL[F64])
    grads = zip(
        ours.parametrizations.weight.parameters(),
        reference.parametrizations.weight.parameters(),
        strict=True,
    )
    for ours_param, reference_param in grads:
        assert_close_relative(ours_param.grad, reference_param.grad, RTOL[F64])


# ---------------------------------------------------------------------------------------------
# One parametrized class per plain class: modules do not see each other's parametrizations.


def test_constrained_modules_of_one_class_share_it():
    first = geoparam.orthogonal(nn.Linear(3, 3))
    second = geoparam.spectral_norm(nn.Linear(4, 2))
    assert type(first) is type(second)
    assert type(first).__name__ == "ParametrizedLinear" and isinstance(first, nn.Linear)
    assert parametrize.type_before_parametrizations(first) is nn.Linear


@pytest.mark.parametrize("leave_parametrized", [True, False])
def test_removing_from_one_module_leaves_the_others(leave_parametrized):
    kept = geoparam.orthogonal(nn.Linear(3, 3))
    removed = geoparam.orthogonal(nn.Linear(3, 3))
    value = removed.weight.detach().clone()
    parametrize.remove_parametrizations(removed, "weight", leave_parametrized=leave_parametrized)
    assert type(removed) is nn.Linear and isinstance(removed.weight, nn.Parameter)
    if leave_parametrized:
        torch.testing.assert_close(removed.weight, value)
    W = kept.weight
    torch.testing.assert_close(W.T @ W, torch.eye(3), atol=1e-6, rtol=0)


def test_a_tensor_parametrized_in_one_module_is_plain_in_another():
    # `bias` constrained in one Linear; every other Linear's bias stays its own parameter,
    # readable, assignable and registered as before.
    geoparam.weight_norm(nn.Linear(3, 3), "bias")
    other = geoparam.orthogonal(nn.Linear(3, 3))
    assert isinstance(other.bias, nn.Parameter)
    other.bias = nn.Parameter(torch.zeros(3))
    assert torch.equal(other.bias, torch.zeros(3))
    assert "bias" in dict(other.named_parameters())
    other.note = "an attribute of this module only"
    assert other.note == "an attribute of this module only"


def test_torch_registration_on_a_shared_module_stays_with_it():
    ours = geoparam.orthogonal(nn.Linear(4, 4))
    sibling = geoparam.orthogonal(nn.Linear(4, 4))
    torch_parametrizations.weight_norm(ours, "bias", dim=None)  # torch's own, second tensor
    assert isinstance(ours.bias, torch.Tensor) and not isinstance(ours.bias, nn.Parameter)
    assert isinstance(sibling.bias, nn.Parameter)
    parametrize.remove_parametrizations(ours, "bias")
    assert isinstance(ours.bias, nn.Parameter)
    W = sibling.weight
    torch.testing.assert_close(W.T @ W, torch.eye(4), atol=1e-6, rtol=0)


def test_torchs_cached_keeps_modules_of_a_shared_class_apart():
    first = geoparam.orthogonal(nn.Linear(3, 3))
    second = geoparam.orthogonal(nn.Linear(3, 3))
    with torch.no_grad():
        expected = first.weight.clone(), second.weight.clone()
    with parametrize.cached():
        assert torch.equal(first.weight, expected[0])
        assert torch.equal(second.weight, expected[1])
        assert first.weight is first.weight


def test_removing_from_a_deep_copy_leaves_the_original():
    original = geoparam.orthogonal(nn.Linear(3, 3))
    copy_ = copy.deepcopy(original)
    parametrize.remove_parametrizations(copy_, "weight")
    W = original.weight
    torch.testing.assert_close(W.T @ W, torch.eye(3), atol=1e-6, rtol=0)


def test_torch_breaks_the_original_when_a_deep_copy_is_unparametrized():
    original = torch_parametrizations.orthogonal(nn.Linear(3, 3))
    copy_ = copy.deepcopy(original)
    parametrize.remove_parametrizations(copy_, "weight")
    broken = not hasattr(original, "weight")
    observe_torch_defect(broken, "the copy shares the class whose weight property it deletes")
