"""The parametrization base: what every constraint shares, and the hooks it declares.

Registration and training call the hooks on whatever parametrization they find (no dispatch on
concrete classes), so a new constraint gets legacy checkpoint keys, re-basing and
re-initialisation by declaring them; these tests use one written here for the purpose.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import geoparam
from geoparam._registration import register
from geoparam.errors import NotATensorError
from geoparam.manifolds import Orthogonal, SpectralNorm, WeightNorm
from geoparam.manifolds._base import Parametrization


class Scaled(Parametrization):
    """A toy constraint: ``scale · X`` with a base-like ``scale`` that re-basing folds in."""

    def __init__(self, like: Tensor, label: str) -> None:
        super().__init__(like.shape, label=label, dtype=like.dtype, device=like.device)
        self.register_buffer("scale", torch.ones(()))
        self.refreshed = 0

    def forward(self, X: Tensor) -> Tensor:
        return self.scale * X

    def _right_inverse(self, value: Tensor) -> Tensor:
        return value / self.scale

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        return None  # every finite tensor is a value

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)

    def legacy_state_keys(self) -> dict[str, str | None]:
        return {"_old": "original", "_dropped": None}

    @property
    def can_rebase(self) -> bool:
        return True

    def rebase_(self, X: Tensor) -> Tensor:
        self.scale.mul_(2.0)
        return X / 2.0

    def reinitialize_(self, value: Tensor) -> None:
        self.refreshed += 1


class NoInit(nn.Module):
    """A module without reset_parameters(), holding one parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 2))


def scaled_linear() -> nn.Linear:
    layer = nn.Linear(2, 3)
    register(layer, "weight", Scaled(layer.weight, "Linear.weight"), unsafe=True)
    return layer


def test_update_base_uses_the_declared_hook():
    layer = scaled_linear()
    with torch.no_grad():
        before = layer.weight.clone()
    assert geoparam.update_base(layer) == 1
    assert layer.parametrizations.weight[0].scale.item() == 2.0
    torch.testing.assert_close(layer.weight, before)


def test_legacy_keys_are_renamed_from_the_declared_hook():
    layer = scaled_linear()
    value = torch.randn(3, 2)
    state = {
        "bias": layer.bias.detach().clone(),
        "parametrizations.weight.0.scale": torch.ones(()),
        "weight_old": value,
        "weight_dropped": value,
    }
    layer.load_state_dict(state)  # strict: the dropped key is gone too
    torch.testing.assert_close(layer.parametrizations.weight.original, value)


def test_reset_parameters_refreshes_through_the_declared_hook():
    layer = scaled_linear()
    layer.reset_parameters()
    assert layer.parametrizations.weight[0].refreshed == 1
    module = NoInit()
    register(module, "weight", Scaled(module.weight, "NoInit.weight"), unsafe=True)
    geoparam.reset_parametrizations(module)  # drawn by sample(), then refreshed
    assert module.parametrizations.weight[0].refreshed == 1


def test_assignments_are_checked_before_the_subclass_sees_them():
    layer = scaled_linear()
    shape = r"Linear\.weight: cannot assign a tensor of shape \(2, 3\)"
    with pytest.raises(ValueError, match=shape):
        layer.weight = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"Linear\.weight: cannot assign .* 1 non-finite"):
        layer.weight = torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [0.0, 0.0]])
    with pytest.raises(NotATensorError, match=r"Linear\.weight"):
        layer.parametrizations.weight[0].right_inverse([[0.0, 1.0]])


def test_the_base_refuses_what_a_subclass_does_not_provide():
    bare = Parametrization(torch.Size([2]), label="a tensor")
    with pytest.raises(NotImplementedError, match="a tensor: Parametrization has no sample"):
        bare.sample()
    with pytest.raises(NotImplementedError, match="in_manifold"):
        bare.in_manifold(torch.zeros(2))
    # An assignment is checked against the constraint before the subclass inverts it.
    with pytest.raises(NotImplementedError, match="in_manifold"):
        bare.right_inverse(torch.zeros(2))
    with pytest.raises(NotImplementedError, match="right inverse"):
        bare._right_inverse(torch.zeros(2))
    with pytest.raises(NotImplementedError, match="a tensor: Parametrization defines no map"):
        bare(torch.zeros(2))
    with pytest.raises(RuntimeError, match="no base"):
        bare.rebase_(torch.zeros(2))
    assert not bare.in_manifold(torch.zeros(3))  # the shape is checked first
    assert not bare.can_rebase and bare.legacy_state_keys() == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda w: Orthogonal(w.shape, "cayley", label="w", dtype=w.dtype),
        lambda w: WeightNorm(0, shape=w.shape, label="w", dtype=w.dtype),
        lambda w: SpectralNorm(w, label="w"),
    ],
    ids=["orthogonal", "weight_norm", "spectral_norm"],
)
def test_every_parametrization_tracks_dtype_and_device(make):
    parametrization = make(torch.randn(4, 3))
    assert isinstance(parametrization, Parametrization)
    assert parametrization.shape == (4, 3) and parametrization.dtype == torch.float32
    parametrization.double()
    assert parametrization.dtype == torch.float64 and parametrization.device.type == "cpu"
    assert "_like" not in parametrization.state_dict()


def test_norms_membership():
    weight = torch.randn(5, 4)
    assert WeightNorm(0, shape=weight.shape, label="w").in_manifold(weight)
    assert not WeightNorm(0, shape=weight.shape, label="w").in_manifold(weight.fill_(float("nan")))
    layer = geoparam.spectral_norm(nn.Linear(4, 5))
    for _ in range(20):  # a few training reads refine the power iteration's estimate
        normalised = layer.weight.detach()
    parametrization = layer.parametrizations.weight[0]
    assert parametrization.in_manifold(normalised)
    assert not parametrization.in_manifold(2.0 * normalised)
    assert not parametrization.in_manifold(normalised.mT)
