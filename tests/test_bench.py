"""The benchmark harness: its interleaved timing (order, warm-up, budget) on a fake clock, a
--quick run through the CLI, and its float64 reference for tall maps."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmark_loading import BENCHMARKS, import_with_siblings, load_standalone

pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "run.py").is_file(), reason="needs the source checkout's benchmarks/"
)

# Rows covering each mode and each kind of contender: a tall map with geotorch, a norm with
# geotorch n/a, the train step.
# The compiled row is left out: compiling three libraries' losses takes most of a minute.
FILTERS = ["matrix_exp 64x8", "spectral_norm Linear", "RNN", "MLP"]
EXPECTED_ROWS = {
    ("orthogonal matrix_exp 64x8", "forward"),
    ("orthogonal matrix_exp 64x8", "fwd+bwd"),
    ("spectral_norm Linear(32, 32)", "fwd+bwd"),
    ("orthogonal RNN matrix_exp h=16 T=4 B=8 (Adam)", "train step"),
    ("orthogonal RNN cell h=16 T=6, weight read at every step (Adam)", "train step"),
    ("orthogonal RNN cell h=16 T=6, weight read once per step (Adam)", "train step"),
    ("orthogonal MLP 2 x Linear(16) batch 8, parametrized", "eval forward"),
    ("orthogonal MLP 2 x Linear(16) batch 8, frozen (plain weights)", "eval forward"),
}


def _load_cases():
    return load_standalone("bench_cases.py")


def _load_timing():
    return import_with_siblings("bench_timing")


class _FakeMachine:
    """Calls that take a set number of fake seconds each, and the log of who was called when."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.now = 0.0
        self.costs = costs
        self.called: list[str] = []

    def clock(self) -> float:
        return self.now

    def calls(self) -> dict[str, object]:
        def call(library: str):
            def run() -> str:
                self.now += self.costs[library]
                self.called.append(library)
                return f"{library} output {self.called.count(library)}"

            return run

        return {library: call(library) for library in self.costs}


def _measure(costs: dict[str, float], reps: int, budget_s: float, warmup: int = 3):
    timing = _load_timing()
    machine = _FakeMachine(costs)
    first: dict[str, object] = {}
    result = timing.measure_interleaved(
        machine.calls(),
        reps,
        budget_s,
        on_first=first.__setitem__,
        log=lambda message: None,
        warmup=warmup,
        clock=machine.clock,
    )
    return result, machine.called, first


def test_call_order_rotates_every_round():
    order = _load_timing().call_order
    libraries = ["geoparam", "torch", "geotorch"]
    assert order(libraries, 0) == libraries
    assert order(libraries, 1) == ["torch", "geotorch", "geoparam"]
    assert order(libraries, 2) == ["geotorch", "geoparam", "torch"]
    assert order(libraries, 3) == libraries
    assert order([], 5) == []


def test_rounds_rotate_and_warm_up_before_timing():
    costs = {"geoparam": 1.0, "torch": 2.0, "geotorch": 3.0}
    timings, called, first = _measure(costs, reps=4, budget_s=100.0)
    libraries = list(costs)
    rounds = [called[i : i + 3] for i in range(0, len(called), 3)]
    assert len(rounds) == 3 + 4  # warm-up rounds, then timed rounds
    for r, round_ in enumerate(rounds):
        assert round_ == libraries[r % 3 :] + libraries[: r % 3]
    # Over the rounds, every library is called first (and last) equally often, give or take one.
    firsts = [round_[0] for round_ in rounds]
    assert max(map(firsts.count, libraries)) - min(map(firsts.count, libraries)) <= 1
    assert first == {library: f"{library} output 1" for library in libraries}
    for library, cost in costs.items():
        timing = timings[library]
        assert timing.warmup_s == [cost] * 3
        assert timing.times_s == [cost] * 4
        assert (timing.reps, timing.cold, timing.capped) == (4, False, False)
        assert timing.median_s == timing.min_s == cost


def test_median_and_min_are_over_the_timed_calls_only():
    timing = _load_timing().Timing(
        reps_requested=4, warmup_s=[9.0, 8.0, 7.0], times_s=[3.0, 1.0, 5.0, 2.0]
    )
    assert (timing.median_s, timing.min_s, timing.first_s) == (2.5, 1.0, 9.0)


def test_a_cold_call_past_the_budget_is_the_only_measurement():
    timings, called, _ = _measure({"geoparam": 1.0, "torch": 7.0}, reps=3, budget_s=5.0)
    torch_timing = timings["torch"]
    assert called.count("torch") == 1
    assert (torch_timing.cold, torch_timing.capped, torch_timing.reps) == (True, True, 1)
    assert torch_timing.median_s == torch_timing.min_s == 7.0
    # The other library goes on alone, undisturbed by the slow one's exit.
    assert timings["geoparam"].reps == 3
    assert len(timings["geoparam"].warmup_s) == 3


def test_the_budget_cuts_warm_up_and_timing_separately():
    # 2 s calls in a 3 s budget: two warm-up calls (4 s), then two timed ones (4 s).
    timings, called, _ = _measure({"geoparam": 0.5, "torch": 2.0}, reps=15, budget_s=3.0)
    torch_timing = timings["torch"]
    assert len(torch_timing.warmup_s) == 2
    assert torch_timing.times_s == [2.0, 2.0]
    assert (torch_timing.cold, torch_timing.capped, torch_timing.reps) == (False, True, 2)
    # 0.5 s calls: all three warm-ups, then six timed calls reach the budget.
    assert len(timings["geoparam"].warmup_s) == 3
    assert timings["geoparam"].reps == 6
    assert called.count("torch") == 4


