"""geoparam.orthogonal against torch.nn.utils.parametrizations.orthogonal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam
from geoparam.manifolds import Orthogonal
from parametrization_testing import (
    MAPS,
    PROPERTY_SETTINGS,
    RTOL,
    SHAPES,
    Holder,
    assert_close_relative,
    map_dtype_cases,
    move_original,
    observe_torch_defect,
    orthogonality_bound,
    orthogonality_error,
    register_pair,
    weight_and_grads,
)

MAP_DTYPES = map_dtype_cases()
MAP_DTYPE_IDS = [f"{name}-{str(dtype).removeprefix('torch.')}" for name, dtype in MAP_DTYPES]
TRIVIALIZATION = [True, False]


def _orthogonal_pair(shape, dtype, orthogonal_map, use_trivialization, seed=0):
    return register_pair(
        lambda: Holder(shape, dtype),
        lambda m: torch_parametrizations.orthogonal(
            m, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
        ),
        lambda m: geoparam.orthogonal(
            m, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
        ),
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------
# Parity with torch: the stored tensors, the weight and the gradients.


@pytest.mark.parametrize("use_trivialization", TRIVIALIZATION)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("orthogonal_map", "dtype"), MAP_DTYPES, ids=MAP_DTYPE_IDS)
def test_parity_with_torch(orthogonal_map, dtype, shape, use_trivialization):
    reference, ours = _orthogonal_pair(shape, dtype, orthogonal_map, use_trivialization)
    rtol = RTOL[dtype]
    # Same random completion and same stored tensors, so checkpoints mean the same thing.
    assert reference.state_dict().keys() == ours.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert_close_relative(ours.state_dict()[key], value, rtol)
    assert_close_relative(ours.weight, reference.weight, rtol)

    initial = reference.weight.detach().clone()
    move_original([reference, ours], keep_diagonal=orthogonal_map == "householder")
    direction = torch.randn(shape, dtype=dtype)
    weight_ref, grads_ref = weight_and_grads(reference, direction)
    weight_ours, grads_ours = weight_and_grads(ours, direction)
    # The move must have left the starting point, or the comparison below proves little.
    assert (weight_ref - initial).abs().max() > 0.1
    assert_close_relative(weight_ours, weight_ref, rtol)
    for grad_ours, grad_ref in zip(grads_ours, grads_ref, strict=True):
        assert grad_ref.abs().max() > 0
        assert_close_relative(grad_ours, grad_ref, rtol)


@pytest.mark.parametrize(
    "shape", [(128, 128), (2, 150, 150), (256, 256)], ids=["one", "batch", "wide-blocks"]
)
def test_parity_with_torch_householder_in_blocks(shape):
    # From n = 128 on, square Householder weights absorb the base into blocks of reflectors
    # (geoparam.linalg.rotated_householder; blocks of 128 from n = 256 on): still torch's
    # weight and gradients.
    test_parity_with_torch("householder", torch.float64, shape, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_parity_with_torch_cayley_lu(dtype):
    # From n = 256 on, square Cayley weights keep one LU of 2I - A for both passes
    # (geoparam.linalg.rotated_cayley_lower): still torch's weight and gradients.
    test_parity_with_torch("cayley", dtype, (256, 256), True)


@pytest.mark.parametrize("use_trivialization", TRIVIALIZATION)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("orthogonal_map", "dtype"), MAP_DTYPES, ids=MAP_DTYPE_IDS)
def test_weight_is_orthogonal(orthogonal_map, dtype, shape, use_trivialization):
    module = geoparam.orthogonal(
        Holder(shape, dtype), orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    assert orthogonality_error(module.weight) <= orthogonality_bound(module.weight)
    move_original([module], keep_diagonal=orthogonal_map == "householder")
    weight = module.weight
    assert weight.shape == shape and weight.dtype == dtype
    assert orthogonality_error(weight) <= orthogonality_bound(weight)


def _gradcheck_cases():
    cases = []
    for orthogonal_map in MAPS:
        for shape_id, shape in SHAPES.items():
            for use_trivialization in TRIVIALIZATION:
                cases.append((orthogonal_map, torch.float64, shape, use_trivialization, shape_id))
        if orthogonal_map != "householder":
            for shape_id in ("square", "tall", "wide"):
                cases.append((orthogonal_map, torch.complex128, SHAPES[shape_id], True, shape_id))
    return [
        pytest.param(*case[:4], id=f"{case[0]}-{str(case[1])[6:]}-{case[4]}-{case[3]}")
        for case in cases
    ]


@pytest.mark.parametrize(
    ("orthogonal_map", "dtype", "shape", "use_trivialization"), _gradcheck_cases()
)
def test_gradcheck_through_registered_module(orthogonal_map, dtype, shape, use_trivialization):
    module = geoparam.orthogonal(
        Holder(shape, dtype), orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    move_original([module], scale=0.3, keep_diagonal=orthogonal_map == "householder")
    key = "parametrizations.weight.original"
    X = module.parametrizations.weight.original.detach().clone().requires_grad_()

    def weight_of(original):
        return functional_call(module, {key: original}, ())

    # Complex Jacobians are twice the size and matrix_exp's complex backward is slow: there,
    # check random projections of the Jacobian (fast mode) instead of every entry.
    assert torch.autograd.gradcheck(weight_of, (X,), fast_mode=dtype.is_complex)


@PROPERTY_SETTINGS
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    rows=st.integers(1, 8),
    columns=st.integers(1, 8),
    case=st.sampled_from(MAP_DTYPES),
    use_trivialization=st.booleans(),
    scale=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_every_map_is_orthogonal(
    batch, rows, columns, case, use_trivialization, scale, seed
):
    orthogonal_map, dtype = case
    torch.manual_seed(seed)
    shape = (*batch, rows, columns)
    module = geoparam.orthogonal(
        Holder(shape, dtype), orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    move_original([module], scale=scale, keep_diagonal=orthogonal_map == "householder")
    weight = module.weight
    assert weight.shape == shape
    assert orthogonality_error(weight) <= orthogonality_bound(weight)


@PROPERTY_SETTINGS
@given(
    batch=st.lists(st.integers(1, 3), max_size=1),
    rows=st.integers(1, 7),
    columns=st.integers(1, 7),
    case=st.sampled_from(MAP_DTYPES),
    use_trivialization=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_parity_with_torch(batch, rows, columns, case, use_trivialization, seed):
    orthogonal_map, dtype = case
    shape = (*batch, rows, columns)
    reference, ours = _orthogonal_pair(shape, dtype, orthogonal_map, use_trivialization, seed)
    torch.manual_seed(seed)
    move_original([reference, ours], keep_diagonal=orthogonal_map == "householder")
    direction = torch.randn(shape, dtype=dtype)
    weight_ref, grads_ref = weight_and_grads(reference, direction)
    weight_ours, grads_ours = weight_and_grads(ours, direction)
    assert_close_relative(weight_ours, weight_ref, RTOL[dtype])
    assert_close_relative(grads_ours[0], grads_ref[0], RTOL[dtype])


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((6, 6), torch.float32),
        ((9, 4), torch.float32),
        ((4, 9), torch.float32),
        ((9, 4), torch.complex64),
        ((3, 5, 5), torch.float64),
    ],
)
def test_default_map_as_torch(shape, dtype):
    reference, ours = register_pair(
        lambda: Holder(shape, dtype), torch_parametrizations.orthogonal, geoparam.orthogonal
    )
    square = shape[-1] == shape[-2]
    expected = "matrix_exp" if square or dtype.is_complex else "householder"
    assert ours.parametrizations.weight[0].orthogonal_map == expected
    assert reference.parametrizations.weight[0].orthogonal_map.name == expected
    assert_close_relative(ours.weight, reference.weight, RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# Initial value: kept when orthogonal, orthogonalised by QR otherwise; never resampled.


@pytest.mark.parametrize("orthogonal_map", MAPS)
@pytest.mark.parametrize("shape", [(6, 6), (3, 5, 5)])
def test_orthogonal_initial_weight_is_kept_exactly(orthogonal_map, shape):
    Q, _ = torch.linalg.qr(torch.randn(shape, dtype=torch.float64))
    module = Holder(shape)
    with torch.no_grad():
        module.weight.copy_(Q)
    geoparam.orthogonal(module, orthogonal_map=orthogonal_map)
    assert torch.equal(module.parametrizations.weight[0].base, Q)
    assert torch.equal(module.weight, Q)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    ("orthogonal_map", "use_trivialization"),
    [("matrix_exp", True), ("cayley", True), ("householder", True), ("householder", False)],
)
def test_orthogonal_initial_weight_is_kept(orthogonal_map, use_trivialization, shape):
    transposed = shape[-2] < shape[-1]
    tall = (*shape[:-2], shape[-1], shape[-2]) if transposed else shape
    Q, _ = torch.linalg.qr(torch.randn(tall, dtype=torch.float64))
    Q = Q.mT if transposed else Q
    module = Holder(shape)
    with torch.no_grad():
        module.weight.copy_(Q)
    geoparam.orthogonal(
        module, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    # Exact above for a square base; to rounding where the base is completed with random
    # columns or the weight is stored as reflectors.
    assert_close_relative(module.weight, Q, 1e-14)


# The maps whose registration orthogonalises the weight: with trivialization all of them, without
# it only householder (torch keeps the raw tensor as `original` for the others).
INITIALISING = [
    pytest.param("matrix_exp", torch.float64, True, id="matrix_exp-float64"),
    pytest.param("cayley", torch.complex128, True, id="cayley-complex128"),
    pytest.param("householder", torch.float64, True, id="householder-float64"),
    pytest.param("householder", torch.float64, False, id="householder-float64-no_trivialization"),
]


def _qr_with_nonnegative_r(W: torch.Tensor) -> torch.Tensor:
    """The oracle: torch.linalg.qr, columns flipped so that diag(R) >= 0 (zeros keep +1)."""
    transposed = W.size(-2) < W.size(-1)
    Q, R = torch.linalg.qr(W.mT if transposed else W)
    signs = R.diagonal(dim1=-2, dim2=-1).sgn()
    Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)
    return Q.mT if transposed else Q


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("orthogonal_map", "dtype", "use_trivialization"), INITIALISING)
def test_non_orthogonal_initial_weight_becomes_its_qr_factor(
    orthogonal_map, dtype, use_trivialization, shape
):
    module = Holder(shape, dtype)
    W = module.weight.detach().clone()
    geoparam.orthogonal(
        module, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    Q = module.weight.detach()
    assert_close_relative(Q, _qr_with_nonnegative_r(W), 1e-12)
    transposed = shape[-2] < shape[-1]
    if transposed:
        Q, W = Q.mT, W.mT
    R = Q.mH @ W
    assert_close_relative(R, R.triu(), 1e-12)  # W = QR with R upper triangular ...
    diagonal = R.diagonal(dim1=-2, dim2=-1)
    assert diagonal.real.min() >= 0  # ... and diag(R) >= 0 ...
    if dtype.is_complex:
        assert diagonal.imag.abs().max() <= 1e-12  # ... and real.
    assert_close_relative(Q @ R, W, 1e-12)


def _rank_deficient(shape, dtype):
    W = torch.randn(shape, dtype=dtype)
    W[..., :, 1] = 0.0  # A zero column and a zero row: rank-deficient read tall or wide.
    W[..., 1, :] = 0.0
    return W


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("make", [torch.zeros, _rank_deficient], ids=["zero", "rank_deficient"])
@pytest.mark.parametrize(
    ("orthogonal_map", "use_trivialization"),
    [("matrix_exp", True), ("cayley", True), ("householder", True), ("householder", False)],
)
def test_rank_deficient_initial_weight_becomes_orthogonal(
    orthogonal_map, use_trivialization, make, shape
):
    W = make(shape, dtype=torch.float64)
    module = Holder(shape)
    with torch.no_grad():
        module.weight.copy_(W)
    geoparam.orthogonal(
        module, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    # The QR factor, whatever the map and whether or not it keeps a base.
    assert orthogonality_error(module.weight) <= orthogonality_bound(W)
    assert_close_relative(module.weight.detach(), _qr_with_nonnegative_r(W), 1e-12)


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_torch_starts_a_zero_weight_at_zero(orthogonal_map):
    module = Holder((5, 5))
    with torch.no_grad():
        module.weight.zero_()
    torch_parametrizations.orthogonal(module, orthogonal_map=orthogonal_map)
    # torch multiplies each column by sgn(diag R) = 0.
    observe_torch_defect(
        orthogonality_error(module.weight) == pytest.approx(1.0, abs=1e-12),
        "a zero weight is registered as a zero (non-orthogonal) weight",
    )


# ---------------------------------------------------------------------------------------------
# Assignment `module.weight = Q`.


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    ("orthogonal_map", "use_trivialization"),
    [("matrix_exp", True), ("cayley", True), ("householder", True), ("householder", False)],
)
def test_assigning_an_orthogonal_weight_keeps_it(orthogonal_map, use_trivialization, shape):
    reference, ours = _orthogonal_pair(shape, torch.float64, orthogonal_map, use_trivialization)
    move_original([reference, ours], keep_diagonal=orthogonal_map == "householder")
    fresh = geoparam.orthogonal(Holder(shape), orthogonal_map=orthogonal_map)
    Q = fresh.weight.detach().clone()
    torch.manual_seed(5)
    reference.weight = Q
    torch.manual_seed(5)
    ours.weight = Q
    assert_close_relative(ours.weight, Q, 1e-12)
    assert_close_relative(ours.weight, reference.weight, RTOL[torch.float64])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    ("orthogonal_map", "use_trivialization"),
    [("matrix_exp", True), ("cayley", True), ("householder", True), ("householder", False)],
)
def test_assigning_a_non_orthogonal_weight_orthogonalises_it(
    orthogonal_map, use_trivialization, shape
):
    reference, ours = _orthogonal_pair(shape, torch.float64, orthogonal_map, use_trivialization)
    W = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(5)
    reference.weight = W
    torch.manual_seed(5)
    ours.weight = W
    assert orthogonality_error(ours.weight) <= orthogonality_bound(ours.weight)
    assert orthogonality_error(W) > 0.1
    assert_close_relative(ours.weight, reference.weight, RTOL[torch.float64])


@pytest.mark.parametrize("shape", [(5, 5), (6, 3)], ids=["square", "tall"])
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_rejected_assignment_of_another_dtype_leaves_module_working(orthogonal_map, shape):
    _, ours = _orthogonal_pair(shape, torch.float64, orthogonal_map, True)
    before = ours.weight.detach().clone()
    with pytest.raises(ValueError, match=r"dtype torch\.float32.*dtype torch\.float64"):
        ours.weight = torch.eye(*shape, dtype=torch.float32)
    assert torch.equal(ours.weight, before)
    assert ours.parametrizations.weight[0].base.dtype == torch.float64


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_torch_breaks_after_a_rejected_dtype(orthogonal_map):
    reference, _ = _orthogonal_pair((5, 5), torch.float64, orthogonal_map, True)
    # torch rejects the tensor only after its right_inverse stored a float32 base.
    with pytest.raises(ValueError, match="dtype"):
        reference.weight = torch.eye(5, dtype=torch.float32)
    try:
        _ = reference.weight
        broken = False
    except RuntimeError:
        broken = True
    observe_torch_defect(broken, "a rejected float32 assignment breaks every later read")


# ---------------------------------------------------------------------------------------------
# sample() and in_manifold().

SAMPLE_DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128, torch.bfloat16]


@pytest.mark.parametrize("dtype", SAMPLE_DTYPES)
@pytest.mark.parametrize("shape", [(5, 5), (6, 3), (3, 6), (2, 4, 3)])
def test_sample_has_the_weights_shape_dtype_and_device(shape, dtype):
    layer = Holder(shape, dtype)
    orthogonal_map = "householder" if not dtype.is_complex and shape[-2] != shape[-1] else None
    geoparam.orthogonal(layer, orthogonal_map=orthogonal_map)
    param = layer.parametrizations.weight[0]
    Q = param.sample()
    assert (Q.shape, Q.dtype, Q.device) == (torch.Size(shape), dtype, layer.weight.device)
    assert param.in_manifold(Q)
    layer.weight = Q  # a sample is a valid assignment
    torch.testing.assert_close(layer.weight, Q, rtol=0, atol=4 * torch.finfo(dtype).eps)


def test_sample_follows_the_module_to_another_dtype():
    layer = geoparam.orthogonal(nn.Linear(4, 4))
    param = layer.parametrizations.weight[0]
    assert param.sample().dtype == torch.float32
    layer.double()
    assert param.sample().dtype == torch.float64
    assert "_like" not in "".join(layer.state_dict())


def test_sample_is_seeded_by_its_generator():
    param = Orthogonal(torch.Size([4, 3]), "cayley", dtype=torch.float64)
    first = param.sample(torch.Generator().manual_seed(3))
    second = param.sample(torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert not torch.equal(first, param.sample(torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_sample_is_haar_distributed(dtype):
    # For Haar-distributed Q in O(n) or U(n): E[tr Q] = 0 and E[|tr Q|²] = 1 (Diaconis &
    # Shahshahani, 1994). The mean of 4000 draws has a standard error of about 1/√4000 ≈ 0.016.
    param = Orthogonal(torch.Size([4000, 3, 3]), "matrix_exp", dtype=dtype)
    traces = param.sample(torch.Generator().manual_seed(0)).diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(complex(traces.mean())) < 0.08
    assert float((traces.abs() ** 2).mean()) == pytest.approx(1.0, abs=0.1)


def test_in_manifold_checks_the_shape_and_the_tolerance():
    param = Orthogonal(torch.Size([5, 3]), "householder", dtype=torch.float64)
    Q = param.sample()
    assert param.in_manifold(Q)
    assert not param.in_manifold(Q.mT)  # orthonormal rows, but not the weight's shape
    assert not param.in_manifold(Q[:4])
    assert not param.in_manifold(1.01 * Q)
    assert param.in_manifold(1.01 * Q, atol=0.03)
    assert not param.in_manifold(1.01 * Q, atol=0.01)
