"""Reuse of constrained weights: one evaluation per value, gradients exactly right in every pattern.

The reference for every gradient is the same computation with reuse turned off
(``geoparam.caching(False)``), where each read evaluates the map as torch does.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

import geoparam
from geoparam.manifolds import Orthogonal, SpectralNorm, WeightNorm
from parametrization_testing import observe_torch_defect

CONSTRAINTS = {
    "matrix_exp": lambda m: geoparam.orthogonal(m, orthogonal_map="matrix_exp"),
    "cayley": lambda m: geoparam.orthogonal(m, orthogonal_map="cayley"),
    "householder": lambda m: geoparam.orthogonal(m, orthogonal_map="householder"),
    "weight_norm": geoparam.weight_norm,
    "spectral_norm-eval": lambda m: geoparam.spectral_norm(m).eval(),
}


class Cell(nn.Module):
    """A recurrent cell that reads its constrained weight at every step."""

    def __init__(self, size: int = 6, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.linear = nn.Linear(size, size, dtype=dtype)

    def forward(self, x: torch.Tensor, steps: int = 5) -> torch.Tensor:
        h = x
        for _ in range(steps):
            h = torch.tanh(self.linear(h) + x)
        return h


def _cell(constraint: str, seed: int = 0) -> Cell:
    torch.manual_seed(seed)
    cell = Cell()
    CONSTRAINTS[constraint](cell.linear)
    return cell


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _count_evaluations(monkeypatch) -> list[int]:
    calls = [0]
    for cls in (Orthogonal, WeightNorm, SpectralNorm):
        original = cls._evaluate

        def counting(self, *args, _original=original):
            calls[0] += 1
            return _original(self, *args)

        monkeypatch.setattr(cls, "_evaluate", counting)
    return calls


def _run_both(pattern, constraint: str):
    """``pattern(module)`` with reuse on and off, from the same state: results and gradients."""
    outcomes = []
    for enabled in (True, False):
        module = _cell(constraint)
        with geoparam.caching(enabled):
            result = pattern(module)
        outcomes.append((result, _grads(module)))
    return outcomes


def _assert_same(outcomes) -> None:
    (result, grads), (expected, expected_grads) = outcomes
    if result is not None:
        torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


X = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def _several_forwards_one_backward(module):
    loss = module(X).square().sum() + module(Y).sum()
    loss.backward()
    return loss.detach()


def _accumulation(module):
    for batch in (X, Y, X + Y):
        module(batch).square().mean().backward()


def _retain_graph(module):
    loss = module(X).square().sum()
    loss.backward(retain_graph=True)
    loss.backward()


def _two_losses_separately(module):
    first = module(X).square().sum()
    second = module(Y).sin().sum()
    first.backward()
    second.backward()


def _no_grad_read_first(module):
    with torch.no_grad():
        module(Y)
    module(X).square().sum().backward()


def _double_backward(module):
    # A gradient penalty: the gradient with respect to the input, differentiated again.
    x = X.clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(module(x).square().sum(), x, create_graph=True)
    grad_x.square().sum().backward()


PATTERNS = {
    "several-forwards-one-backward": _several_forwards_one_backward,
    "gradient-accumulation": _accumulation,
    "retain-graph": _retain_graph,
    "two-losses-separately": _two_losses_separately,
    "no-grad-read-first": _no_grad_read_first,
    "gradient-penalty": _double_backward,
}


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_gradients_equal_one_evaluation_per_read(constraint, pattern):
    _assert_same(_run_both(pattern, constraint))


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_a_cell_loop_evaluates_the_map_twice_not_once_per_step(constraint, monkeypatch):
    module = _cell(constraint)
    calls = _count_evaluations(monkeypatch)
    module(X, steps=20).sum().backward()
    # The first read is an ordinary evaluation; the second starts the shared, reusable one.
    assert calls[0] == 2
    module(Y, steps=20).sum().backward()  # nothing changed: no evaluation at all
    assert calls[0] == 2


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_no_grad_reads_evaluate_once(constraint, monkeypatch):
    module = _cell(constraint)
    calls = _count_evaluations(monkeypatch)
    with torch.no_grad():
        first = module(X, steps=10)
        second = module(X, steps=10)
    assert calls[0] == 1
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def _assert_weight_is_fresh(module: Cell) -> None:
    got = module.linear.weight.detach().clone()
    with geoparam.caching(False):
        expected = module.linear.weight.detach()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_reads_after_a_change_see_the_new_value(constraint):
    module = _cell(constraint)
    module(X).sum().backward()
    before = module.linear.weight.detach().clone()

    torch.optim.SGD(module.parameters(), lr=0.1).step()
    assert not torch.equal(module.linear.weight, before)
    _assert_weight_is_fresh(module)

    other = _cell(constraint, seed=5)
    module.load_state_dict(other.state_dict())
    torch.testing.assert_close(module.linear.weight, other.linear.weight, rtol=0, atol=0)

    if constraint != "spectral_norm-eval":  # torch's spectral norm keeps any assigned weight
        target = geoparam.orthogonal(nn.Linear(6, 6, dtype=torch.float64)).weight.detach()
        if "norm" in constraint:
            target = 2 * target
        module.linear.weight = target
        _assert_weight_is_fresh(module)

    module.double().to(torch.float32)
    assert module.linear.weight.dtype == torch.float32
    _assert_weight_is_fresh(module)


def test_writing_into_a_returned_weight_does_not_poison_later_reads():
    module = _cell("cayley")
    with torch.no_grad():
        module.linear.weight.zero_()  # a tensor that was handed out, changed in place
        assert module.linear.weight.abs().sum() > 0


def test_update_base_and_optimizer_state_see_the_new_base():
    module = _cell("matrix_exp")
    with torch.no_grad():
        module.linear.parametrizations.weight.original.normal_()
    before = module.linear.weight.detach().clone()
    geoparam.update_base(module)
    torch.testing.assert_close(module.linear.weight, before, rtol=1e-9, atol=1e-9)
    _assert_weight_is_fresh(module)


def test_data_writes_need_clear_caches():
    # Writes through .data bypass the version counter: documented, and clear_caches() fixes it.
    module = _cell("cayley")
    with torch.no_grad():
        stale = module.linear.weight.clone()
        module.linear.parametrizations.weight.original.data.add_(0.5)
        assert torch.equal(module.linear.weight, stale)
        geoparam.clear_caches(module)
        assert not torch.equal(module.linear.weight, stale)
    _assert_weight_is_fresh(module)


def test_inference_mode_results_are_not_served_outside_it():
    module = _cell("matrix_exp")
    with torch.inference_mode():
        module(X)
    module(X).sum().backward()  # an inference tensor here would raise
    assert all(p.grad is not None for p in module.parameters())


def test_spectral_norm_in_training_refines_at_every_read_as_torch():
    # The GAN pattern: D(real) and D(fake) before one backward; two power iterations per step.
    def make(register):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        torch.manual_seed(1)
        for layer in (model[0], model[2]):
            register(layer)
        return model

    ours, reference = make(geoparam.spectral_norm), make(torch_parametrizations.spectral_norm)
    real, fake = torch.randn(5, 4), torch.randn(5, 4)
    for model in (ours, reference):
        (model(real).mean() - model(fake).mean()).backward()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)
    for mine, theirs in zip(ours.buffers(), reference.buffers(), strict=False):
        torch.testing.assert_close(mine, theirs)


def test_cached_block_refines_spectral_norm_once_and_releases_at_exit(monkeypatch):
    critic = geoparam.spectral_norm(nn.Linear(4, 4))
    calls = _count_evaluations(monkeypatch)
    u = critic.parametrizations.weight[0]._u
    with geoparam.cached():
        before = u.clone()
        first = critic.weight
        after_first = u.clone()
        second = critic.weight
        assert first is second and calls[0] == 1
        assert not torch.equal(before, after_first) and torch.equal(u, after_first)
        (first.sum() + second.sum()).backward()
    _ = critic.weight  # outside the block: a training-mode read refines again
    assert calls[0] == 2 and not torch.equal(u, after_first)


def test_cached_block_keeps_gradients_after_a_no_grad_first_read():
    layer = geoparam.orthogonal(nn.Linear(4, 4))
    with geoparam.cached():
        with torch.no_grad():
            _ = layer.weight
        layer.weight.sum().backward()
    assert layer.parametrizations.weight.original.grad.abs().sum() > 0


def test_torchs_cached_drops_gradients_after_a_no_grad_first_read():
    layer = torch_parametrizations.orthogonal(nn.Linear(4, 4))
    with parametrize.cached():
        with torch.no_grad():
            _ = layer.weight
        weight = layer.weight
    observe_torch_defect(not weight.requires_grad, "cached() keeps a no_grad first read")


def test_a_cached_weight_does_not_keep_its_module_alive():
    module = _cell("matrix_exp")
    module(X, steps=3).sum().backward()  # plain and reusable results cached
    reference = weakref.ref(module.linear.parametrizations.weight[0])
    del module
    gc.collect()
    assert reference() is None


def test_caching_off_evaluates_at_every_read(monkeypatch):
    module = _cell("cayley")
    calls = _count_evaluations(monkeypatch)
    with geoparam.caching(False):
        module(X, steps=4).sum().backward()
    assert calls[0] == 4
