"""Training runs shared by ``test_distributed.py`` and the worker processes it starts.

The test starts two processes that run this file as a script (``python distributed_testing.py
MODE RANK STORE OUT``). They join a gloo process group through a ``FileStore``, train every case
of ``MODE`` (``"ddp"`` or ``"fsdp"``), and save the model's full state (parameters and buffers,
gathered when sharded) with ``torch.save`` at ``OUT``. The test compares the two ranks with each
other and with a single-process run of the same case, which it does itself.

``"fsdp"`` also covers deferred initialisation (a model built on the meta device):
:class:`DeferredCase` initialises it after ``to_empty()`` and *before* ``fully_shard``, and
trains; :func:`probe_init_after_sharding` tries FSDP2's usual order (``fully_shard``, then
``to_empty()``, then initialisation) and records what each step raised (see
``test_distributed.py``).

Every process builds the same model from the same seed and draws the same global batch at each
step. Rank ``r`` trains on its half of the batch with ``loss = mean`` over that half, so the
gradient averaged over the ranks is the gradient of the mean over the whole batch.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations

import geoparam

WORLD_SIZE = 2
STEPS = 5
GLOBAL_BATCH = 8
IN_FEATURES, HIDDEN, OUT_FEATURES = 5, 8, 3
MAPS = ("matrix_exp", "cayley", "householder")
OPTIMIZERS = ("sgd", "adam")
LIBRARIES = {"geoparam": geoparam, "torch": torch_parametrizations}
# How long a rank waits for the other in a collective before it gives up. The test's own
# timeout, which kills both processes, is longer than a whole run.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


@dataclass(frozen=True)
class Case:
    """A training run of :class:`Net`.

    ``library`` constrains the layers; ``caching=False`` runs geoparam under
    ``geoparam.caching(False)``; ``broadcast_buffers`` is DDP's buffer sync at every forward.
    """

    library: str
    orthogonal_map: str
    optimizer: str
    caching: bool = True
    broadcast_buffers: bool = True

    @property
    def id(self) -> str:
        tail = "" if self.caching else "-no_caching"
        tail += "" if self.broadcast_buffers else "-no_broadcast"
        return f"{self.library}-{self.orthogonal_map}-{self.optimizer}{tail}"


@dataclass(frozen=True)
class DeferredCase(Case):
    """A :class:`Case` whose model is built on the meta device, then ``to_empty()`` and ``init``.

    ``init`` is ``"reset_parameters"`` (each module's own, the usual recipe) or
    ``"reset_parametrizations"`` (geoparam's, plus the plain layer's ``reset_parameters()``).
    """

    init: str = "reset_parameters"

    @property
    def id(self) -> str:
        return f"deferred-{super().id}-{self.init}"


@dataclass(frozen=True)
class RecurrentCase:
    """A run of :class:`Recurrent`, which reads each constrained weight twice per forward."""

    library: str
    orthogonal_map: str
    size: int
    caching: bool = True
    steps: int = 30

    @property
    def id(self) -> str:
        tail = "" if self.caching else "-no_caching"
        return f"{self.library}-{self.orthogonal_map}-n{self.size}{tail}"


DDP_CASES = [Case("geoparam", m, o) for m in MAPS for o in OPTIMIZERS] + [
    # Without the sync of buffers at every forward the ranks stay in step only because each rank
    # runs the same power iterations on the same weights.
    Case("geoparam", "matrix_exp", "adam", broadcast_buffers=False),
]
# FSDP2, one read of each weight per forward.
FSDP_CASES = [Case(library, m, o) for library in LIBRARIES for m in MAPS for o in OPTIMIZERS]
# FSDP2, two reads per forward (the recurrent pattern, where a stale reused weight would show):
# geoparam as it is used (reuse on), and the controls: torch's parametrizations, and geoparam
# with reuse off.
# FSDP2 after deferred initialisation: meta build, to_empty(), seeded init, then fully_shard.
# Only geoparam: torch's orthogonal cannot be built on the meta device (see
# probe_init_after_sharding).
INITS = ("reset_parameters", "reset_parametrizations")
DEFERRED_CASES = [DeferredCase("geoparam", m, "adam", init=init) for m in MAPS for init in INITS]
# The seed of every deferred initialisation: the same on every rank and in the single process.
INIT_SEED = 4321
RECURRENT_SIZES = (4, 6, 12)
RECURRENT_CASES = [
    RecurrentCase(library, m, n, caching)
    for library, caching in (("geoparam", True), ("geoparam", False), ("torch", True))
    for m in MAPS
    for n in RECURRENT_SIZES
]


def _linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    # float64 from the start: constraining a float32 layer and then calling .double() would leave
    # the orthogonal base and the power-iteration vectors at float32 accuracy.
    return nn.Linear(in_features, out_features, bias=bias, dtype=torch.float64)


class Net(nn.Module):
    """A float64 MLP with an orthogonal, a spectrally normalised and a weight-normalised layer."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        library = LIBRARIES[case.library]
        self.inp = _linear(IN_FEATURES, HIDDEN)
        self.orth = library.orthogonal(_linear(HIDDEN, HIDDEN), orthogonal_map=case.orthogonal_map)
        self.sn = library.spectral_norm(_linear(HIDDEN, HIDDEN))
        self.wn = library.weight_norm(_linear(HIDDEN, OUT_FEATURES))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.orth(h))
        h = torch.tanh(self.sn(h))
        return self.wn(h)


