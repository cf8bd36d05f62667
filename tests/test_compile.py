"""geoparam under the PyTorch 2 compiler: ``torch.compile``, ``torch._dynamo.explain``, ``export``.

Parametrizations bypass geoparam's weight cache while Dynamo traces (``_reuse.py``), so a compiled
model evaluates every constraint once per call, exactly as an eager model with
``geoparam.caching(False)`` does; that is the reference here. Most cases use
``backend="aot_eager"``: it traces forward and backward through AOTAutograd on fake tensors, so it
catches graph breaks and fake-tensor problems in seconds, and runs the very operations eager runs
(results agree to the last bit, compared here at float32 tolerances). A few cases, marked slow,
use the default inductor backend, which generates C++ code.

Separately compiled blocks share one graph, also when they were built independently: geoparam
gives every parametrized module of one plain class the same class (``_registration.py``), where
torch's ``register_parametrization`` makes one per module, which Dynamo guards on (torch's own
parametrizations recompile once per block, and past ``recompile_limit`` run eagerly).

The maps of tall and wide weights compile too: their exponential's forward-mode rule (a custom
``jvp``, which Dynamo cannot trace) is left out while compiling, and their Cayley map solves with
``solve_ex``, which has no host-synchronising error check.

Known limitation, as a strict xfail (it turns into a failure once fixed, to be removed then):

* inductor and spectral normalisation in training mode: for some graphs (two Linear layers here,
  not the Conv1d model) inductor's partitioner recomputes the power iteration in the backward pass
  from the ``_v`` buffer that the forward pass has already overwritten: wrong gradients. torch's
  own ``spectral_norm`` is affected the same way (a bug of torch 2.13; pytorch/pytorch PR #197039,
  "Don't recompute reads of mutated inputs or mutable buffers").
"""

from __future__ import annotations

import copy
import importlib
import itertools
import shutil

import pytest
import torch
from torch import Tensor, nn
from torch._dynamo.utils import counters

import geoparam
from geoparam.linalg import householder

# The module (geoparam.linalg re-exports its function `cayley` under the same name).
cayley_kernels = importlib.import_module("geoparam.linalg.cayley")

MAPS = ("matrix_exp", "cayley", "householder")

# (*batch, rows, columns) of the weight in `Net`; a weight is "tall" when rows > columns.
SHAPES = {
    "square": (5, 5),
    "tall": (6, 3),
    "wide": (3, 6),
    "batched_square": (2, 4, 4),
    "batched_tall": (2, 5, 3),
}

needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="inductor's CPU backend needs a C++ compiler",
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every test compiles from scratch, with fresh counters, and leaves nothing behind."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _tall(shape: tuple[int, ...]) -> bool:
    return shape[-2] > shape[-1]


def _scale(tensor: Tensor) -> float:
    return max(1.0, float(tensor.detach().abs().max()))


def _assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-5) -> None:
    """float32 agreement: relative to the largest entry of ``expected``."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * _scale(expected))


def _assert_same_state(compiled: nn.Module, eager: nn.Module, rtol: float = 1e-5) -> None:
    """Equal gradients of every parameter (the unconstrained originals), equal buffers."""
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if q.grad is not None:
            _assert_close(p.grad, q.grad, rtol)
    for (name, b), c in zip(compiled.named_buffers(), eager.buffers(), strict=True):
        assert b.shape == c.shape, name
        if c.numel():
            _assert_close(b, c, rtol)


class Net(nn.Module):
    """``x @ W``, for ``W`` of shape ``(*batch, m, n)`` and ``x`` of shape ``(*batch, 3, m)``."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight


def _loss(out: Tensor, probe: Tensor) -> Tensor:
    # A fixed random linear functional: every entry of the output gets a distinct cotangent.
    real = torch.view_as_real(out) if out.is_complex() else out
    return (real * probe).sum()


def _perturbed_orthogonal(shape, dtype, orthogonal_map, scale=0.5) -> Net:
    net = geoparam.orthogonal(Net(shape, dtype), orthogonal_map=orthogonal_map)
    with torch.no_grad():
        original = net.parametrizations.weight.original
        original.add_(scale * torch.randn_like(original))
    return net


def _orthogonal_cases():
    cases = []
    for orthogonal_map in MAPS:
        dtypes = [torch.float32] + ([torch.complex64] if orthogonal_map != "householder" else [])
        for label, shape in SHAPES.items():
            for dtype in dtypes:
                case_id = f"{orthogonal_map}-{label}-{str(dtype).removeprefix('torch.')}"
                cases.append(pytest.param(orthogonal_map, shape, dtype, 0.5, id=case_id))
    # Large enough for expm_skew's scaling and squaring (s > 0), which the backward replays.
    cases.append(pytest.param("matrix_exp", (5, 5), torch.float32, 4.0, id="matrix_exp-squarings"))
    return cases


