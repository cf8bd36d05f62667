"""Tests for geoparam.linalg.conv_spectrum: the exact spectrum of circular convolutions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kernel_testing import randn

from geoparam.linalg.conv import ConvOperator, operator_power_iteration_
from geoparam.linalg.conv_spectrum import conv_singular_values, project_conv_operator_norm

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _as_tuple(value, dims: int) -> tuple[int, ...]:
    return (value,) * dims if isinstance(value, int) else tuple(value)


def _dense_operator(weight, sizes, dilation=1, groups=1, stride=1, left_heavy=False):
    """The operator's matrix: torch's circular convolution applied to the identity basis.

    The circular padding totals the dilated kernel's extent minus one per dimension, split
    evenly or (``left_heavy``) all on the left: a shift, which must not change the spectrum.
    """
    dims = len(sizes)
    dilation = _as_tuple(dilation, dims)
    c_in = weight.size(1) * groups
    n = c_in * math.prod(sizes)
    basis = torch.eye(n, dtype=weight.dtype).reshape(n, c_in, *sizes)
    pads = []
    for d, k in zip(reversed(dilation), reversed(weight.shape[2:]), strict=True):
        total = d * (k - 1)
        left = total if left_heavy else total // 2
        pads += [left, total - left]
    padded = F.pad(basis, pads, mode="circular")
    out = _CONV[dims](padded, weight, None, _as_tuple(stride, dims), 0, dilation, groups)
    return out.reshape(n, -1).T


# (weight shape, input size, dilation, groups, stride)
CASES = [
    ((4, 3, 3, 3), (5, 5), 1, 1, 1),
    ((2, 4, 2, 3), (6, 5), 1, 1, 1),  # c_out < c_in, even and non-square kernel and input
    ((6, 2, 3, 3), (5, 6), 2, 2, 1),  # groups, dilation: extent 5 fills the 5
    ((4, 3, 3, 2), (4, 7), (1, 3), 1, 1),  # a different dilation per dimension
    ((5, 3, 4), (7,), 2, 1, 1),
    ((3, 1, 3), (8,), 1, 3, 1),  # depthwise
    ((3, 2, 2, 3, 3), (3, 4, 5), (1, 1, 2), 1, 1),
    ((2, 1, 2, 2, 3), (2, 3, 4), 1, 2, 1),
    ((3, 2, 3), (8,), 1, 1, 2),
    ((5, 3, 3, 3), (6, 4), 1, 1, 2),  # strided: 5 x 12 blocks
    ((13, 3, 3, 3), (4, 4), 1, 1, 2),  # strided: 13 x 12 blocks, c_out > c_in s²
    ((4, 2, 3, 3), (6, 6), 1, 2, 2),  # strided with groups
    ((4, 3, 3, 3), (6, 5), 2, 1, (3, 1)),  # a stride per dimension, with dilation
    ((3, 1, 2, 3, 3), (4, 4, 3), 1, 1, (2, 2, 1)),
]


@pytest.mark.parametrize("left_heavy", [False, True])
@pytest.mark.parametrize(("shape", "sizes", "dilation", "groups", "stride"), CASES)
def test_equals_the_dense_operator_svd(shape, sizes, dilation, groups, stride, left_heavy):
    W = randn(*shape, seed=sum(shape) + len(sizes))
    kwargs = {"dilation": dilation, "groups": groups, "stride": stride}
    dense = _dense_operator(W, sizes, left_heavy=left_heavy, **kwargs)
    sigma = conv_singular_values(W, sizes, **kwargs)
    # The counts agree: min of the dense matrix's sides, ∏(N/s) · min(c_out, c_in ∏s).
    assert sigma.shape == (min(dense.shape),)
    assert torch.all(sigma[:-1] >= sigma[1:])
    torch.testing.assert_close(sigma, torch.linalg.svdvals(dense), rtol=0, atol=1e-10)


def test_complex_weight_equals_the_dense_operator_svd():
    W = torch.complex(randn(3, 2, 3, 2, seed=1), randn(3, 2, 3, 2, seed=2))
    sigma = conv_singular_values(W, (4, 5))
    assert sigma.dtype == torch.float64
    torch.testing.assert_close(
        sigma, torch.linalg.svdvals(_dense_operator(W, (4, 5))), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize(("dilation", "groups", "stride"), [(1, 1, 1), (2, 2, 1), (1, 2, 2)])
def test_squares_sum_to_the_frobenius_norm(dilation, groups, stride):
    # Every output entry's row of the operator holds the kernel once (circular padding), so
    # ‖operator‖_F² = (∏N / ∏s) · ‖W‖_F².
    W = randn(6, 2, 3, 3, seed=3)
    sigma = conv_singular_values(W, (8, 6), dilation=dilation, groups=groups, stride=stride)
    expected = 48 / _as_tuple(stride, 2)[0] ** 2 * W.square().sum()
    torch.testing.assert_close(sigma.square().sum(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_top_value_is_the_power_iteration_limit_on_a_circular_conv2d(stride):
    conv = torch.nn.Conv2d(3, 5, 3, stride, padding=1, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight.copy_(randn(5, 3, 3, 3, seed=4))
    op = ConvOperator(
        dims=2, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=1,
        padding_mode="circular", pad=conv._reversed_padding_repeated_twice,
    )  # fmt: skip
    W = conv.weight.detach().double()
    u = F.normalize(randn(3 * 64, seed=5), dim=0).view(1, 3, 8, 8)
    operator_power_iteration_(op, W, u, 1000, 1e-12)
    estimate = op(u, W).norm()
    top = conv_singular_values(W, (8, 8), stride=stride)[0]
    # ‖conv(u)‖ for a unit u is a lower bound, which the iteration approaches.
    assert estimate <= top * (1 + 1e-12)
    assert estimate >= top * (1 - 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_is_computed_in_single_precision(dtype):
    W = randn(4, 3, 3, 3, seed=6).to(dtype)
    sigma = conv_singular_values(W, (6, 6))
    assert sigma.dtype == dtype
    reference = conv_singular_values(W.double(), (6, 6))
    # float32 rounds the spectrum; the half types round only the returned values.
    rtol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(sigma.double(), reference, rtol=rtol, atol=rtol * reference[0])


@pytest.mark.parametrize(("groups", "stride"), [(1, 1), (2, 2)])
def test_gradcheck(groups, stride):
    W = randn(4, 2, 2, 3, seed=7).requires_grad_(True)

    def spectral(weight: torch.Tensor) -> torch.Tensor:
        sigma = conv_singular_values(weight, (4, 6), groups=groups, stride=stride)
        # Symmetric functions of the values: smooth even where values repeat (frequencies ω and
        # -ω give equal values for a real kernel). The nuclear norm is smooth off σ = 0, and
        # this kernel has no zero value.
        return torch.stack([sigma.square().sum(), sigma.sum()])

    assert torch.autograd.gradcheck(spectral, (W,))


def test_gradient_of_the_squares_is_the_frobenius_gradient():
    W = randn(3, 4, 3, 3, seed=8).requires_grad_(True)
    conv_singular_values(W, (5, 7)).square().sum().backward()
    torch.testing.assert_close(W.grad, 2 * 35 * W.detach(), rtol=1e-12, atol=1e-12)


def _bad_arguments():
    W = randn(4, 2, 3, 3, seed=9)
    return [
        ((randn(4, 3, seed=0), (5,)), {}, "weight must have shape"),
        ((randn(1, 1, 1, 1, 1, 1, seed=0), (2, 2, 2, 2)), {}, "weight must have shape"),
        ((W, (5,)), {}, r"input_size .*\(5,\)"),
        ((W, (5, 5, 5)), {}, r"input_size .*\(5, 5, 5\)"),
        ((W, (5, 0)), {}, r"input_size .*\(5, 0\)"),
        ((W, (5, 2)), {}, r"\(5, 2\) is smaller than the kernel's extent \(3, 3\)"),
        ((W, (4, 5)), {"dilation": 2}, r"\(4, 5\) is smaller than the kernel's extent \(5, 5\)"),
        ((W, (9, 9)), {"dilation": 0}, "dilation .* got 0"),
        ((W, (9, 9)), {"dilation": (1, -1)}, r"dilation .* got \(1, -1\)"),
        ((W, (9, 9)), {"groups": 3}, "groups=3 must divide .* c_out=4"),
        ((W, (9, 9)), {"groups": 0}, "groups must be a positive int, got 0"),
        ((W, (9, 9)), {"stride": 2}, r"\(9, 9\) must be a multiple of stride \(2, 2\)"),
        ((W, (8, 8)), {"stride": 0}, "stride .* got 0"),
    ]


@pytest.mark.parametrize("function", [conv_singular_values, project_conv_operator_norm])
@pytest.mark.parametrize(("args", "kwargs", "message"), _bad_arguments())
def test_rejects_bad_arguments(function, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        function(*args, **kwargs)


def test_rejects_integer_weights():
    with pytest.raises(TypeError, match=r"torch\.int64"):
        conv_singular_values(torch.ones(2, 2, 3, dtype=torch.int64), (4,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_norm": 0.0}, "max_norm .* got 0.0"),
        ({"max_norm": math.inf}, "max_norm .* got inf"),
        ({"max_norm": "1"}, "max_norm .* got '1'"),
        ({"iterations": 0}, "iterations .* got 0"),
    ],
)
def test_projection_rejects_bad_bounds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        project_conv_operator_norm(randn(2, 2, 3, seed=0), (5,), **kwargs)


# Measured: the norm after 20 iterations on 30 random 4 x 3 x 3 x 3 kernels on 8 x 8 with
# max_norm = 1 is at most 1.0134 (1 iteration: 1.3-1.6; 5: 1.05-1.12); on 8 x 8 x 3 x 3 kernels
# on 16 x 16 it is about 1.02 after 20 and 1.006 after 50.
PROJECTION_TOLERANCE = 0.02


@pytest.mark.parametrize(
    ("shape", "sizes", "kwargs"),
    [
        ((4, 3, 3, 3), (8, 8), {}),
        ((6, 4, 5), (12,), {"dilation": 2}),
        ((4, 2, 3, 3), (8, 6), {"groups": 2}),
        ((5, 3, 3, 3), (8, 8), {"stride": 2}),
        ((3, 2, 3, 3, 3), (4, 5, 6), {}),
    ],
)
@pytest.mark.parametrize("max_norm", [1.0, 0.3])
def test_projection_approaches_the_bound(shape, sizes, kwargs, max_norm):
    W = randn(*shape, seed=10)
    norms = [
        conv_singular_values(
            project_conv_operator_norm(W, sizes, max_norm, iterations=n, **kwargs), sizes, **kwargs
        )[0]
        for n in (1, 5, 20)
    ]
    assert conv_singular_values(W, sizes, **kwargs)[0] > 3 * max_norm
    assert norms[0] > norms[1] > norms[2]
    assert max_norm <= norms[2] <= max_norm * (1 + PROJECTION_TOLERANCE)


@pytest.mark.parametrize("kwargs", [{}, {"groups": 2}, {"stride": 2}])
def test_projection_without_truncation_clips_the_dense_spectrum(kwargs):
    # A kernel as large as the input loses nothing in the truncation: one clip is the exact
    # projection, whose values are the dense operator's, clipped.
    W = randn(4, 2 if kwargs.get("groups") else 4, 4, 4, seed=11)
    P = project_conv_operator_norm(W, (4, 4), 2.0, **kwargs)
    dense = torch.linalg.svdvals(_dense_operator(W, (4, 4), **kwargs))
    assert dense[0] > 4.0
    projected = torch.linalg.svdvals(_dense_operator(P, (4, 4), **kwargs))
    torch.testing.assert_close(projected, dense.clamp(max=2.0), rtol=0, atol=1e-10)


def test_projection_is_the_frobenius_nearest_kernel_without_truncation():
    # Among kernels with norm <= c, the clip is the nearest: any other (here, the kernel scaled
    # down to the bound) is farther from W.
    W = randn(3, 3, 5, seed=12)
    P = project_conv_operator_norm(W, (5,), 1.0)
    scaled = W / conv_singular_values(W, (5,))[0]
    assert torch.linalg.norm(P - W) < torch.linalg.norm(scaled - W)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_projection_keeps_a_kernel_within_the_bound(dtype):
    W = randn(4, 3, 3, 3, seed=13)
    W = (0.99 * W / conv_singular_values(W, (8, 8))[0]).to(dtype)
    P = project_conv_operator_norm(W, (8, 8), 1.0, iterations=3)
    assert P.dtype == dtype and P.data_ptr() != W.data_ptr()
    torch.testing.assert_close(P, W, rtol=0, atol=0)


def test_projection_of_a_clipped_kernel_changes_little():
    # After many rounds the kernel is (nearly) a fixed point: one more round moves it by little.
    W = randn(4, 3, 3, 3, seed=14)
    P = project_conv_operator_norm(W, (8, 8), 1.0, iterations=30)
    again = project_conv_operator_norm(P, (8, 8), 1.0)
    assert torch.linalg.norm(again - P) < 1e-2 * torch.linalg.norm(P)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_projection_in_low_precision_keeps_the_dtype(dtype):
    W = randn(4, 3, 3, 3, seed=15)
    W = W.to(dtype)
    P = project_conv_operator_norm(W, (8, 8), 1.0, iterations=20)
    assert P.dtype == dtype and P.shape == W.shape
    reference = project_conv_operator_norm(W.double(), (8, 8), 1.0, iterations=20)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-3
    torch.testing.assert_close(P.double(), reference, rtol=tolerance, atol=tolerance)


def test_projection_of_a_complex_kernel_stays_complex():
    W = torch.complex(randn(3, 2, 3, 3, seed=16), randn(3, 2, 3, 3, seed=17))
    P = project_conv_operator_norm(W, (6, 6), 1.0, iterations=20)
    assert P.dtype == torch.complex128
    assert 1.0 <= conv_singular_values(P, (6, 6))[0] <= 1 + PROJECTION_TOLERANCE


def test_projection_is_not_differentiated():
    W = randn(4, 3, 3, 3, seed=18).requires_grad_(True)
    P = project_conv_operator_norm(W, (8, 8), 1.0)
    assert not P.requires_grad
