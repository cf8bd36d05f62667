"""The positive (semi)definite family and alpha_stable: what the catalogue's generic checks miss.

Parity with geotorch (the same map from the same inputs, the same verdicts), defaults and
messages, projection details, the Lyapunov right inverse of ``alpha_stable`` (accuracy, size,
marginal matrices), batches, complex weights and one compiled graph.
"""

from __future__ import annotations

import copy

import geotorch
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import geoparam
from constraint_testing import Holder
from geoparam.manifolds import (
    AlphaStable,
    PositiveDefinite,
    PositiveSemidefinite,
    PSDFixedRank,
    PSDLowRank,
)

F64 = torch.float64


def _gram(n: int, k: int, shift: float = 0.0, seed: int = 0, dtype=F64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    F = torch.randn(n, k, generator=generator, dtype=dtype)
    return F @ F.mH / n + shift * torch.eye(n, dtype=dtype)


def _stable(n: int, margin: float, seed: int = 0, dtype=F64) -> torch.Tensor:
    """A non-normal matrix whose eigenvalues have real part <= -margin."""
    generator = torch.Generator().manual_seed(seed)
    G = torch.randn(n, n, generator=generator, dtype=dtype) / n**0.5
    G = G + 3 * G.triu(1)  # more non-normal
    norm = torch.linalg.matrix_norm(G, ord=2)
    return G - (norm + margin) * torch.eye(n, dtype=dtype)


def _rightmost(W: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(W.detach().to(torch.complex128)).real.max())


# ------------------------------------------------------------------------- parity with geotorch

FAMILY = [
    ("positive_definite", None),
    ("positive_semidefinite", None),
    ("positive_semidefinite_low_rank", 2),
    ("positive_semidefinite_fixed_rank", 2),
]


def _register(library, front: str, rank: int | None, module: nn.Module, **kwargs) -> nn.Module:
    args = () if rank is None else (rank,)
    return getattr(library, front)(module, "weight", *args, **kwargs)


@pytest.mark.parametrize("front, rank", FAMILY)
def test_same_map_as_geotorch_from_the_same_inputs(front, rank):
    # geotorch stores X (n x n): the eigenvector parameter in its first r columns, the eigenvalue
    # parameter on the diagonal, and an n x n base. With triv="matrix_exp" geoparam's factors
    # read the same numbers: original0 = X[:, :r], original1 = diag(X)[:r], the same base.
    n = 5
    r = n if rank is None else rank
    torch.manual_seed(1)
    theirs = _register(geotorch, front, rank, nn.Linear(n, n).double())
    ours = _register(geoparam, front, rank, nn.Linear(n, n).double(), triv="matrix_exp")
    X = theirs.parametrizations.weight.original
    with torch.no_grad():
        X.add_(0.3 * torch.randn_like(X))
        ours.parametrizations.weight[0].factors[0].base.copy_(
            theirs.parametrizations.weight[0][0].base
        )
        ours.parametrizations.weight.original0.copy_(X[:, :r])
        ours.parametrizations.weight.original1.copy_(X.diagonal()[:r])
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("front, rank", FAMILY)
def test_assigning_the_same_matrix_gives_the_same_weight_as_geotorch(front, rank):
    n = 5
    value = _gram(n, n if rank is None else rank, 0.1 if front == "positive_definite" else 0.0)
    theirs = _register(geotorch, front, rank, nn.Linear(n, n).double())
    ours = _register(geoparam, front, rank, nn.Linear(n, n).double())
    theirs.weight = value
    ours.weight = value
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours.weight, value, atol=1e-10, rtol=1e-10)


def _points(n: int) -> dict[str, torch.Tensor]:
    G = torch.randn(n, n, generator=torch.Generator().manual_seed(3), dtype=F64)
    return {
        "definite": _gram(n, n, 0.2),
        "rank 2": _gram(n, 2),
        "rank 1": _gram(n, 1),
        "indefinite": G + G.T,
        "not symmetric": _gram(n, n, 0.2) + 0.1 * G,
        "negative definite": -torch.eye(n, dtype=F64),
        "zero": torch.zeros(n, n, dtype=F64),
    }


@pytest.mark.parametrize("front, rank", FAMILY)
def test_in_manifold_verdicts_agree_with_geotorch(front, rank):
    n = 5
    theirs = _register(geotorch, front, rank, nn.Linear(n, n).double()).parametrizations.weight[0]
    ours = _register(geoparam, front, rank, nn.Linear(n, n).double()).parametrizations.weight[0]
    for name, point in _points(n).items():
        assert ours.in_manifold(point) == theirs.in_manifold(point), name


