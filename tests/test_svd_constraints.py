"""The singular-value family beyond the catalogue's generic checks: determinants that hold by
construction, parity with geotorch, batches, re-basing, compilation, projections."""

from __future__ import annotations

import copy
import pickle

import geotorch
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import geoparam
from constraint_testing import Holder, singular_values
from geoparam.manifolds import (
    AlmostOrthogonal,
    FixedRank,
    Invertible,
    LowRank,
    SpecialLinear,
    SpectralBound,
)


def _train(module: nn.Module, steps: int = 100, lr: float = 1e-2, seed: int = 0) -> torch.Tensor:
    target = torch.randn(module.weight.shape, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        ((module.weight - 3 * target) ** 2).sum().backward()
        optimizer.step()
    return module.weight.detach()


def _rank_r(shape: tuple[int, ...], rank: int, dtype=torch.float64) -> torch.Tensor:
    A = torch.randn(*shape[:-1], rank, dtype=dtype)
    B = torch.randn(*shape[:-2], rank, shape[-1], dtype=dtype)
    return A @ B


def _frames(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    param = module.parametrizations.weight[0]
    U = param.factors[0](module.parametrizations.weight.original0)
    V = param.factors[2](module.parametrizations.weight.original2)
    return U.detach(), V.detach()


# ----------------------------------------------------------------------------- GL⁺ and SL


def test_invertible_determinant_is_positive_over_many_seeds():
    # geotorch 0.4's invertible, measured on 100 seeds of 6 x 6 layers: det < 0 in 49 after
    # registration and in the same 49 after 50 Adam steps (its frames are in O(n)).
    negative = 0
    for seed in range(25):
        torch.manual_seed(seed)
        module = geoparam.invertible(nn.Linear(6, 6, bias=False))
        negative += int(torch.linalg.det(module.weight.detach().double()) <= 0)
        negative += int(torch.linalg.det(_train(module, steps=20, seed=seed).double()) <= 0)
        U, V = _frames(module)
        torch.testing.assert_close(torch.linalg.det(U), torch.tensor(1.0), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.linalg.det(V), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert negative == 0


def test_invertible_projects_a_negative_determinant_by_flipping_the_smallest_direction():
    W = torch.diag(torch.tensor([3.0, 2.0, -0.5], dtype=torch.float64))
    module = geoparam.invertible(Holder(W))
    projected = module.weight.detach()
    assert torch.linalg.det(projected) > 0
    torch.testing.assert_close(projected, torch.diag(torch.tensor([3.0, 2.0, 0.5]).double()))


def test_invertible_projects_a_singular_matrix_just_inside():
    module = geoparam.invertible(Holder(torch.zeros(2, 4, 4)))
    W = module.weight.detach()
    assert (torch.linalg.det(W) > 0).all()
    assert module.parametrizations.weight[0].in_manifold(W)


def test_invertible_assignment_of_a_negative_determinant_is_refused():
    module = geoparam.invertible(Holder(torch.eye(3)))
    with pytest.raises(ValueError, match="its determinant is negative"):
        module.weight = torch.diag(torch.tensor([1.0, 1.0, -1.0]))


@pytest.mark.parametrize("f", ["softplus", "exp", (torch.exp, torch.log)])
def test_sln_determinant_is_one_after_training(f):
    torch.manual_seed(0)
    module = geoparam.sln(nn.Linear(8, 8, bias=False), f=f)
    W = _train(module, steps=150, lr=5e-2)
    det = torch.linalg.det(W.double())
    assert abs(float(det) - 1) < 1e-4
    assert module.parametrizations.weight[0].in_manifold(W)


def test_sln_projection_divides_by_the_determinant_root():
    W = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
    module = geoparam.sln(Holder(W))
    torch.testing.assert_close(module.weight.detach(), W / 2)


# ----------------------------------------------------------------------------- parity


def test_low_rank_singular_values_match_geotorch():
    torch.manual_seed(0)
    W = _rank_r((7, 5), 3, dtype=torch.float32)
    theirs = nn.Linear(5, 7)
    geotorch.low_rank(theirs, "weight", 3)
    theirs.weight = W  # geotorch resamples at registration: assign the weight afterwards
    ours = geoparam.low_rank(Holder(W), "weight", 3)
    torch.testing.assert_close(
        singular_values(ours.weight.detach()),
        singular_values(theirs.weight.detach()),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(ours.weight.detach(), W, atol=1e-5, rtol=1e-5)
    their_param = theirs.parametrizations.weight[0]
    our_param = ours.parametrizations.weight[0]
    for X in (W, _rank_r((7, 5), 2, torch.float32), torch.randn(7, 5)):
        assert our_param.in_manifold(X) == bool(their_param.in_manifold(X))


def test_almost_orthogonal_wide_weights_work():
    # geotorch 0.4 raises a RuntimeError here (its sample() has the transposed shape).
    module = geoparam.almost_orthogonal(nn.Linear(9, 3), lam=0.3)
    s = singular_values(_train(module, steps=50))
    assert s.shape == (3,) and float((s - 1).abs().max()) <= 0.3 + 1e-5


def test_almost_orthogonal_lam_zero_is_orthogonal():
    module = geoparam.almost_orthogonal(nn.Linear(4, 6), lam=0)
    W = _train(module, steps=20).double()
    torch.testing.assert_close(W.mT @ W, torch.eye(4).double(), atol=1e-5, rtol=0)


def test_spectral_bound_holds_exactly_under_a_loss_that_pushes_past_it():
    module = geoparam.spectral_bound(nn.Linear(5, 5), c=0.7)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        (-module.weight.pow(2).sum()).backward()
        optimizer.step()
        assert float(singular_values(module.weight.detach()).max()) <= 0.7 * (1 + 1e-6)


def test_spectral_bound_keeps_a_rank_deficient_weight_within_the_inset():
    W = _rank_r((4, 4), 2) * 0.1
    module = geoparam.spectral_bound(Holder(W), c=1.0)
    torch.testing.assert_close(module.weight.detach(), W, atol=1e-11, rtol=0)


# ----------------------------------------------------------------------------- structure


CONSTRUCTORS = {
    "low_rank": lambda m: geoparam.low_rank(m, "weight", 2),
    "fixed_rank": lambda m: geoparam.fixed_rank(m, "weight", 2),
    "almost_orthogonal": lambda m: geoparam.almost_orthogonal(m, lam=0.5),
    "spectral_bound": lambda m: geoparam.spectral_bound(m, c=2.0),
    "invertible": lambda m: geoparam.invertible(m),
    "sln": lambda m: geoparam.sln(m),
}


@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_batch_is_a_loop_over_matrices(name):
    shape = (2, 3, 4, 4)
    batched = CONSTRUCTORS[name](Holder(torch.randn(shape, dtype=torch.float64)))
    with torch.no_grad():
        for x in batched.parameters():
            x.add_(0.3 * torch.randn_like(x))
    state = batched.state_dict()
    for i in range(2):
        for j in range(3):
            single = CONSTRUCTORS[name](Holder(torch.randn(4, 4, dtype=torch.float64)))
            single.load_state_dict({k: v[i, j] for k, v in state.items()})
            torch.testing.assert_close(single.weight, batched.weight[i, j], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_update_base_keeps_the_weight_and_resets_the_inputs(name):
    module = CONSTRUCTORS[name](Holder(torch.randn(5, 5)))
    _train(module, steps=20)
    before = module.weight.detach().clone()
    assert geoparam.update_base(module) == 1
    torch.testing.assert_close(module.weight.detach(), before, atol=1e-5, rtol=1e-5)
    param = module.parametrizations.weight[0]
    assert param.in_manifold(module.weight.detach())
    if name in ("invertible", "sln"):
        U, V = _frames(module)
        assert float(torch.linalg.det(U)) > 0 and float(torch.linalg.det(V)) > 0


@pytest.mark.parametrize("name", ["almost_orthogonal", "sln", "spectral_bound"])
def test_modules_pickle_and_deepcopy(name):
    module = CONSTRUCTORS[name](Holder(torch.randn(4, 4)))
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        torch.testing.assert_close(clone.weight, module.weight)


def test_default_maps_are_the_fastest_per_frame():
    tall = LowRank(torch.Size([8, 8]), 3, label="W").factors
    assert [tall[0].orthogonal_map, tall[2].orthogonal_map] == ["householder", "householder"]
    rectangular = AlmostOrthogonal(torch.Size([8, 3]), 0.1, label="W").factors
    assert [rectangular[0].orthogonal_map, rectangular[2].orthogonal_map] == [
        "householder",
        "cayley",
    ]
    complex_ = FixedRank(torch.Size([8, 8]), 3, label="W", dtype=torch.complex64).factors
    assert complex_[0].orthogonal_map == "cayley"
    assert Invertible(torch.Size([4, 4]), label="W").factors[0].orthogonal_map == "cayley"
    chosen = SpectralBound(torch.Size([8, 3]), triv="matrix_exp", label="W").factors
    assert [chosen[0].orthogonal_map, chosen[2].orthogonal_map] == ["matrix_exp"] * 2


def test_frames_are_tall_and_small():
    param = LowRank(torch.Size([50, 40]), 4, label="W")
    module = Holder(_rank_r((50, 40), 4, torch.float32))
    geoparam.low_rank(module, "weight", 4)
    shapes = [tuple(x.shape) for x in module.parametrizations.weight.parameters()]
    assert shapes == [(50, 4), (4,), (40, 4)]
    assert param.factors[1].shape == (4,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights(dtype):
    for name in ("low_rank", "invertible", "sln"):
        module = CONSTRUCTORS[name](Holder(torch.randn(5, 5).to(dtype)))
        W = module.weight
        assert W.dtype == dtype
        W.float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in module.parameters())
        param = module.parametrizations.weight[0]
        assert param.in_manifold(W.detach())
        assert param.in_manifold(param.sample())


def test_messages_name_the_tensor_shape_and_value():
    with pytest.raises(ValueError, match=r"Linear\.weight of shape \(3, 5\): lam must be in"):
        geoparam.almost_orthogonal(nn.Linear(5, 3), lam=2)
    with pytest.raises(ValueError, match=r"c must be a finite number > 0, got inf"):
        geoparam.spectral_bound(nn.Linear(5, 3), c=float("inf"))
    with pytest.raises(ValueError, match=r"needs non-empty matrices"):
        geoparam.almost_orthogonal(Holder(torch.zeros(0, 5)))
    layer = geoparam.low_rank(nn.Linear(5, 3), "weight", 1)
    with pytest.raises(ValueError, match=r"its rank exceeds 1"):
        layer.weight = torch.randn(3, 5)


# ----------------------------------------------------------------------------- projections


_MATRICES = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None)
@given(_MATRICES, st.data())
def test_projections_land_on_the_set(dims, data):
    n, k, seed = dims
    W = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rank = data.draw(st.integers(1, min(n, k)))
    params = [
        LowRank(W.shape, rank, label="W", dtype=W.dtype),
        FixedRank(W.shape, rank, label="W", dtype=W.dtype),
        AlmostOrthogonal(W.shape, data.draw(st.floats(0, 1)), label="W", dtype=W.dtype),
        SpectralBound(W.shape, data.draw(st.floats(0.01, 10)), label="W", dtype=W.dtype),
    ]
    if n == k:
        params += [Invertible(W.shape, label="W", dtype=W.dtype)]
        params += [SpecialLinear(W.shape, label="W", dtype=W.dtype)]
    for param in params:
        projected = param.project(W)
        assert param.in_manifold(projected), type(param).__name__
        stored = param.right_inverse(projected)
        torch.testing.assert_close(param(*stored), projected, atol=1e-9, rtol=1e-9)


def test_low_rank_projection_is_the_truncated_svd():
    W = torch.randn(6, 5, dtype=torch.float64)
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    expected = U[:, :2] @ torch.diag(s[:2]) @ Vh[:2]
    torch.testing.assert_close(LowRank(W.shape, 2, label="W").project(W), expected)


# ----------------------------------------------------------------------------- compile


def test_compiled_forward_and_backward_match_eager():
    # One compile for both kinds of frame: a 7 x 6 weight has a tall Householder U and a square
    # Cayley V by default.
    torch.manual_seed(0)
    module = geoparam.almost_orthogonal(nn.Linear(6, 7), lam=0.5)
    inputs = list(module.parametrizations.weight.parameters())
    with torch.no_grad():
        for x in inputs:
            x.add_(0.2 * torch.randn_like(x))

    def loss(module: nn.Module) -> torch.Tensor:
        W = module.weight
        return (W * torch.arange(W.numel()).view_as(W)).sum()

    eager = loss(module)
    eager_grads = torch.autograd.grad(eager, inputs)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)(module)
    compiled_grads = torch.autograd.grad(compiled, inputs)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-5)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
