"""Constrained layers under data-parallel training: DDP and FSDP2, gloo, two CPU processes.

Each mode starts two worker processes once (``distributed_testing.py`` run as a script), which
train every case of the mode and save the model's state after each step; the tests below compare
the ranks with each other and with a single-process run on the whole batch, which they do here.

What they show, on torch 2.13 (CPU build):

* DDP: the ranks hold bit-identical parameters and buffers (spectral norm's ``_u``, ``_v``, the
  orthogonal ``base``) after every step, and these equal the single-process run to rounding
  (measured: 3e-16). With or without DDP's buffer sync at every forward: each rank runs the same
  power iteration on the same weights, as the single process does on the whole batch.
* FSDP2 (``fully_shard``) works on CPU with gloo, for torch's parametrizations and for
  geoparam's, and matches the single-process run in the same way, also when a weight is read
  twice per forward (``test_fsdp2_weight_read_twice_per_forward``): geoparam turns its automatic
  reuse of weights off in a process that uses FSDP2, which refills parameters in place without
  a version bump.
* FSDP2 after deferred initialisation (a model built on the meta device), in this order: meta
  build, ``to_empty()``, seeded initialisation (each module's ``reset_parameters()``, or
  ``geoparam.reset_parametrizations``), then ``fully_shard``: works. The ranks agree bit for bit,
  the constraints hold at initialisation and after training, and every state equals a model
  built normally, initialised from the same seed and trained in one process.
* FSDP2's own order, ``fully_shard`` *before* ``to_empty()`` and the initialisation, fails, for
  geoparam and for torch's parametrizations alike (``test_fsdp2_init_after_sharding_*``): once
  sharded, a parametrized tensor cannot be assigned (torch's ``parametrize`` swaps the sharded
  DTensor ``original`` with a plain tensor, which ``swap_tensors`` refuses), and torch's own
  ``reset_parameters()`` fails or initialises a temporary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_testing as dt
from distributed_testing import Case, DeferredCase, RecurrentCase

WORKER = Path(dt.__file__)
WORKER_TIMEOUT = 180  # seconds, for a whole spawn (measured: ~8 s for ddp, ~20 s for fsdp)
TOLERANCE = 1e-10


def _launch(mode: str, directory: Path) -> list[dict]:
    """Run ``mode``'s cases in two processes; each rank's results, or a failure with its log."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    logs = [directory / f"rank{rank}.log" for rank in range(dt.WORLD_SIZE)]
    outs = [directory / f"rank{rank}.pt" for rank in range(dt.WORLD_SIZE)]
    processes = []
    try:
        for rank in range(dt.WORLD_SIZE):
            with open(logs[rank], "w") as log:
                command = [sys.executable, str(WORKER), mode, str(rank), str(directory / "store")]
                processes.append(
                    subprocess.Popen(
                        [*command, str(outs[rank])], stdout=log, stderr=subprocess.STDOUT, env=env
                    )
                )
        deadline = time.monotonic() + WORKER_TIMEOUT
        for process in processes:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    codes = [process.returncode for process in processes]
    if codes != [0] * dt.WORLD_SIZE:
        text = "\n".join(
            f"--- rank {r} ---\n{log.read_text()[-4000:]}" for r, log in enumerate(logs)
        )
        pytest.fail(f"{mode} workers exited with {codes} (or timed out):\n{text}")
    return [torch.load(out) for out in outs]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _launch("ddp", tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _launch("fsdp", tmp_path_factory.mktemp("fsdp"))


def _assert_ranks_identical(per_rank: list, label: str) -> None:
    first, *others = per_rank
    for other in others:
        assert other.keys() == first.keys()
        for key in first:
            assert torch.equal(other[key], first[key]), f"{label}: ranks differ in {key}"


def _assert_matches(actual: dict, expected: dict, label: str) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key],
            value,
            rtol=TOLERANCE,
            atol=TOLERANCE,
            msg=lambda m, k=key: f"{label}, {k}: {m}",
        )


