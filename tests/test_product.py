"""Products of spaces: stored tensors, factor bases, re-basing, reuse, stacking, the front door.

A toy product written here: ``W = Q diag(s)`` (orthogonal columns scaled by positive factors),
from an orthogonal factor and a positive spectrum.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import geoparam
from geoparam.constraints._front import constrain
from geoparam.manifolds import POSITIVE_FUNCTIONS, Orthogonal, Product, Spectrum


class ScaledColumns(Product):
    def __init__(self, shape, *, label, dtype=None, device=None):
        like = {"label": label, "dtype": dtype, "device": device}
        factors = [
            Orthogonal(shape, "cayley", **like),
            Spectrum(shape[-1:], POSITIVE_FUNCTIONS["exp"], low=0.0, **like),
        ]
        super().__init__(shape, factors, **like)

    def _combine(self, Q: Tensor, s: Tensor) -> Tensor:
        return Q * s.unsqueeze(-2)

    def _split(self, W: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.linalg.vector_norm(W, dim=-2)
        return W / s.unsqueeze(-2), s

    def _violation(self, W: Tensor, atol: float | None) -> str | None:
        atol = 1e-5 if atol is None else atol
        s = torch.linalg.vector_norm(W, dim=-2)
        Q = W / s
        error = float((Q.mT @ Q - torch.eye(W.size(-1), dtype=W.dtype)).abs().max())
        return None if error <= atol else f"its columns are not orthogonal (by {error:.3g})"

    def _project(self, W: Tensor) -> Tensor:
        Q, R = torch.linalg.qr(W)
        return Q * R.diagonal().abs().clamp_min(1e-3)


def _point(seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64, generator=generator))[0]
    return Q * torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)


def _registered(value: Tensor) -> nn.Module:
    module = nn.Linear(3, 6, bias=False).double()
    with torch.no_grad():
        module.weight.copy_(value)
    return constrain(module, "weight", "scaled_columns", ScaledColumns)


def test_each_factor_stores_one_tensor_and_keeps_its_base():
    W = _point()
    module = _registered(W)
    torch.testing.assert_close(module.weight, W)
    keys = set(module.state_dict())
    assert keys == {
        "parametrizations.weight.original0",
        "parametrizations.weight.original1",
        "parametrizations.weight.0.factors.0.base",
    }
    torch.testing.assert_close(module.parametrizations.weight.original1, W.norm(dim=0).log())


def test_rebase_goes_to_the_factors_with_a_base():
    module = _registered(_point())
    parametrizations = module.parametrizations.weight
    with torch.no_grad():
        parametrizations.original0.add_(0.3 * torch.randn(6, 3, dtype=torch.float64))
        parametrizations.original1.add_(0.1)
    before = module.weight.detach().clone()
    spectrum = parametrizations.original1.detach().clone()
    assert geoparam.update_base(module) == 1
    torch.testing.assert_close(module.weight, before)
    assert torch.equal(parametrizations.original1, spectrum)  # no base: left as it was
    assert float(parametrizations.original0.detach().tril(-1).abs().max()) == 0.0


def test_reuse_sees_the_factor_bases():
    # The product's evaluation is reused while its inputs and every factor's buffers are the
    # same: a new base (in a submodule) must be seen.
    module = _registered(_point())
    with torch.no_grad():
        first = module.weight
        assert module.weight is first
        module.parametrizations.weight[0].factors[0].base.neg_()
        torch.testing.assert_close(module.weight, -first)


def test_off_the_set_refused_on_assignment_and_projected_at_registration():
    module = _registered(torch.randn(6, 3, dtype=torch.float64))
    W = module.weight.detach()
    Q = W / W.norm(dim=0)
    torch.testing.assert_close(Q.T @ Q, torch.eye(3, dtype=torch.float64))
    with pytest.raises(
        ValueError,
        match=r"Linear\.weight: cannot assign a value off the constraint: "
        r"its columns are not orthogonal",
    ):
        module.weight = torch.ones(6, 3, dtype=torch.float64)
    torch.testing.assert_close(module.weight, W)


def test_gradient_reaches_every_factor():
    module = _registered(_point())
    module.weight.sum().backward()
    parametrizations = module.parametrizations.weight
    assert parametrizations.original0.grad.abs().sum() > 0
    assert parametrizations.original1.grad.abs().sum() > 0


def test_a_product_cannot_be_stacked():
    module = geoparam.orthogonal(nn.Linear(3, 6, bias=False))
    with pytest.raises(ValueError, match="can only be a tensor's first constraint"):
        constrain(module, "weight", "scaled_columns", ScaledColumns)
    assert len(module.parametrizations.weight) == 1


def test_sample_combines_factor_samples():
    param = _registered(_point()).parametrizations.weight[0]
    W = param.sample()
    assert W.shape == (6, 3) and W.dtype == torch.float64
    assert param.in_manifold(W)


def test_multi_tensor_and_chart_constraints_refuse_to_follow_another():
    for stack in (
        lambda m: geoparam.alpha_stable(m),
        lambda m: geoparam.sphere(m),
        lambda m: geoparam.low_rank(m, "weight", 2),
    ):
        module = geoparam.sphere(nn.Linear(4, 4), embedded=True)
        with pytest.raises(ValueError, match=r"^Linear\.weight is already constrained"):
            stack(module)
        assert len(module.parametrizations.weight) == 1


def test_update_base_on_a_constrained_buffer():
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(5, 5))

    module = geoparam.low_rank(WithBuffer(), "w", 2)
    before = module.w.clone()
    assert geoparam.update_base(module) == 1
    torch.testing.assert_close(module.w, before, atol=1e-5, rtol=0)