class TorchNorms(nn.Module):
    """:class:`Net` with torch's parametrizations, less the orthogonal layer (which torch cannot
    build on the meta device)."""

    def __init__(self) -> None:
        super().__init__()
        self.sn = torch_parametrizations.spectral_norm(_linear(HIDDEN, HIDDEN))
        self.wn = torch_parametrizations.weight_norm(_linear(HIDDEN, OUT_FEATURES))

    def forward(self, x: Tensor) -> Tensor:
        return self.wn(torch.tanh(self.sn(x)))


class Recurrent(nn.Module):
    """Two steps of ``h ← tanh(gate(rec(h)))``: ``rec`` orthogonal, ``gate`` weight-normalised."""

    def __init__(self, case: RecurrentCase) -> None:
        super().__init__()
        library = LIBRARIES[case.library]
        n = case.size
        self.rec = library.orthogonal(_linear(n, n, bias=False), orthogonal_map=case.orthogonal_map)
        self.gate = library.weight_norm(_linear(n, n))

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for _ in range(2):
            h = torch.tanh(self.gate(self.rec(h)))
        return h


def build_model(case: Case | RecurrentCase) -> nn.Module:
    """The case's model, float64, seeded: the same in every process (buffers included)."""
    torch.manual_seed(1234)
    return Net(case) if isinstance(case, Case) else Recurrent(case)


def initialise(model: Net, init: str) -> None:
    """Draw every parameter and buffer of ``model`` anew from :data:`INIT_SEED`, as ``init`` says.

    The same draws in every process, and the same whether the model was built normally or on the
    meta device and then ``to_empty()`` (whose memory is arbitrary).
    """
    torch.manual_seed(INIT_SEED)
    if init == "reset_parameters":
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    elif init == "reset_parametrizations":
        assert geoparam.reset_parametrizations(model) == 3
        model.inp.reset_parameters()  # the plain layer, which reset_parametrizations leaves alone
    else:
        raise ValueError(f"unknown init {init!r}")


def build_deferred(case: DeferredCase) -> Net:
    """The case's model: built on the meta device, ``to_empty()`` on the CPU, initialised."""
    with torch.device("meta"):
        model = Net(case)
    model.to_empty(device="cpu")
    initialise(model, case.init)
    return model


def global_batch(step: int, features: int) -> Tensor:
    """The whole batch of ``step``, the same in every process."""
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(GLOBAL_BATCH, features, generator=generator, dtype=torch.float64)


def full_state(module: nn.Module) -> dict[str, Tensor]:
    """Copies of every tensor of ``state_dict()``: parameters and buffers; sharded ones gathered."""
    state = {}
    for key, value in module.state_dict().items():
        if hasattr(value, "full_tensor"):  # a DTensor (FSDP2); gathering is a collective
            value = value.full_tensor()
        state[key] = value.detach().clone()
    return state


def _caching(case: Case | RecurrentCase) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if case.caching else geoparam.caching(False)