def _check_recorded_state(states: list[dict]) -> None:
    """The comparisons cover the buffers, and training moved them: they are not vacuous."""
    keys = states[0].keys()
    for key in (
        "orth.parametrizations.weight.original",
        "orth.parametrizations.weight.0.base",
        "sn.parametrizations.weight.0._u",
        "sn.parametrizations.weight.0._v",
        "wn.parametrizations.weight.original0",
    ):
        assert key in keys
    for key in ("sn.parametrizations.weight.0._u", "orth.parametrizations.weight.original"):
        assert not torch.equal(states[0][key], states[-1][key]), f"{key} did not change"


def _check_constraints(case: Case, state: dict, sigma_slack: float = 1e-2) -> None:
    """The trained weights, read in eval mode from the final state, satisfy their constraints."""
    model = dt.build_model(case)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        W = model.orth.weight
        eye = torch.eye(W.size(-1), dtype=W.dtype)
        assert torch.linalg.matrix_norm(W.mT @ W - eye) < 1e-12
        sigma = torch.linalg.matrix_norm(model.sn.weight, 2)
        # W / (uᵀ W v) with unit u, v: sigma >= 1; power iteration trails the weights a little.
        assert 1 - 1e-12 <= sigma < 1 + sigma_slack
        g = state["wn.parametrizations.weight.original0"]
        torch.testing.assert_close(model.wn.weight.norm(dim=1, keepdim=True), g)