def test_alpha_stable_verdicts_agree_with_geotorch():
    n, alpha = 5, 0.3
    theirs = geotorch.alpha_stable(nn.Linear(n, n).double(), "weight", alpha=alpha)
    ours = geoparam.alpha_stable(nn.Linear(n, n).double(), alpha=alpha)
    check = theirs.parametrizations.weight[0].in_manifold_eigen
    eye = torch.eye(n, dtype=F64)
    for point in [_stable(n, alpha + 0.1), _stable(n, alpha - 0.1), -eye, -0.2 * eye, eye]:
        assert ours.parametrizations.weight[0].in_manifold(point) == check(point)


def test_alpha_stable_assignment_gives_the_same_weight_as_geotorch():
    n = 6
    value = _stable(n, 0.5)
    theirs = geotorch.alpha_stable(nn.Linear(n, n).double(), "weight", alpha=0.2)
    ours = geoparam.alpha_stable(nn.Linear(n, n).double(), alpha=0.2)
    theirs.weight = value
    ours.weight = value
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-5, rtol=1e-5)  # geotorch's
    torch.testing.assert_close(ours.weight, value, atol=1e-12, rtol=1e-12)


# ------------------------------------------------------------------------ defaults and messages


def test_default_maps_are_the_fastest_measured():
    def triv(module):
        return module.parametrizations.weight[0].factors[0].orthogonal_map

    assert triv(geoparam.positive_definite(nn.Linear(4, 4))) == "cayley"
    assert triv(geoparam.positive_semidefinite_low_rank(nn.Linear(4, 4), "weight", 2)) == (
        "householder"
    )
    assert triv(geoparam.positive_semidefinite_low_rank(nn.Linear(4, 4), "weight", 4)) == "cayley"
    complex_weight = Holder(torch.randn(4, 4, dtype=torch.complex64))
    assert triv(geoparam.positive_semidefinite_fixed_rank(complex_weight, "weight", 2)) == "cayley"


def test_reprs_and_stored_tensors():
    layer = geoparam.positive_semidefinite_low_rank(nn.Linear(6, 6), "weight", 2)
    param = layer.parametrizations.weight[0]
    assert repr(param).startswith("PSDLowRank(\n  n=6, rank=2, triv='householder'")
    assert layer.parametrizations.weight.original0.shape == (6, 2)
    assert layer.parametrizations.weight.original1.shape == (2,)
    assert set(layer.state_dict()) == {
        "bias",
        "parametrizations.weight.original0",
        "parametrizations.weight.original1",
        "parametrizations.weight.0.factors.0.base",
    }
    stable = geoparam.alpha_stable(nn.Linear(3, 3), alpha=0.25)
    assert repr(stable.parametrizations.weight[0]) == "AlphaStable(n=3, alpha=0.25)"


@pytest.mark.parametrize(
    "value, message",
    [
        (torch.tensor([[1.0, 0.5], [0.0, 1.0]]), r"it is not symmetric: max \|W - Wᵀ\| is 0\.5"),
        (torch.diag(torch.tensor([1.0, -0.25])), r"its smallest eigenvalue is -0\.25, below 0"),
    ],
)
def test_assignment_messages(value, message):
    layer = geoparam.positive_semidefinite(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"Linear\.weight: cannot assign .*: " + message):
        layer.weight = value


def test_rank_and_floor_messages():
    low = PSDLowRank(torch.Size([3, 3]), 1, dtype=F64)
    assert low._violation(torch.diag(torch.tensor([1.0, 0.5, 0.0], dtype=F64)), None) == (
        "its rank is above 1: its 2nd largest eigenvalue is 0.5, not 0"
    )
    fixed = PSDFixedRank(torch.Size([3, 3]), 2, dtype=F64)
    assert fixed._violation(torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=F64)), None) == (
        "its 2nd largest eigenvalue is 0, below the floor 1e-06 of f"
    )
    stable = AlphaStable(torch.Size([2, 2]), 0.5)
    assert stable._violation(-0.25 * torch.eye(2), None) == (
        "its rightmost eigenvalue has real part -0.25, above -alpha = -0.5"
    )


def test_complex_weight_message_says_hermitian():
    layer = geoparam.positive_definite(Holder(torch.eye(2, dtype=torch.complex128)))
    with pytest.raises(ValueError, match=r"it is not Hermitian: max \|W - Wᴴ\| is 2"):
        layer.weight = torch.tensor([[1, 1j], [1j, 1]], dtype=torch.complex128)


def test_a_pair_f_is_used():
    layer = geoparam.positive_definite(
        nn.Linear(3, 3).double(), f=(torch.square, torch.sqrt), triv="matrix_exp"
    )
    layer.weight = _gram(3, 3, 0.5)
    torch.testing.assert_close(layer.weight, _gram(3, 3, 0.5))
    x = layer.parametrizations.weight.original1
    torch.testing.assert_close(x.square(), torch.linalg.eigvalsh(_gram(3, 3, 0.5)))