# --------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): outputs, gradients and buffers equal eager.


@pytest.mark.parametrize(("orthogonal_map", "shape", "dtype", "scale"), _orthogonal_cases())
def test_compiled_orthogonal_matches_eager(orthogonal_map, shape, dtype, scale):
    net = _perturbed_orthogonal(shape, dtype, orthogonal_map, scale)
    eager = copy.deepcopy(net)
    x = torch.randn(*shape[:-2], 3, shape[-2], dtype=dtype)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)

    out = compiled(x)
    probe = torch.randn_like(torch.view_as_real(out) if out.is_complex() else out)
    _loss(out, probe).backward()
    with geoparam.caching(False):
        expected = eager(x)
        _loss(expected, probe).backward()

    assert out.dtype == dtype
    _assert_close(out, expected)
    _assert_same_state(net, eager)
    # The compiled weight is the constrained one.
    Q = net.weight.detach()
    Q = Q if _tall(shape) or shape[-2] == shape[-1] else Q.mH
    eye = torch.eye(Q.size(-1), dtype=dtype)
    assert float((Q.mH @ Q - eye).abs().max()) < 1e-5
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_householder_blocks_match_eager(monkeypatch):
    # Square Householder weights with a base run in blocks of reflectors (from two blocks on:
    # n >= 128 at the real block size); blocks of 2 bring that path to a 6 x 6 weight.
    monkeypatch.setattr(householder, "_BLOCK", 2)
    test_compiled_orthogonal_matches_eager("householder", (6, 6), torch.float32, 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_compiled_cayley_lu_matches_eager(monkeypatch, dtype):
    # Square Cayley weights keep the LU factors of 2I - A for the backward from n = 256 on
    # (geoparam.linalg.rotated_cayley_lower); _LU_FROM = 2 brings that path to a 5 x 5 weight.
    monkeypatch.setattr(cayley_kernels, "_LU_FROM", 2)
    test_compiled_orthogonal_matches_eager("cayley", (5, 5), dtype, 0.5)


def _norm_model(constrain) -> nn.Sequential:
    """Conv1d (a 3-D weight, which spectral_norm flattens) and two Linear layers, constrained."""
    model = nn.Sequential(
        nn.Conv1d(2, 3, 2), nn.Flatten(), nn.Tanh(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)
    )
    for index in (0, 3, 5):
        constrain(model[index])
    return model


NORMS = {"weight_norm": geoparam.weight_norm, "spectral_norm": geoparam.spectral_norm}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_compiled_norms_match_eager(norm, training):
    model = _norm_model(NORMS[norm]).train(training)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, eager)]
    x = torch.randn(4, 2, 5)
    buffers_before = [b.clone() for b in model.buffers()]

    # Two steps: the second call must see the first step's parameters and buffers.
    for _ in range(2):
        for optimizer in optimizers:
            optimizer.zero_grad()
        out = compiled(x)
        out.pow(2).sum().backward()
        with geoparam.caching(False):
            expected = eager(x)
            expected.pow(2).sum().backward()
        _assert_close(out, expected)
        _assert_same_state(model, eager)
        for optimizer in optimizers:
            optimizer.step()

    if norm == "spectral_norm":
        # Training-mode reads refine u and v in place (which the comparison above has seen match
        # eager); eval-mode reads leave them alone.
        moved = any(
            not torch.equal(a, b) for a, b in zip(buffers_before, model.buffers(), strict=True)
        )
        assert moved == training
    assert counters["stats"]["unique_graphs"] == 1


def _inductor_case(kind: str) -> tuple[nn.Module, Tensor]:
    if kind in MAPS:
        # matrix_exp: a square weight (the custom operator); cayley: a tall one (stiefel_cayley);
        # householder: a wide one (the transposed map).
        sizes = {"matrix_exp": (4, 4), "cayley": (3, 6), "householder": (6, 3)}[kind]
        layer = geoparam.orthogonal(nn.Linear(*sizes), orthogonal_map=kind)
        with torch.no_grad():
            original = layer.parametrizations.weight.original
            original.add_(0.5 * torch.randn_like(original))
        return nn.Sequential(layer, nn.Tanh()), torch.randn(2, sizes[0])
    if kind == "spectral_norm-train-linear":
        return _stack(geoparam.spectral_norm, (4, 4, 3)), torch.randn(2, 4)
    norm, mode = kind.split("-")
    return _norm_model(NORMS[norm]).train(mode == "train"), torch.randn(4, 2, 5)


