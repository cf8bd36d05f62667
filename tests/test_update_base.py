"""Re-basing the dynamic trivialization keeps the weights and resets the unconstrained tensor."""

import pytest
import torch
from torch import nn

import geoparam
from geoparam.manifolds import Orthogonal

MAPS = ["matrix_exp", "cayley", "householder"]
SHAPES = [(5, 5), (7, 3), (3, 7), (2, 6, 4)]


def _layer(shape, orthogonal_map, dtype=torch.float64):
    layer = nn.Linear(1, 1)
    layer.weight = nn.Parameter(torch.randn(*shape, dtype=dtype))
    return geoparam.orthogonal(layer, orthogonal_map=orthogonal_map)


@pytest.mark.parametrize("orthogonal_map", MAPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_weight_unchanged_and_original_reset(orthogonal_map, shape):
    torch.manual_seed(0)
    layer = _layer(shape, orthogonal_map)
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.add_(0.5 * torch.randn_like(original))
    before = layer.weight.detach().clone()

    assert geoparam.update_base(layer) == 1

    torch.testing.assert_close(layer.weight, before, atol=1e-12, rtol=0)
    expected = torch.zeros_like(original)
    expected.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
    torch.testing.assert_close(original.detach(), expected)
    base = layer.parametrizations.weight[0].base
    eye = torch.eye(base.size(-1), dtype=base.dtype)
    torch.testing.assert_close(base.mT @ base, eye.expand_as(base), atol=1e-13, rtol=0)


def test_complex_unitary_rebase():
    torch.manual_seed(1)
    layer = _layer((4, 4), "matrix_exp", dtype=torch.complex128)
    with torch.no_grad():
        layer.parametrizations.weight.original.add_(torch.randn(4, 4, dtype=torch.complex128))
    before = layer.weight.detach().clone()
    geoparam.update_base(layer)
    torch.testing.assert_close(layer.weight, before, atol=1e-12, rtol=0)


def test_optimizer_state_cleared_only_when_asked():
    torch.manual_seed(2)
    model = nn.Sequential(_layer((4, 4), "matrix_exp", torch.float32), nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    original = model[0].parametrizations.weight.original
    assert original in optimizer.state

    geoparam.update_base(model)
    assert original in optimizer.state
    geoparam.update_base(model, optimizer=optimizer)
    assert original not in optimizer.state
    assert model[1].weight in optimizer.state


def test_untrivialized_and_other_constraints_are_skipped():
    model = nn.Sequential(
        geoparam.orthogonal(
            nn.Linear(4, 4), use_trivialization=False, orthogonal_map="householder"
        ),
        geoparam.spectral_norm(nn.Linear(4, 4)),
        nn.Linear(4, 4),
    )
    assert geoparam.update_base(model) == 0


def test_rebase_without_base_raises():
    param = Orthogonal(torch.Size([3, 3]), "householder", use_trivialization=False)
    with pytest.raises(RuntimeError, match="use_trivialization=False"):
        param.rebase_(torch.zeros(3, 3))


def test_training_continues_after_rebase():
    # Re-basing every few steps must not disturb optimisation: the loss keeps falling.
    torch.manual_seed(3)
    layer = _layer((6, 6), "matrix_exp", torch.float32)
    target = torch.linalg.qr(torch.randn(6, 6))[0]
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for step in range(120):
        optimizer.zero_grad()
        loss = (layer.weight - target).square().sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 19:
            geoparam.update_base(layer)
    assert losses[-1] < 0.5 * losses[0]
    W = layer.weight.detach()
    assert (W.T @ W - torch.eye(6)).abs().max() < 5e-5


def _trained(layer: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    # A linear loss: its gradient on the orthogonal group is not zero (unlike ‖W‖², constant).
    target = torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        optimizer.zero_grad()
        (layer.weight * target).sum().backward()
        optimizer.step()


def test_optimizer_state_is_an_explicit_choice():
    layer = _layer((5, 5), "matrix_exp", torch.float32)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    _trained(layer, optimizer, 3)
    original = layer.parametrizations.weight.original
    moments = optimizer.state[original]["exp_avg"].clone()
    geoparam.update_base(layer, optimizer, optimizer_state="keep")
    assert torch.equal(optimizer.state[original]["exp_avg"], moments)
    geoparam.update_base(layer, optimizer, optimizer_state="reset")
    assert original not in optimizer.state
    with pytest.raises(ValueError, match="optimizer_state must be one of 'keep', 'reset'"):
        geoparam.update_base(layer, optimizer, optimizer_state="transport")
    with pytest.raises(ValueError, match='optimizer_state="reset" needs the optimizer'):
        geoparam.update_base(layer, optimizer_state="reset")


def _moved(*modules_and_names: tuple[nn.Module, str]) -> None:
    # Take each stored tensor off the map's identity point (its strict lower part is 0 there).
    with torch.no_grad():
        for module, name in modules_and_names:
            module.parametrizations[name].original.add_(0.1)


def _rebased(module: nn.Module, name: str) -> bool:
    return float(module.parametrizations[name].original.detach().tril(-1).abs().max()) == 0.0


def test_update_base_by_name():
    layer = geoparam.orthogonal(nn.Linear(4, 4))
    layer.extra = nn.Parameter(torch.randn(4, 4))
    geoparam.orthogonal(layer, "extra")
    _moved((layer, "weight"), (layer, "extra"))
    assert geoparam.update_base(layer, name="extra") == 1
    assert _rebased(layer, "extra") and not _rebased(layer, "weight")
    assert geoparam.update_base(layer, name="weight") == 1
    assert _rebased(layer, "weight")
    assert geoparam.update_base(layer, name="bias") == 0
    assert geoparam.update_base(layer) == 2


def test_update_base_every_k_steps():
    layer = _layer((5, 5), "cayley", torch.float32)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    rebased = []
    original = layer.parametrizations.weight.original

    def record(*_):
        rebased.append(float(original.detach().tril(-1).abs().max()) == 0.0)

    handle = geoparam.update_base_every(layer, optimizer, every=3)
    probe = optimizer.register_step_post_hook(record)  # runs after the re-basing hook
    _trained(layer, optimizer, 7)
    assert rebased == [False, False, True, False, False, True, False]
    handle.remove()
    probe.remove()
    _trained(layer, optimizer, 3)
    assert float(original.tril(-1).abs().max()) > 0
    with pytest.raises(ValueError, match="every must be a positive int"):
        geoparam.update_base_every(layer, optimizer, every=0)


def test_repeated_rebasing_does_not_drift():
    # Each re-basing multiplies the base by a rotation; the polar re-projection keeps the
    # base orthogonal to rounding however often that happens.
    layer = _layer((16, 16), "matrix_exp", torch.float32)
    original = layer.parametrizations.weight.original
    generator = torch.Generator().manual_seed(0)
    for _ in range(500):
        with torch.no_grad():
            original.add_(0.3 * torch.randn(original.shape, generator=generator))
        geoparam.update_base(layer)
    base = layer.parametrizations.weight[0].base
    assert (base.T @ base - torch.eye(16)).abs().max() < 1e-5


def test_update_base_without_recursion():
    inner = geoparam.orthogonal(nn.Linear(4, 4))
    outer = nn.Sequential(inner)
    outer.weight = nn.Parameter(torch.randn(4, 4))
    geoparam.orthogonal(outer, "weight")
    _moved((inner, "weight"), (outer, "weight"))
    assert geoparam.update_base(outer, name="weight", recurse=False) == 1
    assert _rebased(outer, "weight") and not _rebased(inner, "weight")
    assert geoparam.update_base(outer, name="weight") == 2
    assert _rebased(inner, "weight")


def test_reset_state_only_of_tensors_that_rebasing_changed():
    layer = geoparam.low_rank(nn.Linear(6, 6), "weight", 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer.weight.sum().backward()
    optimizer.step()
    stored = layer.parametrizations.weight
    geoparam.update_base(layer, optimizer, optimizer_state="reset")
    assert stored.original0 not in optimizer.state and stored.original2 not in optimizer.state
    assert stored.original1 in optimizer.state  # the spectrum has no base: unchanged
