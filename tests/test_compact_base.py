"""The compact base of tall and wide orthogonal weights: ``O(nk)`` state, torch's weights.

The oracle is torch's own ``orthogonal`` with its ``n x n`` base ``B``: a compact parametrization
holding ``Y = B[:, :k]`` and ``X = B X_torch`` must give torch's weight, and the gradient on its
``X`` must be ``B`` times torch's gradient on ``X_torch`` (the chain rule of ``X = B X_torch``).
The states are moved from torch's module to geoparam's by ``load_state_dict``, so every parity
check also checks the conversion of a checkpoint.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from geoparam.manifolds import FULL_BASE_LIMIT, Grassmannian, Orthogonal
from geoparam.manifolds import orthogonal as orthogonal_module
from parametrization_testing import (
    PROPERTY_SETTINGS,
    RTOL,
    Holder,
    assert_close_relative,
    linear_loss,
    move_original,
    orthogonality_bound,
    orthogonality_error,
)

F64 = torch.float64
NOT_SQUARE = {"tall": (9, 4), "wide": (4, 9), "batched_tall": (2, 7, 3), "batched_wide": (2, 3, 7)}
CONVERTED = ".*converted the checkpoint's base"


def _map_dtypes() -> list[tuple[str, torch.dtype]]:
    cases = [(m, dtype) for m in ("matrix_exp", "cayley", "householder") for dtype in (F64,)]
    cases += [(m, torch.complex128) for m in ("matrix_exp", "cayley")]
    cases += [("householder", torch.float32), ("cayley", torch.complex64)]
    return cases


def _tall(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    return tensor.mT if shape[-2] < shape[-1] else tensor


def _torch_module(shape, orthogonal_map, dtype) -> nn.Module:
    """torch's parametrization, moved off its starting point (column signs kept at ±1)."""
    module = torch_parametrizations.orthogonal(Holder(shape, dtype), "weight", orthogonal_map)
    move_original([module], scale=0.4, keep_diagonal=True)
    return module


def _load_quietly(module: nn.Module, state: dict) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", CONVERTED)
        module.load_state_dict(state)


def _compact(shape, orthogonal_map, dtype, **kwargs) -> nn.Module:
    return geoparam.orthogonal(
        Holder(shape, dtype), orthogonal_map=orthogonal_map, compact_base=True, **kwargs
    )


@pytest.mark.parametrize(("orthogonal_map", "dtype"), _map_dtypes())
@pytest.mark.parametrize("shape_id", NOT_SQUARE)
def test_compact_gives_torchs_weight_and_gradient(orthogonal_map, dtype, shape_id):
    shape = NOT_SQUARE[shape_id]
    reference = _torch_module(shape, orthogonal_map, dtype)
    ours = _compact(shape, orthogonal_map, dtype)
    with pytest.warns(UserWarning, match=f"{CONVERTED}.*to the compact layout"):
        ours.load_state_dict(reference.state_dict())
    assert ours.parametrizations.weight[0].base.shape == torch.Size(shape)

    direction = torch.randn(shape, dtype=dtype)
    linear_loss(reference.weight, direction).backward()
    linear_loss(ours.weight, direction).backward()
    rtol = RTOL[dtype] * 100
    assert_close_relative(ours.weight, reference.weight, rtol)
    # X = B X_torch in tall orientation, so dL/dX = B dL/dX_torch.
    B = reference.parametrizations.weight[0].base
    expected = B @ _tall(reference.parametrizations.weight.original.grad, shape)
    assert_close_relative(ours.parametrizations.weight.original.grad, _tall(expected, shape), rtol)