def train(
    model: nn.Module, module: nn.Module, case: Case, rank: int, world_size: int
) -> list[dict[str, Tensor]]:
    """``STEPS`` steps of :class:`Net` on this rank's share of each batch; the state after each.

    ``model`` is what is called (a DDP wrapper, an FSDP2-sharded module or the module itself);
    ``module`` is the plain module whose state is recorded.
    """
    if case.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    share = GLOBAL_BATCH // world_size
    rows = slice(rank * share, (rank + 1) * share)
    states = []
    with _caching(case):
        for step in range(STEPS):
            x = global_batch(step, IN_FEATURES)
            target = global_batch(1000 + step, OUT_FEATURES)
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[rows]), target[rows])
            loss.backward()
            optimizer.step()
            states.append(full_state(module))
    return states


def train_recurrent(
    model: nn.Module, case: RecurrentCase, rank: int, world_size: int
) -> dict[str, Tensor]:
    """``case.steps`` steps of :class:`Recurrent`; the state at the end only.

    Nothing is recorded between steps: the allocations between two steps are those of training
    alone, as they are in a real run (which matters here: see ``test_distributed.py``).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    share = GLOBAL_BATCH // world_size
    rows = slice(rank * share, (rank + 1) * share)
    with _caching(case):
        for step in range(case.steps):
            x = global_batch(step, case.size)
            optimizer.zero_grad()
            model(x[rows]).square().mean().backward()
            optimizer.step()
    return full_state(model)


def train_single_process(case: Case | RecurrentCase):
    """The reference: one process, the whole global batch at each step.

    A :class:`DeferredCase`'s reference is built normally (not on the meta device) and given the
    same initialisation; its states start with the state after initialisation.
    """
    model = build_model(case)
    if isinstance(case, DeferredCase):
        initialise(model, case.init)
        return [full_state(model), *train(model, model, case, rank=0, world_size=1)]
    if isinstance(case, Case):
        return train(model, model, case, rank=0, world_size=1)
    return train_recurrent(model, case, rank=0, world_size=1)


def _ddp(case: Case, rank: int) -> list[dict[str, Tensor]]:
    from torch.nn.parallel import DistributedDataParallel

    module = build_model(case)
    # torch 2.13 renamed broadcast_buffers (now deprecated) to forward_sync_buffers.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        options = {"forward_sync_buffers": case.broadcast_buffers}
    else:  # pragma: no cover - older torch
        options = {"broadcast_buffers": case.broadcast_buffers}
    model = DistributedDataParallel(module, **options)
    return train(model, module, case, rank, WORLD_SIZE)


def _shard(module: nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    # Each constrained layer is its own FSDP unit: its parameters (the parametrizations'
    # `original` tensors and the bias) are sharded, all-gathered before its forward and freed
    # after; the root takes the plain input layer.
    for layer in (module.orth, module.sn, module.wn):
        fully_shard(layer)
    fully_shard(module)


def _fsdp(case: Case, rank: int) -> list[dict[str, Tensor]]:
    module = build_model(case)
    _shard(module)
    return train(module, module, case, rank, WORLD_SIZE)


def _fsdp_deferred(case: DeferredCase, rank: int) -> list[dict[str, Tensor]]:
    """Meta build, ``to_empty()``, seeded initialisation, then FSDP2: the state after
    initialisation (gathered from the shards), then after each step."""
    module = build_deferred(case)
    _shard(module)
    return [full_state(module), *train(module, module, case, rank, WORLD_SIZE)]


def _outcome(action: Callable[[], object]) -> dict[str, object]:
    """What ``action()`` did: ``{"raised": None}``, or the exception's type name, its message and
    where it was raised (``file:function`` of each frame of its traceback, innermost last)."""
    try:
        action()
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        return {
            "raised": type(error).__name__,
            "message": str(error),
            "where": [f"{Path(frame.filename).name}:{frame.name}" for frame in frames],
        }
    return {"raised": None}


def _meta_sharded(build: Callable[[], nn.Module], layers: tuple[str, ...]) -> nn.Module:
    """FSDP2's deferred initialisation up to the init: meta build, fully_shard, to_empty()."""
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        model = build()
    for name in layers:
        fully_shard(getattr(model, name))
    fully_shard(model)
    return model.to_empty(device="cpu")


