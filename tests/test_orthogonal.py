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
from parametrization_testing import (
    MAPS,
    PROPERTY_SETTINGS,
    RTOL,
    SHAPES,
    Holder,
    assert_close_relative,
    map_dtype_cases,
    move_original,
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
    modules = {}
    for library, register in (
        ("torch", torch_parametrizations.orthogonal),
        ("geoparam", geoparam.orthogonal),
    ):
        module = Holder(shape)
        with torch.no_grad():
            module.weight.copy_(W)
        register(module, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization)
        modules[library] = module.weight.detach()
    # geoparam: the QR factor, whatever the map and whether or not it keeps a base.
    assert orthogonality_error(modules["geoparam"]) <= orthogonality_bound(W)
    assert_close_relative(modules["geoparam"], _qr_with_nonnegative_r(W), 1e-12)
    if make is torch.zeros:
        # torch multiplies by sgn(diag R) = 0 and so starts from a zero weight.
        assert orthogonality_error(modules["torch"]) == pytest.approx(1.0, abs=1e-12)


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


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("shape", [(6, 6), (9, 4)])
def test_assigning_without_trivialization_is_not_implemented(orthogonal_map, shape):
    module = geoparam.orthogonal(
        Holder(shape), orthogonal_map=orthogonal_map, use_trivialization=False
    )
    before = module.weight.detach().clone()
    with pytest.raises(NotImplementedError, match="use_trivialization=False"):
        module.weight = torch.eye(*shape, dtype=torch.float64)
    assert torch.equal(module.weight, before)


@pytest.mark.parametrize("use_trivialization", TRIVIALIZATION)
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_assigning_a_wrong_shape_raises(orthogonal_map, use_trivialization):
    module = geoparam.orthogonal(
        Holder((5, 3)), orthogonal_map=orthogonal_map, use_trivialization=use_trivialization
    )
    with pytest.raises(ValueError, match=r"shape \(3, 5\).*shape \(5, 3\)"):
        module.weight = torch.eye(3, 5, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(5, 5), (6, 3)], ids=["square", "tall"])
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_rejected_assignment_of_another_dtype_leaves_module_working(orthogonal_map, shape):
    reference, ours = _orthogonal_pair(shape, torch.float64, orthogonal_map, True)
    before = ours.weight.detach().clone()
    Q = torch.eye(*shape, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dtype torch\.float32.*dtype torch\.float64"):
        ours.weight = Q
    assert torch.equal(ours.weight, before)
    assert ours.parametrizations.weight[0].base.dtype == torch.float64

    # torch rejects the tensor only after its right_inverse stored a float32 base, so every
    # later read of the weight fails.
    with pytest.raises(ValueError, match="dtype"):
        reference.weight = Q
    with pytest.raises(RuntimeError, match="dtype"):
        _ = reference.weight


# ---------------------------------------------------------------------------------------------
# Errors at registration.


def test_one_dimensional_tensor_raises():
    with pytest.raises(ValueError, match=r"Linear\.bias.*Got a tensor of 1 dimensions"):
        geoparam.orthogonal(nn.Linear(3, 4), "bias")


def test_unknown_map_raises():
    with pytest.raises(ValueError, match=r"orthogonal_map has to be one of.*'qr'"):
        geoparam.orthogonal(nn.Linear(3, 4), orthogonal_map="qr")


def test_householder_with_complex_raises():
    with pytest.raises(ValueError, match=r"householder.*complex"):
        geoparam.orthogonal(Holder((4, 3), torch.complex64), orthogonal_map="householder")


def test_missing_tensor_raises_naming_module_and_tensor():
    with pytest.raises(ValueError, match=r"'Linear'.*'weights'"):
        geoparam.orthogonal(nn.Linear(3, 4), "weights")


def test_integer_tensor_raises():
    module = nn.Module()
    module.register_buffer("weight", torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"Module\.weight has dtype torch\.int64"):
        geoparam.orthogonal(module)


def test_failed_registration_leaves_module_untouched():
    module = nn.Linear(3, 4)
    with pytest.raises(ValueError):
        geoparam.orthogonal(module, orthogonal_map="qr")
    assert type(module) is nn.Linear
    assert not hasattr(module, "parametrizations")
