"""Operator-level constraints of convolutions: spectral norm of the operator, orthogonal convs,
1-Lipschitz activations. The oracle is the dense matrix of the operator (the layer applied to
every basis vector of a small input), whose singular values torch.linalg computes."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import geoparam
from geoparam import GroupSort, MaxMin, OrthogonalConv1d, OrthogonalConv2d
from parametrization_testing import PROPERTY_SETTINGS

F64 = torch.float64


def dense_operator(layer, input_shape: tuple[int, ...]) -> Tensor:
    """The matrix of the linear part of ``layer`` on inputs of ``input_shape`` (no batch)."""
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=F64).view(n, *input_shape)
    with torch.no_grad():
        images = layer(basis) - layer(torch.zeros_like(basis[:1]))  # drop the bias
    return images.reshape(n, -1).T


def operator_norm(layer, input_shape: tuple[int, ...]) -> float:
    return float(torch.linalg.matrix_norm(dense_operator(layer, input_shape), 2))


# (make the layer, the input shape): every kind of convolution, stride, dilation, groups and
# padding mode the operator norm takes into account.
LAYERS = {
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, padding=1), (3, 6, 6)),
    "conv2d-stride2": (lambda: nn.Conv2d(3, 8, 3, padding=1, stride=2), (3, 6, 6)),
    "conv2d-dilation2": (lambda: nn.Conv2d(3, 8, 3, padding=2, dilation=2), (3, 7, 7)),
    "conv2d-groups-circular": (
        lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="circular"),
        (4, 5, 5),
    ),
    "conv2d-reflect": (lambda: nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"), (3, 5, 6)),
    "conv2d-same": (lambda: nn.Conv2d(2, 3, (3, 3), padding="same"), (2, 5, 4)),
    "conv1d": (lambda: nn.Conv1d(3, 8, 5, padding=2), (3, 12)),
    "conv3d-replicate": (
        lambda: nn.Conv3d(2, 3, 3, padding=1, padding_mode="replicate"),
        (2, 3, 4, 4),
    ),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1), (3, 7)),
    "conv_transpose2d": (
        lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        (3, 4, 4),
    ),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), (2, 2, 3, 2)),
}


def _normalised(layer_id: str, n_power_iterations: int = 1) -> tuple[nn.Module, tuple]:
    make, shape = LAYERS[layer_id]
    layer = make().double()
    geoparam.spectral_norm(layer, input_shape=shape, n_power_iterations=n_power_iterations)
    return layer, shape


@pytest.mark.parametrize("layer_id", LAYERS)
def test_operator_norm_is_one_after_the_power_iteration_converged(layer_id):
    layer, shape = _normalised(layer_id, n_power_iterations=100)
    with torch.no_grad():
        for _ in range(3):  # training-mode reads refine the estimate
            layer.weight  # noqa: B018
    layer.eval()
    assert 0.9 <= operator_norm(layer, shape) <= 1 + 1e-3


@pytest.mark.parametrize("layer_id", ["conv2d", "conv2d-stride2", "conv1d", "conv_transpose2d"])
def test_training_reads_refine_the_estimate_and_eval_reads_freeze_it(layer_id):
    layer, shape = _normalised(layer_id)
    u = layer.parametrizations.weight[0]._u
    assert u.shape == (1, *shape)
    before = u.clone()
    layer.eval()
    layer(torch.randn(2, *shape, dtype=F64))
    assert torch.equal(u, before)
    layer.train()
    layer(torch.randn(2, *shape, dtype=F64))
    assert not torch.equal(u, before)
    torch.testing.assert_close(torch.linalg.vector_norm(u), torch.tensor(1.0, dtype=F64))


def test_gradient_matches_float64_gradcheck_with_the_estimate_fixed():
    layer, _ = _normalised("conv2d-stride2")
    layer.eval()
    param = layer.parametrizations.weight[0]
    weight = layer.parametrizations.weight.original.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(param, (weight,))


def test_state_dict_holds_the_estimate_and_round_trips():
    layer, shape = _normalised("conv2d")
    assert layer.state_dict()["parametrizations.weight.0._u"].shape == (1, *shape)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = _normalised("conv2d")
    fresh.load_state_dict(torch.load(buffer))
    layer.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.weight, layer.weight)


def test_a_zero_kernel_stays_zero_with_finite_gradients():
    layer = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        layer.weight.zero_()
    geoparam.spectral_norm(layer, input_shape=(2, 5, 5))
    layer(torch.randn(1, 2, 5, 5)).sum().backward()
    assert not layer.weight.any()
    assert torch.isfinite(layer.parametrizations.weight.original.grad).all()


def test_compiles_with_fullgraph_in_train_and_eval_mode():
    torch._dynamo.reset()
    layer = geoparam.spectral_norm(nn.Conv2d(3, 4, 3, padding=1), input_shape=(3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    compiled = torch.compile(lambda x: layer(x).square().sum(), backend="aot_eager", fullgraph=True)
    for train in (True, False):
        layer.train(train)
        u = layer.parametrizations.weight[0]._u
        start = u.clone()
        expected = layer(x).square().sum()
        after_eager = u.clone()
        u.copy_(start)
        torch.testing.assert_close(compiled(x), expected)
        torch.testing.assert_close(u, after_eager)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda: nn.Linear(3, 4), {"input_shape": (3,)}, "applies to the weight of a convolution"),
        (lambda: nn.Conv2d(3, 4, 3), {"input_shape": (2, 5, 5)}, "C = in_channels = 3"),
        (lambda: nn.Conv2d(3, 4, 3), {"input_shape": (3, 5)}, r"\(C, H, W\)"),
        (lambda: nn.Conv1d(3, 4, 3), {"input_shape": (3, 0)}, "positive sizes"),
        (lambda: nn.Conv2d(3, 4, 3), {"input_shape": (3, 2, 2)}, "does not fit"),
        (lambda: nn.Conv2d(3, 4, 3), {"input_shape": "3x5x5"}, "sequence of ints"),
        (lambda: nn.Conv2d(3, 4, 3), {"input_shape": (3, 5, 5), "dim": 0}, "dim has no meaning"),
        (
            lambda: nn.Conv2d(3, 4, 3),
            {"input_shape": (3, 5, 5), "n_power_iterations": 0},
            "n_power_iterations",
        ),
    ],
)
def test_bad_input_shapes_are_refused_naming_the_layer(make, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        geoparam.spectral_norm(make(), **kwargs)
    assert "weight" in str(error.value)


def test_without_input_shape_it_stays_torchs_drop_in():
    torch.manual_seed(0)
    ours = geoparam.spectral_norm(nn.Conv2d(3, 8, 3, padding=1))
    torch.manual_seed(0)
    theirs = torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 8, 3, padding=1))
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert ours.parametrizations.weight[0]._u.shape == (8,)


# --- orthogonal convolutions ------------------------------------------------------------------

ORTHOGONAL_CASES = [
    # (layer class, in, out, kernel, stride, spatial size)
    (OrthogonalConv2d, 4, 4, 3, 1, 6),
    (OrthogonalConv2d, 3, 8, 3, 1, 5),
    (OrthogonalConv2d, 8, 3, 3, 1, 6),
    (OrthogonalConv2d, 2, 8, 3, 2, 6),
    (OrthogonalConv2d, 4, 4, 5, 1, 5),
    (OrthogonalConv2d, 1, 6, 2, 1, 4),
    (OrthogonalConv1d, 3, 3, 5, 1, 9),
    (OrthogonalConv1d, 3, 8, 3, 2, 10),
    (OrthogonalConv1d, 4, 2, 3, 1, 8),
]


@pytest.mark.parametrize(("cls", "cin", "cout", "k", "stride", "size"), ORTHOGONAL_CASES)
def test_orthogonal_conv_operator_has_unit_singular_values(cls, cin, cout, k, stride, size):
    layer = cls(cin, cout, k, stride=stride, dtype=F64)
    with torch.no_grad():
        layer.weight.normal_(std=2.0)  # far from the identity
        layer.bias.normal_()
    shape = (cin, *(size,) * cls.dims)
    M = dense_operator(layer, shape)
    singular_values = torch.linalg.svdvals(M)
    kept = min(M.shape)  # orthonormal columns (or rows, when out < in · stride^d)
    torch.testing.assert_close(singular_values, torch.ones(kept, dtype=F64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [OrthogonalConv1d, OrthogonalConv2d])
def test_orthogonal_conv_preserves_norms_in_float32(cls):
    layer = cls(6, 6, 3, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
    x = torch.randn(4, 6, *(16,) * cls.dims)
    y = layer(x)
    torch.testing.assert_close(
        y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-4, atol=0
    )


def test_orthogonal_conv_is_the_identity_at_a_zero_kernel_and_local_for_a_centre_tap():
    layer = OrthogonalConv2d(3, 3, 3, bias=False, dtype=F64)
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    with torch.no_grad():
        layer.weight.zero_()
        torch.testing.assert_close(layer(x), x)
        # Only the centre tap: the same channel matrix at every frequency, so a pointwise map.
        layer.weight[:, :, 1, 1] = torch.randn(3, 3, dtype=F64)
        impulse = torch.zeros(1, 3, 7, 7, dtype=F64)
        impulse[0, 0, 2, 5] = 1.0
        support = layer(impulse).abs().sum(dim=(0, 1)) > 1e-12
    assert support.nonzero().tolist() == [[2, 5]]


@pytest.mark.parametrize(
    ("cls", "stride"), [(OrthogonalConv2d, 1), (OrthogonalConv2d, 2), (OrthogonalConv1d, 2)]
)
def test_orthogonal_conv_gradcheck(cls, stride):
    layer = cls(2, 3, 3, stride=stride, dtype=F64)
    x = torch.randn(1, 2, *(6,) * cls.dims, dtype=F64, requires_grad=True)
    weight = layer.weight.detach().clone().requires_grad_()

    def call(weight: Tensor, x: Tensor) -> Tensor:
        return torch.func.functional_call(layer, {"weight": weight, "bias": layer.bias}, (x,))

    assert torch.autograd.gradcheck(call, (weight, x))


def test_orthogonal_conv_compiles_with_fullgraph():
    torch._dynamo.reset()
    layer = OrthogonalConv2d(3, 4, 3, stride=2)
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(lambda x: layer(x).square().sum(), backend="aot_eager", fullgraph=True)
    expected = layer(x).square().sum()
    expected.backward()
    grad = layer.weight.grad.clone()
    layer.zero_grad()
    actual = compiled(x)
    actual.backward()
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(layer.weight.grad, grad)
    torch._dynamo.reset()


def test_orthogonal_conv_shapes_and_bias():
    layer = OrthogonalConv2d(3, 5, 3, stride=2)
    assert layer.weight.shape == (5, 12, 3, 3)
    with torch.no_grad():
        layer.bias.fill_(2.0)
        layer.weight.zero_()
    y = layer(torch.zeros(2, 3, 8, 6))
    assert y.shape == (2, 5, 4, 3)
    assert torch.all(y == 2.0)
    assert "stride=2" in repr(layer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "in_channels must be a positive int"),
        ({"kernel_size": 2.5}, "kernel_size must be a positive int"),
        ({"stride": True}, "stride must be a positive int"),
        ({"dtype": torch.float16}, "float32 or float64"),
    ],
)
def test_orthogonal_conv_bad_arguments(kwargs, message):
    arguments = {"in_channels": 3, "out_channels": 3, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        OrthogonalConv2d(**arguments)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 4, 8), r"expected an input of shape \(batch, 3, size, size\)"),
        ((2, 3, 7, 8), "multiples of the stride 2"),
        ((2, 3, 4, 4), "at least the kernel size 3"),
    ],
)
def test_orthogonal_conv_bad_inputs(shape, message):
    layer = OrthogonalConv2d(3, 3, 3, stride=2)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


# --- 1-Lipschitz activations ------------------------------------------------------------------


@given(
    group_size=st.sampled_from([1, 2, 3, 4]),
    groups=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
@PROPERTY_SETTINGS
def test_group_sort_keeps_norms_and_is_one_lipschitz(group_size, groups, seed):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 5, group_size * groups, 3, dtype=F64, generator=generator)
    sort = GroupSort(group_size)
    torch.testing.assert_close(sort(x).norm(), x.norm())
    assert float((sort(x) - sort(y)).norm()) <= float((x - y).norm()) * (1 + 1e-12)
    # Each group holds the same entries, sorted.
    grouped = sort(x).unflatten(1, (groups, group_size))
    expected = x.unflatten(1, (groups, group_size)).sort(dim=2).values
    torch.testing.assert_close(grouped, expected)


def test_maxmin_is_group_sort_of_pairs_and_refuses_odd_channels():
    x = torch.randn(3, 6, 4)
    torch.testing.assert_close(MaxMin()(x), GroupSort(2)(x))
    with pytest.raises(ValueError, match=r"5 channels .* not a multiple of the group size 2"):
        MaxMin()(torch.randn(2, 5))
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        GroupSort(0)


def test_a_certified_stack_is_one_lipschitz():
    # Orthogonal convolutions, MaxMin, flatten and an orthogonal (wide) linear head.
    torch.manual_seed(0)
    model = nn.Sequential(
        OrthogonalConv2d(1, 8, 3, dtype=F64),
        MaxMin(),
        OrthogonalConv2d(8, 8, 3, stride=2, dtype=F64),
        MaxMin(),
        nn.Flatten(),
        geoparam.orthogonal(nn.Linear(8 * 4 * 4, 10, dtype=F64)),
    )
    x, y = torch.randn(2, 64, 1, 8, 8, dtype=F64)
    with torch.no_grad():
        ratio = (model(x) - model(y)).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= 1 + 1e-10


def test_meta_device_then_initialisation_draws_the_estimate():
    with torch.device("meta"):
        layer = geoparam.spectral_norm(nn.Conv2d(3, 4, 3, padding=1), input_shape=(3, 6, 6))
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    u = layer.parametrizations.weight[0]._u
    torch.testing.assert_close(torch.linalg.vector_norm(u), torch.tensor(1.0))
    layer.double().eval()
    assert 0.9 <= operator_norm(layer, (3, 6, 6)) <= 1 + 1e-3