def _assign_plain(layer: nn.Module) -> None:
    # A plain tensor of the weight's global shape: what a reset assigns through the constraint.
    layer.weight = torch.randn(layer.out_features, layer.in_features, dtype=torch.float64)


def _local_bits(tensor: Tensor) -> Tensor:
    # This rank's shard, bit for bit (to_empty() leaves arbitrary memory, NaNs included).
    return tensor.to_local().detach().clone().view(torch.int64)


def probe_init_after_sharding() -> dict[str, dict[str, object]]:
    """FSDP2's own order for deferred initialisation, attempted step by step: the outcomes.

    Meta build, ``fully_shard`` (layers, then the root), ``to_empty(device="cpu")``, then
    initialisation. Every failure is raised before any collective, on both ranks alike, so each
    attempt is independent of the others. Nothing is trained: see ``test_distributed.py`` for
    what the outcomes are and why.
    """
    outcomes: dict[str, dict[str, object]] = {}

    # geoparam: a fresh model for each attempt, since a failed one may leave a layer half-reset.
    def geoparam_model() -> nn.Module:
        return _meta_sharded(
            lambda: Net(Case("geoparam", "matrix_exp", "adam")), ("orth", "sn", "wn")
        )

    for layer in ("orth", "sn", "wn"):
        model = geoparam_model()
        outcomes[f"geoparam {layer}.reset_parameters()"] = _outcome(
            getattr(model, layer).reset_parameters
        )
    model = geoparam_model()
    outcomes["geoparam reset_parametrizations(model)"] = _outcome(
        lambda: geoparam.reset_parametrizations(model)
    )
    model = geoparam_model()
    outcomes["geoparam orth.weight = tensor"] = _outcome(lambda: _assign_plain(model.orth))

    # torch's parametrizations.
    with torch.device("meta"):
        outcomes["torch orthogonal() on meta"] = _outcome(
            lambda: torch_parametrizations.orthogonal(_linear(HIDDEN, HIDDEN))
        )

    def torch_model() -> nn.Module:
        return _meta_sharded(TorchNorms, ("sn", "wn"))

    model = torch_model()
    outcomes["torch sn.reset_parameters()"] = _outcome(model.sn.reset_parameters)
    originals = model.wn.parametrizations.weight
    before = [_local_bits(originals.original0), _local_bits(originals.original1)]
    outcomes["torch wn.reset_parameters()"] = _outcome(model.wn.reset_parameters)
    after = [_local_bits(originals.original0), _local_bits(originals.original1)]
    outcomes["torch wn.reset_parameters()"]["originals_unchanged"] = all(
        torch.equal(a, b) for a, b in zip(before, after, strict=True)
    )
    for name in ("sn", "wn"):
        layer = getattr(torch_model(), name)
        outcomes[f"torch {name}.weight = tensor"] = _outcome(
            lambda layer=layer: _assign_plain(layer)
        )
    return outcomes


def _fsdp_recurrent(case: RecurrentCase, rank: int) -> dict[str, Tensor]:
    from torch.distributed.fsdp import fully_shard

    # One FSDP unit: one reduce-scatter per backward, so that the ranks can never disagree
    # about the order of collectives, whatever a stale weight does to the autograd graph.
    model = fully_shard(build_model(case))
    return train_recurrent(model, case, rank, WORLD_SIZE)


def run(mode: str, rank: int) -> dict[str, object]:
    """Every case of ``mode`` on this rank: ``{case id: states}``."""
    if mode == "ddp":
        return {case.id: _ddp(case, rank) for case in DDP_CASES}
    if mode == "fsdp":
        results: dict[str, object] = {case.id: _fsdp(case, rank) for case in FSDP_CASES}
        results.update({case.id: _fsdp_recurrent(case, rank) for case in RECURRENT_CASES})
        results.update({case.id: _fsdp_deferred(case, rank) for case in DEFERRED_CASES})
        results["init-after-sharding"] = probe_init_after_sharding()
        return results
    raise ValueError(f"unknown mode {mode!r}")


def main(mode: str, rank: int, store_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD_SIZE)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=WORLD_SIZE, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        results = run(mode, rank)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, out_path)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