def test_a_failing_call_is_reported_and_the_others_go_on():
    timing = _load_timing()
    messages = []

    def broken() -> None:
        raise RuntimeError("singular")

    timings = timing.measure_interleaved(
        {"geoparam": lambda: 1, "torch": broken},
        reps=2,
        budget_s=10.0,
        on_first=lambda library, output: None,
        log=messages.append,
    )
    assert timings["torch"].error == "RuntimeError: singular"
    assert timings["torch"].reps == 0
    assert any("singular" in message for message in messages)
    assert timings["geoparam"].reps == 2 and timings["geoparam"].error is None


@pytest.mark.parametrize(("reps", "warmup"), [(0, 3), (2, 0)])
def test_measure_rejects_no_calls(reps, warmup):
    with pytest.raises(ValueError, match="reps >= 1 and warmup >= 1"):
        _load_timing().measure_interleaved({}, reps, 1.0, print, print, warmup=warmup)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "geoparam", "bench", "--quick", "--threads", "1"]
    for substring in FILTERS:
        command += ["--filter", substring]
    completed = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout, json.loads((out / "bench.json").read_text()), out


def test_quick_run_json(quick_run):
    _, report, _ = quick_run
    assert {"torch", "geoparam", "threads", "cpu"} <= report["machine"].keys()
    assert report["machine"]["threads"] == 1
    assert report["settings"]["quick"] is True
    rows = {(result["case"], result["mode"]) for result in report["results"]}
    assert rows == EXPECTED_ROWS

    for result in report["results"]:
        libraries = result["libraries"]
        assert set(libraries) == {"geoparam", "torch", "geotorch"}
        assert result["speedup_vs_torch"] > 0
        assert result["speedup_vs_torch_min"] > 0
        for name, entry in libraries.items():
            if "na" in entry:
                assert name == "geotorch"
                continue
            assert entry["error"] is None, (result["case"], name, entry["error"])
            assert 1 <= entry["reps"] <= report["settings"]["reps"]
            assert 1 <= entry["warmup_calls"] <= report["settings"]["warmup"] == 3
            assert len(entry["warmup_ms"]) == entry["warmup_calls"]
            if entry["times_ms"]:
                assert entry["min_ms"] == min(entry["times_ms"])
            else:  # a cold call past the budget is its own median and min
                assert entry["cold"] and entry["min_ms"] == entry["first_call_ms"]
            times = [entry["median_ms"], *entry["times_ms"]]
            assert all(math.isfinite(t) and t > 0 for t in times)
            if result["family"] == "orthogonal":
                assert entry["orth_error"] < 1e-4
            if result["mode"] == "fwd+bwd":
                assert entry["grad_rel_error"] < 1e-3
            if result["mode"] == "train step":
                assert math.isfinite(entry["first_loss"])
        if result["family"] == "spectral_norm":
            assert "na" in libraries["geotorch"]


def test_quick_run_prints_the_written_table(quick_run):
    stdout, report, out = quick_run
    assert stdout == (out / "bench.md").read_text()
    assert "| case | mode | geoparam ms median (min) | torch ms median (min) |" in stdout
    assert stdout.count("\n| orthogonal matrix_exp 64x8 |") == 2
    header = next(line for line in stdout.splitlines() if line.startswith("| case |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    table = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(columns) and cells[0] != "case":
            table[cells[0], cells[1]] = dict(zip(columns, cells, strict=True))
    assert len(table) == len(report["results"])
    for result in report["results"]:
        row = table[result["case"], result["mode"]]
        # Every cell says how many timed calls it is over, in library order.
        calls = row["timed calls geoparam / torch / geotorch"].split(" / ")
        for library, count in zip(("geoparam", "torch", "geotorch"), calls, strict=True):
            entry = result["libraries"][library]
            if "na" in entry:
                assert count == "–"
                continue
            assert count.rstrip("†*") == str(entry["reps"])
            assert entry["min_ms"] <= entry["median_ms"]
            # median (min) when more than one call was timed
            cell = row[f"{library} ms median (min)"]
            assert ("(" in cell) == (entry["reps"] > 1), cell
    assert "after 3 untimed warm-up calls each" in stdout
    assert "round r starts with the (r mod L)-th" in stdout


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("shape", [(40, 6), (10, 6), (3, 12, 4)])
def test_low_rank_reference_is_torch_map(orthogonal_map, shape):
    # The float64 gradient reference for very tall weights must be torch's n x n map exactly.
    cases = _load_cases()
    torch.manual_seed(0)
    X = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    G = torch.randn(shape, dtype=torch.float64)
    n, k = shape[-2:]
    padded = torch.cat([X.tril(), X.new_zeros(*shape[:-2], n, n - k)], dim=-1)
    A = padded - padded.mT
    if orthogonal_map == "matrix_exp":
        expected = torch.matrix_exp(A)[..., :k]
    else:
        eye = torch.eye(n, dtype=A.dtype)
        expected = torch.linalg.solve(eye - 0.5 * A, eye + 0.5 * A)[..., :k]
    actual = cases.tall_map_low_rank(X, orthogonal_map)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    (grad_expected,) = torch.autograd.grad((expected * G).sum(), X)
    (grad_actual,) = torch.autograd.grad((actual * G).sum(), X)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=1e-9, atol=1e-9)
    assert torch.allclose(cases.skew_spectral_norm(X), torch.linalg.matrix_norm(A, ord=2))