@pytest.mark.parametrize(("orthogonal_map", "dtype"), _map_dtypes())
@pytest.mark.parametrize("shape_id", ["tall", "batched_wide"])
def test_compact_checkpoint_reaches_torch_through_the_full_layout(orthogonal_map, dtype, shape_id):
    # Trained in the compact layout, converted to torch's by loading it into geoparam's full
    # layout, then loaded by torch itself: the weight is the same all along.
    shape = NOT_SQUARE[shape_id]
    compact = _compact(shape, orthogonal_map, dtype)
    optimizer = torch.optim.SGD(compact.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        linear_loss(compact.weight, torch.randn(shape, dtype=dtype)).backward()
        optimizer.step()
    full = geoparam.orthogonal(
        Holder(shape, dtype), orthogonal_map=orthogonal_map, compact_base=False
    )
    with pytest.warns(UserWarning, match=f"{CONVERTED}.*to the full layout"):
        full.load_state_dict(compact.state_dict())
    reference = torch_parametrizations.orthogonal(Holder(shape, dtype), "weight", orthogonal_map)
    reference.load_state_dict(full.state_dict())
    rtol = RTOL[dtype] * 100
    with torch.no_grad():
        assert_close_relative(full.weight, compact.weight, rtol)
        if orthogonal_map != "householder":  # torch truncates the column signs (see above)
            assert_close_relative(reference.weight, compact.weight, rtol)
        B = full.parametrizations.weight[0].base
        assert orthogonality_error(B) <= orthogonality_bound(B)


@given(
    n=st.integers(2, 12),
    k=st.integers(1, 11),
    batch=st.sampled_from([(), (2,)]),
    orthogonal_map=st.sampled_from(["matrix_exp", "cayley", "householder"]),
    wide=st.booleans(),
    seed=st.integers(0, 2**16),
)
@PROPERTY_SETTINGS
def test_layouts_agree_through_a_round_trip(n, k, batch, orthogonal_map, wide, seed):
    # full -> compact -> full: the weight stays, at every size (k = n is the one-layout case).
    k = min(k, n)
    shape = (*batch, k, n) if wide else (*batch, n, k)
    torch.manual_seed(seed)
    full = geoparam.orthogonal(Holder(shape), orthogonal_map=orthogonal_map, compact_base=False)
    move_original([full], scale=0.3, keep_diagonal=True)
    compact = geoparam.orthogonal(Holder(shape), orthogonal_map=orthogonal_map, compact_base=True)
    again = geoparam.orthogonal(Holder(shape), orthogonal_map=orthogonal_map, compact_base=False)
    _load_quietly(compact, full.state_dict())
    _load_quietly(again, compact.state_dict())
    with torch.no_grad():
        assert_close_relative(compact.weight, full.weight, 1e-10)
        assert_close_relative(again.weight, full.weight, 1e-10)
    assert compact.parametrizations.weight[0].compact_base == (k < n)


@pytest.mark.parametrize(
    ("orthogonal_map", "dtype"), [c for c in _map_dtypes() if c[1] in (F64, torch.complex128)]
)
@pytest.mark.parametrize("shape", [(5, 2), (2, 5), (2, 4, 3)])
def test_gradcheck(orthogonal_map, dtype, shape):
    param = Orthogonal(torch.Size(shape), orthogonal_map, compact_base=True, dtype=dtype)
    X = param.right_inverse(torch.randn(shape, dtype=dtype))
    X = (X + 0.3 * torch.randn_like(X)).requires_grad_()
    assert torch.autograd.gradcheck(param, (X,))


def test_default_layout_is_chosen_by_the_size_of_the_full_base(monkeypatch):
    # The full base (n x n for the whole batch) above FULL_BASE_LIMIT entries: compact.
    monkeypatch.setattr(orthogonal_module, "FULL_BASE_LIMIT", 81)
    cases = {(9, 4): False, (10, 4): True, (4, 10): True, (2, 7, 3): True, (20, 20): False}
    for shape, compact in cases.items():
        module = geoparam.orthogonal(Holder(shape))
        base = module.parametrizations.weight[0].base
        n = max(shape[-2:])
        assert base.shape == (shape if compact else (*shape[:-2], n, n)), shape
    # use_trivialization=False has no base at all, whatever the size.
    module = geoparam.orthogonal(Holder((10, 4)), use_trivialization=False)
    assert not hasattr(module.parametrizations.weight[0], "base")


def test_large_tall_weight_is_compact_by_default():
    assert FULL_BASE_LIMIT == 2**22
    layer = geoparam.orthogonal(nn.Linear(64, 8192))
    assert layer.parametrizations.weight[0].base.shape == (8192, 64)
    # At the limit (a 2048 x 2048 base holds exactly 2²² entries), torch's layout.
    param = Orthogonal(torch.Size([2048, 64]), "householder")
    assert not param.compact_base


def test_full_base_above_the_limit_warns_with_its_cost(monkeypatch):
    monkeypatch.setattr(orthogonal_module, "FULL_BASE_LIMIT", 50)
    with pytest.warns(UserWarning, match=r"Holder\.weight of shape \(9, 4\): the full base is "):
        geoparam.orthogonal(Holder((9, 4), torch.float32), compact_base=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        geoparam.orthogonal(Holder((9, 4)))  # compact by default: nothing to say
        geoparam.orthogonal(Holder((7, 7)), compact_base=False)  # square: one layout
    monkeypatch.setattr(orthogonal_module, "FULL_BASE_LIMIT", 2**22)
    # 3000 x 3000 float32 entries: 34 MiB.
    with pytest.warns(UserWarning, match=r"3000 x 3000 \(34 MiB"):
        Orthogonal(torch.Size([3000, 10]), "cayley", compact_base=False, label="L.weight")


def test_bad_compact_base_arguments():
    with pytest.raises(ValueError, match=r"Holder\.weight: compact_base=True needs a base"):
        geoparam.orthogonal(Holder((9, 4)), use_trivialization=False, compact_base=True)
    with pytest.raises(TypeError, match=r"Holder\.weight: compact_base must be True, False"):
        geoparam.orthogonal(Holder((9, 4)), compact_base="yes")


def test_square_weight_has_one_layout():
    module = geoparam.orthogonal(Holder((5, 5)), compact_base=True)
    param = module.parametrizations.weight[0]
    assert not param.compact_base
    reference = torch_parametrizations.orthogonal(Holder((5, 5)), "weight")
    reference.load_state_dict(module.state_dict())  # torch's layout, loads as it is
    with torch.no_grad():
        assert_close_relative(reference.weight, module.weight, 1e-10)


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (2, 7, 3)])
def test_update_base_keeps_the_weight_and_the_compact_layout(orthogonal_map, shape):
    module = _compact(shape, orthogonal_map, F64)
    move_original([module], scale=0.5, keep_diagonal=orthogonal_map == "householder")
    before = module.weight.detach().clone()
    geoparam.update_base(module)
    param = module.parametrizations.weight[0]
    assert param.base.shape == torch.Size(shape)
    assert orthogonality_error(param.base) <= orthogonality_bound(param.base)
    torch.testing.assert_close(module.parametrizations.weight.original, -param.base)
    torch.testing.assert_close(module.weight, before, rtol=0, atol=1e-12)


