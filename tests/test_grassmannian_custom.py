"""The Grassmannian and custom constraints beyond the catalogue checks.

Grassmannian: parity with geotorch 0.4 (same map from the same stored tensor and base, same
membership verdicts, same weight kept), the top block of ``X`` unused and motion only across the
subspace, re-basing, batch = loop, one compiled forward and backward. Custom: the three ways of
inverting (none, an inverse, a group base), re-basing, predicates, sampling, stacking.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import geoparam
from catalogue_cases.custom import cayley_of_skew, has_positive_det
from geoparam.manifolds import CustomConstraint, Grassmannian

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import geotorch


class Holder(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(value.clone())


def _frame(*shape: int, dtype=torch.float64) -> Tensor:
    wide = shape[-2] < shape[-1]
    tall = (*shape[:-2], shape[-1], shape[-2]) if wide else shape
    Q = torch.linalg.qr(torch.randn(tall, dtype=dtype)).Q
    return Q.mT if wide else Q


def _projector(Q: Tensor) -> Tensor:
    Q = Q.mT if Q.size(-2) < Q.size(-1) else Q
    return Q @ Q.mH


# ---------------------------------------------------------------------------- Grassmannian


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (2, 6, 2)])
@pytest.mark.parametrize(("ours", "theirs"), [("matrix_exp", "expm"), ("cayley", "cayley")])
def test_grassmannian_forward_equals_geotorch(shape, ours, theirs):
    # The same stored tensor and base give the same weight: the same A = [[0, -Bᵀ], [B, 0]].
    # The state_dict keys are the same too, so a geotorch checkpoint loads as it is.
    mine = geoparam.grassmannian(Holder(_frame(*shape)), triv=ours)
    reference = geotorch.grassmannian(Holder(torch.randn(shape, dtype=torch.float64)), triv=theirs)
    with torch.no_grad():
        reference.parametrizations.weight.original.normal_()
    mine.load_state_dict(reference.state_dict())
    torch.testing.assert_close(mine.weight, reference.weight, atol=1e-12, rtol=0)


def test_grassmannian_in_manifold_and_assignment_match_geotorch():
    shape = (6, 3)
    mine = geoparam.grassmannian(Holder(_frame(*shape)))
    reference = geotorch.grassmannian(Holder(torch.randn(shape, dtype=torch.float64)))
    Q = _frame(*shape)
    points = {
        "frame": Q,
        "scaled": 1.01 * Q,
        "perturbed": Q + 1e-3 * torch.randn(shape, dtype=torch.float64),
        "random": torch.randn(shape, dtype=torch.float64),
        "rank-deficient": torch.cat([Q[:, :2], Q[:, :1]], dim=1),
    }
    for name, point in points.items():
        expected = reference.parametrizations.weight[0].in_manifold(point)
        assert mine.parametrizations.weight[0].in_manifold(point) == expected, name
    mine.weight = Q
    reference.weight = Q
    torch.testing.assert_close(mine.weight, Q, atol=1e-12, rtol=0)
    torch.testing.assert_close(reference.weight, Q, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"its columns are not orthonormal: max \|QᴴQ - I\|"):
        mine.weight = points["scaled"]


@pytest.mark.parametrize("triv", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_grassmannian_moves_only_the_subspace(triv, dtype):
    layer = geoparam.grassmannian(Holder(_frame(7, 3, dtype=dtype)), triv=triv)
    param = layer.parametrizations.weight[0]
    X = 0.3 * torch.randn(7, 3, dtype=dtype)
    # The top 3 x 3 block is not read: changing it changes nothing, and its gradient is zero.
    Y = X.clone()
    Y[:3] = torch.randn(3, 3, dtype=dtype)
    torch.testing.assert_close(param(X), param(Y), atol=0, rtol=0)
    X.requires_grad_()
    torch.view_as_real(param(X) + 0j).sum().backward()
    assert bool((X.grad[:3] == 0).all()) and bool((X.grad[3:] != 0).any())
    # At X = 0 every direction is horizontal: Qᴴ dQ = 0 (no rotation within the span).
    zero = torch.zeros(7, 3, dtype=dtype)
    Q, dQ = torch.autograd.functional.jvp(param._evaluate, zero, torch.randn(7, 3, dtype=dtype))
    torch.testing.assert_close(Q.mH @ dQ, torch.zeros(3, 3, dtype=dtype), atol=1e-12, rtol=0)
    assert float(dQ.abs().max()) > 0.1


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (2, 5, 2)])
def test_grassmannian_update_base_keeps_the_weight_and_resets_x(shape):
    layer = geoparam.grassmannian(Holder(_frame(*shape)))
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.add_(0.5 * torch.randn_like(original))
    before = layer.weight.detach().clone()
    assert geoparam.update_base(layer) == 1
    torch.testing.assert_close(layer.weight, before, atol=1e-12, rtol=0)
    assert bool((original == 0).all())


def test_grassmannian_projection_keeps_the_span_and_batch_is_a_loop():
    W = torch.randn(2, 6, 3, dtype=torch.float64)
    layer = geoparam.grassmannian(Holder(W), triv="cayley")
    Q = layer.weight.detach()
    torch.testing.assert_close(_projector(Q), _projector(torch.linalg.qr(W).Q))
    # The nearest frame: the polar factor, Q = W (WᵀW)^(-1/2).
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close(Q, U @ Vh)
    param = layer.parametrizations.weight[0]
    X = torch.randn(2, 6, 3, dtype=torch.float64)
    single = Grassmannian(torch.Size([6, 3]), "cayley", dtype=torch.float64)
    for i in range(2):
        single.base = param.base[i]
        torch.testing.assert_close(param(X)[i], single(X[i]))


def test_grassmannian_square_is_a_single_point():
    # Gr(n, n) has one point, the whole space: the weight stays the assigned frame.
    Q = _frame(4, 4)
    layer = geoparam.grassmannian(Holder(Q))
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    torch.testing.assert_close(layer.weight, Q, atol=1e-12, rtol=0)


def test_grassmannian_repr_and_messages():
    layer = geoparam.grassmannian(nn.Linear(2, 5), triv="cayley")
    assert repr(layer.parametrizations.weight[0]) == "Grassmannian(triv='cayley')"
    with pytest.raises(ValueError, match=r"Linear\.weight: cannot assign .* rows are not"):
        geoparam.grassmannian(nn.Linear(5, 2)).weight = torch.ones(2, 5)


def test_grassmannian_compiles_fullgraph():
    torch._dynamo.reset()
    layer = geoparam.grassmannian(Holder(_frame(2, 6, 3, dtype=torch.float32)))
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    eager = copy.deepcopy(layer)
    x = torch.randn(2, 4, 6)

    def loss(module):
        return (x @ module.weight).pow(2).sum()

    compiled = torch.compile(lambda: loss(layer), backend="aot_eager", fullgraph=True)
    value, expected = compiled(), loss(eager)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    value.backward()
    expected.backward()
    torch.testing.assert_close(
        layer.parametrizations.weight.original.grad,
        eager.parametrizations.weight.original.grad,
        rtol=1e-5,
        atol=1e-5,
    )
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------- custom


def test_custom_without_inverse_starts_at_f_of_the_weight_and_refuses_assignment():
    W = torch.randn(3, 4)
    layer = geoparam.custom_constraint(Holder(W), "weight", torch.sigmoid)
    torch.testing.assert_close(layer.parametrizations.weight.original.detach(), W)
    torch.testing.assert_close(layer.weight, torch.sigmoid(W))
    with pytest.raises(NotImplementedError, match=r"Holder\.weight: cannot assign .* inverse="):
        layer.weight = torch.rand(3, 4)
    torch.testing.assert_close(layer.weight, torch.sigmoid(W))


def test_custom_inverse_without_predicate_accepts_every_value():
    layer = geoparam.custom_constraint(Holder(torch.randn(5)), "weight", torch.sinh, torch.asinh)
    value = torch.tensor([-3.0, 0.0, 1.0, 2.0, 50.0])
    layer.weight = value
    torch.testing.assert_close(layer.weight, value)
    assert layer.parametrizations.weight[0].in_manifold(torch.full((5,), -1e6))


def test_custom_inverse_outside_its_domain_is_refused():
    layer = geoparam.custom_constraint(Holder(torch.ones(3)), "weight", torch.exp, torch.log)
    with pytest.raises(ValueError, match=r"inverse\(W\) has 1 non-finite entries .* in_manifold="):
        layer.weight = torch.tensor([1.0, -1.0, 2.0])
    torch.testing.assert_close(layer.weight, torch.ones(3))


def test_custom_projection_must_land_where_the_predicate_accepts():
    # f's image (all reals > 0) is not what the predicate asks (> 1): a clear error.
    with pytest.raises(ValueError, match=r"f\(weight\)"):
        geoparam.custom_constraint(
            Holder(-torch.ones(3)),
            "weight",
            torch.exp,
            torch.log,
            in_manifold=lambda W: bool(W.min() > 1),
        )


def test_custom_group_trains_in_the_group_and_rebases():
    W = torch.randn(4, 4, dtype=torch.float64)
    W[0] *= torch.sign(torch.linalg.det(W))
    layer = geoparam.custom_constraint(
        Holder(W), "weight", torch.linalg.matrix_exp, in_manifold=has_positive_det, group=True
    )
    param = layer.parametrizations.weight[0]
    torch.testing.assert_close(layer.weight, W, atol=0, rtol=0)
    torch.testing.assert_close(param.base, W, atol=0, rtol=0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    for _ in range(20):
        optimizer.zero_grad()
        (layer.weight - torch.eye(4, dtype=torch.float64)).pow(2).sum().backward()
        optimizer.step()
    before = layer.weight.detach().clone()
    assert float(layer.parametrizations.weight.original.detach().abs().max()) > 0
    assert geoparam.update_base(layer) == 1
    torch.testing.assert_close(layer.weight, before, atol=1e-12, rtol=1e-12)
    assert bool((layer.parametrizations.weight.original == 0).all())
    assert float(torch.linalg.det(layer.weight.detach())) > 0
    sample = param.sample(generator=torch.Generator().manual_seed(0))
    assert float(torch.linalg.det(sample)) > 0


def test_custom_group_without_predicate_keeps_the_coset():
    # det < 0 is accepted without a predicate, and training never changes the sign.
    W = -torch.eye(3, dtype=torch.float64)
    layer = geoparam.custom_constraint(Holder(W), "weight", cayley_of_skew, group=True)
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    assert float(torch.linalg.det(layer.weight.detach())) == pytest.approx(-1.0)


def test_custom_group_stacked_after_another_constraint_starts_at_identity_base():
    layer = geoparam.orthogonal(nn.Linear(3, 3))
    Q = layer.weight.detach().clone()
    geoparam.custom_constraint(layer, "weight", cayley_of_skew, group=True)
    torch.testing.assert_close(layer.parametrizations.weight[1].base, torch.eye(3))
    torch.testing.assert_close(layer.weight, cayley_of_skew(Q))


def test_custom_sample_repr_and_group_dtype_check():
    param = CustomConstraint(torch.Size([2, 3]), torch.nn.functional.softplus)
    assert param.sample().min() > 0
    assert repr(param) == "CustomConstraint(f=softplus, inverse=None, group=False)"
    group = CustomConstraint(torch.Size([3, 3]), torch.linalg.matrix_exp, group=True)
    sample = group.sample()  # before any assignment the base is I
    assert float(torch.linalg.det(sample)) > 0
    with pytest.raises(ValueError, match=r"expected dtype torch\.float32"):
        group.right_inverse(torch.eye(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="no base yet"):
        group(torch.zeros(3, 3))
    with pytest.raises(RuntimeError, match="no base to re-base"):
        param.rebase_(torch.zeros(2, 3))