INDUCTOR_CASES = [
    *MAPS,
    "weight_norm-train",
    "spectral_norm-eval",
    # Whether inductor's partitioner recomputes the power iteration in the backward pass depends on
    # the graph: with the Conv1d model it saves u and v, with two Linear layers it recomputes them.
    "spectral_norm-train",
    pytest.param(
        "spectral_norm-train-linear",
        marks=pytest.mark.xfail(
            raises=AssertionError,
            strict=True,
            reason="torch 2.13 inductor recomputes reads of the mutated _v buffer in the backward "
            "(wrong gradients, torch's spectral_norm too): pytorch/pytorch PR #197039",
        ),
    ),
]


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("kind", INDUCTOR_CASES)
def test_inductor_matches_eager(kind):
    model, x = _inductor_case(kind)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    probe = torch.randn_like(out)
    (out * probe).sum().backward()
    with geoparam.caching(False):
        expected = eager(x)
        (expected * probe).sum().backward()
    # Inductor fuses and reorders float32 arithmetic: agreement to a few hundred ulp.
    _assert_close(out, expected, rtol=1e-4)
    _assert_same_state(model, eager, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Graph counts.


def _stack(constrain, sizes: tuple[int, ...]) -> nn.Sequential:
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layer = nn.Linear(fan_in, fan_out)
        constrain(layer)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers)


def _constraint(kind: str):
    if kind in MAPS:
        return lambda layer: geoparam.orthogonal(layer, orthogonal_map=kind)
    return NORMS[kind]


KINDS = (*MAPS, "weight_norm", "spectral_norm")


@pytest.mark.parametrize("kind", KINDS)
def test_explain_square_stack_is_one_graph(kind):
    model = _stack(_constraint(kind), (4,) * 7)  # six constrained 4 x 4 layers
    explanation = torch._dynamo.explain(model)(torch.randn(2, 4))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("kind", KINDS)
def test_explain_tall_and_wide_stack_is_one_graph(kind):
    model = _stack(_constraint(kind), (3, 6, 6, 2, 5, 5, 4))  # wide, square, tall, wide, ...
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


# --------------------------------------------------------------------------------------------
# N identical blocks: one graph, no recompilation.

N_BLOCKS = torch._dynamo.config.recompile_limit + 1  # one past the point where Dynamo gives up


class Block(nn.Module):
    def __init__(self, constrain) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        constrain(self.lin)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.lin(x))


class Tower(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _run_blocks_compiled_separately(blocks: list[nn.Module]) -> Tensor:
    x = torch.randn(2, 4, requires_grad=True)  # every block sees an input that requires grad
    with torch._dynamo.config.patch(error_on_recompile=True):
        for block in blocks:
            x = torch.compile(block, backend="aot_eager", fullgraph=True)(x)
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_tower_of_blocks_compiles_once(kind):
    tower = Tower([Block(_constraint(kind)) for _ in range(N_BLOCKS)])
    eager = copy.deepcopy(tower)
    compiled = torch.compile(tower, backend="aot_eager", fullgraph=True)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (tower, eager)]
    x = torch.randn(2, 4)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):  # a second step, after parameters and buffers changed in place
            for optimizer in optimizers:
                optimizer.zero_grad()
            out = compiled(x)
            out.sum().backward()
            with geoparam.caching(False):
                eager(x).sum().backward()
            _assert_same_state(tower, eager)
            for optimizer in optimizers:
                optimizer.step()
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_copied_blocks_compiled_separately_share_one_graph(kind):
    first = Block(_constraint(kind))
    blocks = [first] + [copy.deepcopy(first) for _ in range(N_BLOCKS - 1)]
    _run_blocks_compiled_separately(blocks).sum().backward()
    assert counters["stats"]["unique_graphs"] == 1
    assert all(p.grad is not None for block in blocks for p in block.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_independent_blocks_compiled_separately_share_one_graph(kind):
    blocks = [Block(_constraint(kind)) for _ in range(3)]
    _run_blocks_compiled_separately(blocks)
    assert counters["stats"]["unique_graphs"] == 1


def test_a_sibling_with_another_constrained_tensor_does_not_break_compilation():
    # Modules of one plain class share a parametrized class, which then has a property for
    # every tensor name constrained in any of them: here `bias`, plain in the compiled block.
    sibling = geoparam.sphere(nn.Linear(4, 4), "bias")
    block = Block(geoparam.orthogonal)
    x = torch.randn(2, 4)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x))
    assert torch.allclose(sibling.bias.norm(), torch.tensor(1.0))