def test_repeated_rebasing_in_float32_stays_orthogonal():
    module = _compact((40, 6), "cayley", torch.float32)
    original = module.parametrizations.weight.original
    for _ in range(300):
        with torch.no_grad():
            original.add_(0.05 * torch.randn_like(original))
        geoparam.update_base(module)
    base = module.parametrizations.weight[0].base
    assert orthogonality_error(base) <= orthogonality_bound(base)
    assert orthogonality_error(module.weight) <= orthogonality_bound(base)


@pytest.mark.parametrize("triv", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("shape", [(9, 4), (4, 9)])
def test_grassmannian_layouts_agree(triv, shape):
    full = Grassmannian(torch.Size(shape), triv, compact_base=False, dtype=F64)
    compact = Grassmannian(torch.Size(shape), triv, compact_base=True, dtype=F64)
    Q = full.sample()
    X_full = full.right_inverse(Q) + torch.randn(shape, dtype=F64)
    state = {"p.0.base": full.base.clone(), "p.original": X_full.clone()}
    with pytest.warns(UserWarning, match=CONVERTED):
        compact.adapt_checkpoint_(state, "p.0.", ["p.original"])
    compact.base = state["p.0.base"]
    X_compact = state["p.original"]
    assert_close_relative(compact(X_compact), full(X_full), 1e-10)
    # Re-basing moves the span and returns X = 0, which maps to the current weight.
    before = compact(X_compact)
    X_new = compact.rebase_(X_compact)
    assert not X_new.any()
    assert_close_relative(compact(X_new), before, 1e-10)


def test_product_factors_take_the_compact_base_and_convert_checkpoints(monkeypatch):
    # low_rank's frames U (12 x 2) and V (5 x 2): with a limit of 30 entries U's 12 x 12 base
    # is compact, V's 5 x 5 one is not; a checkpoint of the all-full layout converts.
    module = geoparam.low_rank(Holder((12, 5)), "weight", rank=2)
    with torch.no_grad():
        for original in module.parametrizations.weight.parameters():
            original.add_(0.3 * torch.randn_like(original))
    monkeypatch.setattr(orthogonal_module, "FULL_BASE_LIMIT", 30)
    compact = geoparam.low_rank(Holder((12, 5)), "weight", rank=2)
    factors = compact.parametrizations.weight[0].factors
    assert factors[0].base.shape == (12, 2) and factors[2].base.shape == (5, 5)
    with pytest.warns(UserWarning, match=CONVERTED):
        compact.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert_close_relative(compact.weight, module.weight, 1e-10)
        assert int(torch.linalg.matrix_rank(compact.weight)) == 2


def test_stacked_compact_map_starts_from_the_identity_and_refuses_unconvertible_checkpoints():
    inner = _compact((9, 4), "cayley", F64)
    module = geoparam.orthogonal(inner, orthogonal_map="cayley", compact_base=True)
    outer = module.parametrizations.weight[1]
    torch.testing.assert_close(outer.base, torch.eye(9, 4, dtype=F64))
    # At the base I[:, :k], the compact map is the map without a base (B = I, X_torch = X).
    first = module.parametrizations.weight[0]
    plain = Orthogonal(torch.Size([9, 4]), "cayley", use_trivialization=False)
    with torch.no_grad():
        inner_weight = first(module.parametrizations.weight.original)
        assert_close_relative(module.weight, plain(inner_weight), 1e-12)
    # A stacked map's input is not in the checkpoint, so its base cannot be converted.
    state = module.state_dict()
    state["parametrizations.weight.1.base"] = torch.eye(9, dtype=F64)
    with pytest.raises(ValueError, match="holds no unconstrained tensor to convert"):
        module.load_state_dict(state)


def test_meta_device_then_initialisation():
    with torch.device("meta"):
        layer = geoparam.orthogonal(nn.Linear(16, 5000))
    assert layer.parametrizations.weight[0].base.shape == (5000, 16)
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    assert orthogonality_error(layer.weight) <= orthogonality_bound(layer.weight)


def test_save_and_load_whole_model_and_state():
    layer = geoparam.orthogonal(nn.Linear(16, 5000))
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded.weight, layer.weight)
    fresh = geoparam.orthogonal(nn.Linear(16, 5000))
    fresh.load_state_dict(layer.state_dict())  # same layout: no conversion
    with torch.no_grad():
        torch.testing.assert_close(fresh.weight, layer.weight)