# ------------------------------------------------------------------- projections and precision


def test_singular_weights_are_kept():
    value = _gram(6, 3)
    layer = geoparam.positive_semidefinite(Holder(value))
    torch.testing.assert_close(layer.weight, value, atol=1e-12, rtol=0)
    assert float(torch.linalg.eigvalsh(layer.weight.detach())[:3].abs().max()) < 1e-12


def test_positive_definite_projection_clamps_to_the_floor():
    value = torch.diag(torch.tensor([2.0, -1.0, 0.5], dtype=F64))
    layer = geoparam.positive_definite(Holder(value))
    eigenvalues = torch.linalg.eigvalsh(layer.weight)
    torch.testing.assert_close(eigenvalues, torch.tensor([1e-6, 0.5, 2.0], dtype=F64))


def test_low_rank_projection_is_the_best_approximation():
    value = torch.diag(torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=F64))
    layer = geoparam.positive_semidefinite_low_rank(Holder(value), "weight", 2)
    expected = torch.diag(torch.tensor([3.0, 0.0, 1.0, 0.0], dtype=F64))
    torch.testing.assert_close(layer.weight, expected, atol=1e-12, rtol=0)


def test_single_precision_floor_is_within_the_tolerance():
    singular = torch.diag(torch.tensor([1.0, 0.0, 3.0], dtype=F64))
    param = PositiveDefinite(torch.Size([3, 3]))
    assert not param.in_manifold(singular)
    assert param.in_manifold(singular.float())


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.booleans())
def test_round_trip_keeps_any_point(n, seed, complex_):
    dtype = torch.complex128 if complex_ else F64
    rank = 1 + seed % n
    value = _gram(n, rank, seed=seed, dtype=dtype)
    for param in (
        PSDLowRank(torch.Size([n, n]), rank, dtype=dtype),
        PositiveSemidefinite(torch.Size([n, n]), dtype=dtype),
    ):
        torch.testing.assert_close(param(*param.right_inverse(value)), value, atol=1e-11, rtol=0)


def test_batch_is_a_loop():
    values = torch.stack([_gram(4, 4, 0.1, seed=s) for s in range(3)])
    batched = PositiveDefinite(torch.Size([3, 4, 4]), dtype=F64)
    X = batched.right_inverse(values)
    with torch.no_grad():
        X = tuple(x + 0.1 * torch.randn_like(x) for x in X)
    W = batched(*X)
    for i in range(3):
        single = PositiveDefinite(torch.Size([4, 4]), dtype=F64)
        single.factors[0].base = batched.factors[0].base[i].clone()
        torch.testing.assert_close(single(X[0][i], X[1][i]), W[i], atol=1e-13, rtol=0)


def test_complex_weights_are_hermitian_with_positive_eigenvalues():
    layer = geoparam.positive_definite(Holder(torch.randn(2, 4, 4, dtype=torch.complex64)))
    with torch.no_grad():
        for x in (layer.parametrizations.weight.original0, layer.parametrizations.weight.original1):
            x.add_(0.3 * torch.randn_like(x))
    W = layer.weight.detach()
    assert W.dtype == torch.complex64
    torch.testing.assert_close(W, W.mH, atol=1e-6, rtol=0)
    assert float(torch.linalg.eigvalsh(W).min()) > 0