# DDP


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DDP_CASES, ids=lambda case: case.id)
def test_ddp_ranks_identical_after_every_step(ddp_results: list[dict], case: Case) -> None:
    states = [results[case.id] for results in ddp_results]
    assert all(len(s) == dt.STEPS for s in states)
    _check_recorded_state(states[0])
    for step in range(dt.STEPS):
        _assert_ranks_identical([s[step] for s in states], f"{case.id}, step {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DDP_CASES, ids=lambda case: case.id)
def test_ddp_matches_single_process(ddp_results: list[dict], case: Case) -> None:
    reference = dt.train_single_process(case)
    for step, expected in enumerate(reference):
        _assert_matches(ddp_results[0][case.id][step], expected, f"{case.id}, step {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DDP_CASES, ids=lambda case: case.id)
def test_ddp_constraints_hold_after_training(ddp_results: list[dict], case: Case) -> None:
    _check_constraints(case, ddp_results[0][case.id][-1])


# FSDP2


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.FSDP_CASES, ids=lambda case: case.id)
def test_fsdp2_ranks_identical_after_every_step(fsdp_results: list[dict], case: Case) -> None:
    states = [results[case.id] for results in fsdp_results]
    assert all(len(s) == dt.STEPS for s in states)
    _check_recorded_state(states[0])
    for step in range(dt.STEPS):
        _assert_ranks_identical([s[step] for s in states], f"{case.id}, step {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.FSDP_CASES, ids=lambda case: case.id)
def test_fsdp2_matches_single_process(fsdp_results: list[dict], case: Case) -> None:
    reference = dt.train_single_process(case)
    for step, expected in enumerate(reference):
        _assert_matches(fsdp_results[0][case.id][step], expected, f"{case.id}, step {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.FSDP_CASES, ids=lambda case: case.id)
def test_fsdp2_constraints_hold_after_training(fsdp_results: list[dict], case: Case) -> None:
    _check_constraints(case, fsdp_results[0][case.id][-1])


# Why this case matters. geoparam's reuse cache keys a constrained weight on the identity,
# version counter and data_ptr() of the parameter it is computed from. FSDP2 keeps one unsharded
# nn.Parameter object per parameter; before each forward it all-gathers the new values into it
# under torch.autograd._unsafe_preserve_version_counter (so the version stays at 0 forever), into
# storage it freed after the previous backward and re-allocates now, often at the same address.
# A key that matched the previous step's would give a weight read twice per forward (cached as
# reusable) the previous step's values: before geoparam turned reuse off under FSDP2, all nine
# runs here deviated from the single process by 7e-5 to 1e-1 (and a stale weight on one rank
# could reorder reduce-scatters: a gloo abort "Received data size doesn't match expected size").
_RECURRENT_GEOPARAM = [c for c in dt.RECURRENT_CASES if c.library == "geoparam" and c.caching]


def _check_recurrent(fsdp_results: list[dict], cases: list[RecurrentCase]) -> None:
    failures = []
    for case in cases:
        _assert_ranks_identical([results[case.id] for results in fsdp_results], case.id)
        expected = dt.train_single_process(case)
        actual = fsdp_results[0][case.id]
        error = max(float((actual[k] - v).abs().max()) for k, v in expected.items())
        if error > TOLERANCE:
            failures.append(f"{case.id}: max deviation {error:.1e}")
    assert not failures, "differs from the single-process run: " + "; ".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("library", "caching"),
    [("torch", True), ("geoparam", False)],
    ids=["torch", "geoparam-no_caching"],
)
def test_fsdp2_weight_read_twice_per_forward_controls(
    fsdp_results: list[dict], library: str, caching: bool
) -> None:
    """The controls: torch's parametrizations, and geoparam with reuse off."""
    cases = [c for c in dt.RECURRENT_CASES if (c.library, c.caching) == (library, caching)]
    assert len(cases) == len(dt.MAPS) * len(dt.RECURRENT_SIZES)
    _check_recurrent(fsdp_results, cases)


@pytest.mark.slow
def test_fsdp2_weight_read_twice_per_forward(fsdp_results: list[dict]) -> None:
    """geoparam as used (reuse on), the recurrent pattern: 30 steps equal the single process.

    Nine runs (three maps, three sizes), so that a stale weight cannot hide behind one allocator
    coincidence.
    """
    _check_recurrent(fsdp_results, _RECURRENT_GEOPARAM)


# FSDP2 and deferred initialisation (a model built on the meta device)


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DEFERRED_CASES, ids=lambda case: case.id)
def test_fsdp2_after_deferred_init_ranks_identical(
    fsdp_results: list[dict], case: DeferredCase
) -> None:
    """Meta build, ``to_empty()``, seeded init, ``fully_shard``: the ranks agree at every state."""
    states = [results[case.id] for results in fsdp_results]
    assert all(len(s) == 1 + dt.STEPS for s in states)  # after initialisation, then each step
    _check_recorded_state(states[0])
    for step in range(1 + dt.STEPS):
        _assert_ranks_identical([s[step] for s in states], f"{case.id}, state {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DEFERRED_CASES, ids=lambda case: case.id)
def test_fsdp2_after_deferred_init_matches_single_process(
    fsdp_results: list[dict], case: DeferredCase
) -> None:
    """The initialisation and every step equal a single process that built the model normally
    (so nothing of ``to_empty()``'s arbitrary memory survives the initialisation: buffers
    included) and initialised it from the same seed."""
    reference = dt.train_single_process(case)
    assert len(reference) == 1 + dt.STEPS
    for step, expected in enumerate(reference):
        _assert_matches(fsdp_results[0][case.id][step], expected, f"{case.id}, state {step}")


@pytest.mark.slow
@pytest.mark.parametrize("case", dt.DEFERRED_CASES, ids=lambda case: case.id)
def test_fsdp2_after_deferred_init_constraints_hold(
    fsdp_results: list[dict], case: DeferredCase
) -> None:
    """Orthogonal, ``σ ≈ 1`` and ``‖W_i‖ = g_i``: after initialisation and after training."""
    states = fsdp_results[0][case.id]
    # At initialisation the singular vectors were warmed up by 15 power iterations (measured:
    # σ - 1 = 4e-6 and 1e-9 for the two draws).
    _check_constraints(case, states[0], sigma_slack=1e-4)
    # One power iteration per step trails Adam at lr 0.05 from these draws more than from the
    # normally built model's (measured: σ = 1.068 after the first step, 1.023 after the fifth,
    # and the same in the single process, which the test above matches to 1e-10).
    _check_constraints(case, states[-1], sigma_slack=5e-2)


# FSDP2's own order of deferred initialisation: meta build, fully_shard (layers, then root),
# to_empty(device="cpu"), then the initialisation. It fails, for geoparam and for torch's
# parametrizations alike; these tests pin down exactly how (the worker records each attempt's
# exception, see distributed_testing.probe_init_after_sharding), so that a change in torch or
# geoparam that makes it work, or fail differently, shows here.
#
# The root cause is torch's, not geoparam's. After fully_shard a parametrization's `original` is
# a sharded DTensor parameter. Any assignment `layer.weight = value` goes through
# ParametrizationList.right_inverse -> parametrize._maybe_set(original, value), which for a
# tensor subclass calls torch.utils.swap_tensors(original, Parameter(value)), and that refuses a
# plain tensor: "Cannot swap t1 and t2 if they have different slots" (DTensor has __slots__ that
# a plain Parameter lacks). geoparam's re-initialisation assigns through the constraint, so it
# hits this; torch's parametrizations hit it on the same assignment.
#
# geoparam's re-initialisation therefore refuses sharded tensors up front, with a message that
# says what to do instead. (It finds the module's plain class under FSDP2's derived class,
# FSDP<ParametrizedLinear>, by walking the MRO.)
#
# What works instead is the order of test_fsdp2_after_deferred_init_*: initialise, then shard.

_SWAP = {
    "raised": "RuntimeError",
    "message": "Cannot swap t1 and t2 if they have different slots",
    # The innermost frames: torch's parametrize assigning the value to the sharded original.
    "where": [
        "parametrize.py:set_original",
        "parametrize.py:right_inverse",
        "parametrize.py:_maybe_set",
        "__init__.py:swap_tensors",
    ],
}


def _assert_raised(outcome: dict, raised: str, message: str, where: list[str]) -> None:
    assert outcome["raised"] == raised, outcome
    assert message in outcome["message"], outcome
    assert outcome["where"][-len(where) :] == where, outcome


def _probes(fsdp_results: list[dict]) -> list[dict]:
    probes = [results["init-after-sharding"] for results in fsdp_results]
    assert all(probe == probes[0] for probe in probes[1:]), "the ranks failed differently"
    return probes


@pytest.mark.slow
def test_fsdp2_init_after_sharding_geoparam_fails(fsdp_results: list[dict]) -> None:
    for probe in _probes(fsdp_results):
        # geoparam refuses to re-initialise sharded tensors, with a message saying what to do
        # instead (initialise, then shard): torch's parametrize could not assign the values
        # anyway (its swap_tensors refuses a DTensor original, as the plain assignment shows).
        for attempt in (
            "geoparam orth.reset_parameters()",
            "geoparam sn.reset_parameters()",
            "geoparam wn.reset_parameters()",
            "geoparam reset_parametrizations(model)",
        ):
            assert probe[attempt]["raised"] == "RuntimeError", probe[attempt]
            assert "are sharded (DTensor" in probe[attempt]["message"]
            assert "before sharding" in probe[attempt]["message"]
            assert "_registration.py:reinitialize" in probe[attempt]["where"]
        # The property of geoparam's shared class (_registration.py) hands the value to the
        # same ParametrizationList.right_inverse as torch's own property does.
        _assert_raised(
            probe["geoparam orth.weight = tensor"],
            **{**_SWAP, "where": ["_registration.py:set", *_SWAP["where"][1:]]},
        )


@pytest.mark.slow
def test_fsdp2_init_after_sharding_torch_fails_too(fsdp_results: list[dict]) -> None:
    for probe in _probes(fsdp_results):
        # torch's orthogonal cannot even be built on the meta device: its right_inverse asks
        # whether the (meta) weight is already orthogonal, a data-dependent check.
        _assert_raised(
            probe["torch orthogonal() on meta"],
            "RuntimeError",
            "Tensor.item() cannot be called on meta tensors",
            [
                "parametrizations.py:right_inverse",
                "parametrizations.py:_is_orthogonal",
                "_device.py:__torch_function__",
                "_meta_registrations.py:meta_local_scalar_dense",
            ],
        )
        # torch's reset_parameters() on a parametrized Linear initialises `self.weight`, a
        # temporary computed from the originals. For spectral norm, computing it outside the
        # forward runs the power iteration on the sharded weight with the unsharded vector
        # buffers (FSDP2 shards parameters only):
        _assert_raised(
            probe["torch sn.reset_parameters()"],
            "RuntimeError",
            "aten.mv.default got mixed torch.Tensor and DTensor",
            ["parametrizations.py:_power_method"],
        )
        # For weight norm it returns, having initialised the temporary only: the originals keep
        # to_empty()'s arbitrary memory, bit for bit.
        assert probe["torch wn.reset_parameters()"] == {"raised": None, "originals_unchanged": True}
        # Assigning a value, which is how a parametrized weight is set, fails as geoparam's does.
        _assert_raised(probe["torch sn.weight = tensor"], **_SWAP)
        _assert_raised(probe["torch wn.weight = tensor"], **_SWAP)