# --------------------------------------------------------------------------------------------
# torch.export of eval-mode models.

# Operators that read a device tensor on the host: item() and friends, error checks that look at
# LAPACK's info, data-dependent shapes. Opaque kernels may still synchronise inside: the
# geoparam::expm_skew operator reads one norm on the host by design (to choose the degree and the
# number of squarings), as does torch's own aten.linalg_matrix_exp on CUDA.
HOST_SYNC_OPS = {
    "aten._local_scalar_dense.default",
    "aten.item.default",
    "aten._assert_async.default",
    "aten._assert_async.msg",
    "aten._linalg_check_errors.default",
    "aten.nonzero.default",
    "aten.is_nonzero.default",
    "aten.equal.default",
}


def _called_ops(program: torch.export.ExportedProgram) -> set[str]:
    """Every operator the program calls, in nested graphs and inside ``with_effects`` too."""
    ops = set()
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op != "call_function":
                continue
            ops.add(str(node.target))
            if "with_effects" in str(node.target):
                ops.add(str(node.args[1]))
    return ops


EXPORT_CASES = {
    **{f"{m}-square": (_constraint(m), (4, 4, 4)) for m in MAPS},
    **{f"{m}-tall_and_wide": (_constraint(m), (3, 6, 2)) for m in MAPS},
    "spectral_norm": (geoparam.spectral_norm, (3, 6, 2)),
    "weight_norm": (geoparam.weight_norm, (3, 6, 2)),
}


def _export_model(case: str) -> tuple[nn.Module, Tensor]:
    constrain, sizes = EXPORT_CASES[case]
    model = _stack(constrain, sizes)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "original" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval(), torch.randn(2, sizes[0])


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_eval_model(case):
    model, x = _export_model(case)
    buffers = [b.clone() for b in model.buffers()]
    program = torch.export.export(model, (x,))
    with geoparam.caching(False):
        expected = model(x)
    _assert_close(program.module()(x), expected)
    x2 = torch.randn_like(x)  # the program is a function of its input, not a recording
    with geoparam.caching(False):
        _assert_close(program.module()(x2), model(x2))
    # Eval mode: no buffer (spectral norm's u, v) is written, by the export or by the program.
    assert not program.graph_signature.buffers_to_mutate
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    # The constraint is in the graph, not baked in as a constant weight.
    assert any("original" in name for name in program.state_dict)
    _assert_close(program.run_decompositions().module()(x), expected)


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_exported_graph_has_no_host_sync(case):
    model, x = _export_model(case)
    program = torch.export.export(model, (x,))
    # Checked before and after decomposition to core ATen, where torch.linalg.solve, say, becomes
    # _linalg_solve_ex followed by _linalg_check_errors.
    ops = _called_ops(program) | _called_ops(program.run_decompositions())
    assert not ops & HOST_SYNC_OPS
    assert not {"aten.linalg_solve.default", "aten.linalg_inv.default"} & ops


def test_export_householder_blocks_without_host_sync(monkeypatch):
    monkeypatch.setattr(householder, "_BLOCK", 2)
    test_export_eval_model("householder-square")
    test_exported_graph_has_no_host_sync("householder-square")


def test_export_cayley_lu_route_without_host_sync(monkeypatch):
    monkeypatch.setattr(cayley_kernels, "_LU_FROM", 2)
    test_export_eval_model("cayley-square")
    test_exported_graph_has_no_host_sync("cayley-square")


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_frozen_model(case):
    model, x = _export_model(case)
    with geoparam.caching(False):
        expected = model(x)
    frozen = geoparam.freeze(model)
    program = torch.export.export(frozen, (x,))
    _assert_close(program.module()(x), expected)
    # Nothing of the constraints is left: plain layers.
    assert _called_ops(program) == {"aten.linear.default", "aten.tanh.default"}
    assert not program.graph_signature.buffers_to_mutate


def test_export_strict_square_matrix_exp():
    # Strict export goes through Dynamo, like torch.compile: the custom operator stays one node.
    model, x = _export_model("matrix_exp-square")
    program = torch.export.export(model, (x,), strict=True)
    with geoparam.caching(False):
        _assert_close(program.module()(x), model(x))
    assert "geoparam.expm_skew.default" in _called_ops(program)