def test_update_base_keeps_the_weight():
    layer = geoparam.positive_semidefinite_fixed_rank(nn.Linear(5, 5).double(), "weight", 3)
    with torch.no_grad():
        layer.parametrizations.weight.original0.add_(0.2)
    before = layer.weight.detach().clone()
    assert geoparam.update_base(layer) == 1
    torch.testing.assert_close(layer.weight, before, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------- alpha_stable


def test_alpha_stable_right_inverse_keeps_a_stable_matrix():
    value = _stable(64, 0.05)
    param = AlphaStable(torch.Size([64, 64]), 0.01, dtype=F64)
    W = param(*param.right_inverse(value))
    assert float((W - value).abs().max()) < 1e-8


def test_alpha_stable_registers_at_256():
    # The Lyapunov solve of the right inverse is O(n³); geotorch's n² x n² system cannot do this.
    layer = geoparam.alpha_stable(nn.Linear(256, 256), alpha=0.1)
    assert _rightmost(layer.weight) <= -0.1 + 1e-4


def test_alpha_stable_marginal_matrix_is_shifted_slightly():
    # A skew matrix has every eigenvalue on the imaginary axis: its Lyapunov equation with
    # alpha = 0 is singular, so it is shifted left by about sqrt(eps) times its scale.
    G = torch.randn(5, 5, dtype=F64)
    skew = G - G.T
    layer = geoparam.alpha_stable(nn.Linear(5, 5).double(), alpha=0.0)
    layer.weight = skew
    shift = (skew - layer.weight).diagonal()
    scale = float(torch.linalg.matrix_norm(skew)) / 5**0.5
    torch.testing.assert_close(layer.weight - skew, -shift.mean() * torch.eye(5, dtype=F64))
    assert 0 < float(shift.mean().detach()) < 3e-8 * scale
    assert _rightmost(layer.weight) <= 0


def test_alpha_stable_projection_shifts_the_spectrum():
    value = torch.randn(6, 6, dtype=F64) + 2 * torch.eye(6, dtype=F64)
    layer = geoparam.alpha_stable(Holder(value), alpha=0.5)
    difference = layer.weight.detach() - value
    shift = difference[0, 0]
    torch.testing.assert_close(difference, shift * torch.eye(6, dtype=F64))
    assert -0.5 - 0.01 < _rightmost(layer.weight) <= -0.5


def test_alpha_stable_training_keeps_the_decay_rate():
    # The loss pulls every eigenvalue towards +2: the weight ends on the boundary Re λ = -alpha.
    alpha = 2.0
    layer = geoparam.alpha_stable(nn.Linear(6, 6), alpha=alpha)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        (layer.weight - 2 * torch.eye(6)).pow(2).sum().backward()
        optimizer.step()
    W = layer.weight.detach()
    # float32 rounding moves eigenvalues that meet on the boundary by about sqrt(eps) · ‖W‖
    tolerance = torch.finfo(W.dtype).eps ** 0.5 * float(torch.linalg.matrix_norm(W))
    assert -alpha - 0.2 < _rightmost(W) <= -alpha + tolerance
    assert layer.parametrizations.weight[0].in_manifold(layer.weight.detach())


def test_alpha_stable_batch_is_a_loop():
    values = torch.stack([_stable(4, 0.3, seed=s) for s in range(3)])
    batched = AlphaStable(torch.Size([3, 4, 4]), 0.1, dtype=F64)
    X = batched.right_inverse(values)
    torch.testing.assert_close(batched(*X), values, atol=1e-12, rtol=0)
    single = AlphaStable(torch.Size([4, 4]), 0.1, dtype=F64)
    for i in range(3):
        torch.testing.assert_close(single(*(x[i] for x in X)), values[i], atol=1e-12, rtol=0)


def test_alpha_stable_sample_is_well_inside():
    param = AlphaStable(torch.Size([2, 8, 8]), 0.3, dtype=torch.complex128)
    assert _rightmost(param.sample()) <= -1.3 + 1e-12


# --------------------------------------------------------------------------------- torch.compile


class _Quadratic(nn.Module):
    """``x ↦ x W xᵀ`` per row: a module of its own class (a ``Linear`` would share geoparam's
    parametrized class with every constrained ``Linear`` of the session)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.weight) * x).sum(-1)


def test_positive_definite_compiles_fullgraph():
    torch._dynamo.reset()
    layer = geoparam.positive_definite(_Quadratic(5))
    with torch.no_grad():
        for x in (layer.parametrizations.weight.original0, layer.parametrizations.weight.original1):
            x.add_(0.3 * torch.randn_like(x))
    eager = copy.deepcopy(layer)
    x = torch.randn(3, 5)

    def loss(module):
        return module(x).pow(2).sum()

    compiled = torch.compile(lambda: loss(layer), backend="aot_eager", fullgraph=True)
    value, expected = compiled(), loss(eager)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    value.backward()
    expected.backward()
    for ours, reference in zip(layer.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def _linear(weight: torch.Tensor) -> nn.Module:
    layer = nn.Linear(weight.size(1), weight.size(0), bias=False, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_singular_weights_are_stored_finite_and_still_train():
    # exp never reaches 0 (log 0 = -inf) and |x| has no gradient at x = 0: a zero eigenvalue
    # must be stored where the map is finite and differentiable.
    weight = torch.diag(torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64))
    definite = geoparam.positive_definite(_linear(weight), f="exp")
    assert torch.isfinite(definite.parametrizations.weight.original1).all()
    assert torch.linalg.eigvalsh(definite.weight.detach()).min() > 0
    semidefinite = geoparam.positive_semidefinite(_linear(torch.zeros(4, 4)))
    optimizer = torch.optim.SGD(semidefinite.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        (semidefinite.weight - 0.5 * torch.eye(4)).square().sum().backward()
        optimizer.step()
    torch.testing.assert_close(
        torch.linalg.eigvalsh(semidefinite.weight.detach()), torch.full((4,), 0.5)
    )