def test_compiled_compact_map_matches_eager():
    torch._dynamo.reset()
    layer = geoparam.orthogonal(nn.Linear(4, 10), orthogonal_map="cayley", compact_base=True)
    move_original([layer], scale=0.3)
    x = torch.randn(3, 4)

    def loss(inputs: Tensor) -> Tensor:
        return layer(inputs).square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    with geoparam.caching(False):
        expected = loss(x)
        expected.backward()
        grad = layer.parametrizations.weight.original.grad.clone()
        layer.zero_grad()
        actual = compiled(x)
        actual.backward()
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(layer.parametrizations.weight.original.grad, grad)
    torch._dynamo.reset()


def test_tall_embedding_at_scale_trains_with_nk_state():
    # A scaled-down Embedding(10⁶, 64): the default layout is compact, no buffer or parameter
    # has more than n·k entries, and Adam keeps the rows orthonormal to 1e-4 in float32.
    n, k = 100_000, 64
    embedding = geoparam.orthogonal(nn.Embedding(n, k))
    assert all(t.numel() <= n * k for t in [*embedding.parameters(), *embedding.buffers()])
    optimizer = torch.optim.Adam(embedding.parameters(), lr=1e-3)
    tokens = torch.randint(0, n, (32, 16))
    for _ in range(3):
        optimizer.zero_grad()
        embedding(tokens).sum().backward()
        optimizer.step()
    geoparam.update_base(embedding, optimizer)
    W = embedding.weight.detach().double()
    assert float((W.mT @ W - torch.eye(k, dtype=F64)).abs().max()) <= 1e-4
