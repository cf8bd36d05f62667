"""Training runs shared by ``test_distributed.py`` and the worker processes it starts.

The test starts two processes that run this file as a script (``python distributed_testing.py
MODE RANK STORE OUT``). They join a gloo process group through a ``FileStore``, train every case
of ``MODE`` (``"ddp"`` or ``"fsdp"``), and save the model's full state (parameters and buffers,
gathered when sharded) with ``torch.save`` at ``OUT``. The test compares the two ranks with each
other and with a single-process run of the same case, which it does itself.

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
from dataclasses import dataclass

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
    """The reference: one process, the whole global batch at each step."""
    model = build_model(case)
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


def _fsdp(case: Case, rank: int) -> list[dict[str, Tensor]]:
    from torch.distributed.fsdp import fully_shard

    module = build_model(case)
    # Each constrained layer is its own FSDP unit: its parameters (the parametrizations'
    # `original` tensors and the bias) are sharded, all-gathered before its forward and freed
    # after; the root takes the plain input layer.
    for layer in (module.orth, module.sn, module.wn):
        fully_shard(layer)
    fully_shard(module)
    return train(module, module, case, rank, WORLD_SIZE)


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
