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
from geoparam.compat import geotorch as compat_geotorch

pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "run.py").is_file(), reason="needs the source checkout's benchmarks/"
)

# Rows covering each mode and each kind of contender: a tall map with geotorch, a norm with
# geotorch n/a, the train step, two catalogue constraints (torch n/a; one with a right inverse).
# A tall weight at scale (geoparam only; its register mode and peak memory). The compiled row
# is left out: compiling three libraries' losses takes most of a minute.
FILTERS = [
    "matrix_exp 64x8",
    "spectral_norm Linear",
    "RNN",
    "MLP",
    "sln 16x16",
    "alpha_stable 8x8",
    "Embedding(1000, 8)",
    "8x8 batch 4",
]
EXPECTED_ROWS = {
    ("orthogonal matrix_exp 64x8", "forward"),
    ("orthogonal matrix_exp 64x8", "fwd+bwd"),
    ("spectral_norm Linear(32, 32)", "fwd+bwd"),
    ("orthogonal RNN matrix_exp h=16 T=4 B=8 (Adam)", "train step"),
    ("orthogonal RNN cell h=16 T=6, weight read at every step (Adam)", "train step"),
    ("orthogonal RNN cell h=16 T=6, weight read once per step (Adam)", "train step"),
    ("orthogonal MLP 2 x Linear(16) batch 8, parametrized", "eval forward"),
    ("orthogonal MLP 2 x Linear(16) batch 8, frozen (plain weights)", "eval forward"),
    ("sln 16x16", "forward"),
    ("sln 16x16", "fwd+bwd"),
    ("alpha_stable 8x8", "forward"),
    ("alpha_stable 8x8", "fwd+bwd"),
    ("alpha_stable 8x8", "right inverse"),
    ("orthogonal Embedding(1000, 8), default arguments", "register"),
    ("orthogonal Embedding(1000, 8), default arguments", "fwd+bwd"),
    ("Conv2d(4, 4, 3) 8x8 batch 4, no constraint", "layer forward"),
    ("Conv2d(4, 4, 3) 8x8 batch 4, spectral_norm (train mode)", "layer forward"),
    ("Conv2d(4, 4, 3) 8x8 batch 4, no constraint", "layer fwd+bwd"),
    ("OrthogonalConv2d(4, 4, 3) 8x8 batch 4 against a plain Conv2d", "layer fwd+bwd"),
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
        catalogue = result["family"] == "catalogue"
        scale = result["family"] == "scale"
        # The catalogue's peer is geotorch (torch has none of its constraints); the scale row
        # here is geoparam's alone (the others' n x n base is too big at full size).
        if scale:
            assert "n x n" not in libraries["torch"]["na"] and "base" in libraries["torch"]["na"]
            peaks = result["peak_memory_mib"]
            assert peaks["geoparam"] >= 0 and peaks["torch"] == "not measured"
        else:
            peer = "geotorch" if catalogue else "torch"
            assert result[f"speedup_vs_{peer}"] > 0
            assert result[f"speedup_vs_{peer}_min"] > 0
        for name, entry in libraries.items():
            if "na" in entry:
                assert name == ("torch" if catalogue else "geotorch") or scale
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
            if result["mode"] == "fwd+bwd" and not catalogue and not scale:
                assert entry["grad_rel_error"] < 1e-3
            if result["mode"] == "fwd+bwd" and scale:  # no float64 reference at scale
                assert entry["grad_rel_error"] is None and entry["orth_error"] < 1e-4
            if result["mode"] == "train step":
                assert math.isfinite(entry["first_loss"])
        if result["family"] == "spectral_norm":
            assert "na" in libraries["geotorch"]
    # The operator norms left by each library's spectral normalisation (dense, float64).
    norms = report["operator_norms"]
    assert {row["layer"] for row in norms} >= {"Conv2d(3, 8, 3, padding=1)"}
    for row in norms:
        assert 0.9 <= row["geoparam"] <= 1.01, row
        assert row["torch"] > 0


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
    assert "- Catalogue checks: " in stdout


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


def _catalogue_spec(constraint: str, quick: bool = True):
    cases = _load_cases()
    return next(spec for spec in cases._catalogue(quick) if spec.constraint == constraint)


@pytest.mark.parametrize("quick", [True, False])
def test_catalogue_rows_name_every_constraint_of_tables_py(quick):
    # tables.py finds the catalogue's rows by the case name's first word.
    constraints = {spec.constraint for spec in _load_cases()._catalogue(quick)}
    assert constraints == set(load_standalone("tables.py").CATALOGUE)
    # Every geotorch constraint with a geoparam counterpart has its row (orthogonal has its own).
    assert constraints == set(compat_geotorch.__all__) - {"orthogonal", "update_base"}
    labels = [case.name for case in _load_cases().all_cases(quick) if case.family == "catalogue"]
    assert {label.split(" ")[0] for label in labels} == constraints
    assert len(labels) == len(set(labels)) == len(constraints) + 1  # alpha_stable: two sizes


def test_catalogue_points_lie_on_their_sets_and_the_oracles_see_the_rest():
    generator = torch.Generator().manual_seed(0)
    for spec in _load_cases()._catalogue(quick=True):
        point = spec.point(generator)
        assert point.shape == spec.shape and point.dtype == torch.float64
        assert spec.violation(point) < 1e-10, spec.label
        assert spec.violation(point.float().double()) < spec.tolerance, spec.label
        # Off the set: a full-rank, non-symmetric, badly scaled weight, and (for the sign of
        # the determinant) one with a row negated.
        off = 3 * point + torch.randn(spec.shape, generator=generator, dtype=torch.float64)
        flipped = point.clone()
        flipped[0] = -flipped[0]
        assert max(spec.violation(off), spec.violation(flipped)) > spec.tolerance, spec.label


def test_geotorch_is_not_run_on_an_n2_by_n2_lyapunov_system_that_cannot_fit():
    assert _catalogue_spec("alpha_stable", quick=True).geotorch_absent() is None
    full = [s for s in _load_cases()._catalogue(quick=False) if s.constraint == "alpha_stable"]
    assert [spec.shape for spec in full] == [(64, 64), (256, 256)]
    assert full[0].geotorch_absent() is None
    assert "killed for memory" in full[1].geotorch_absent()
    assert "65,536 × 65,536" in full[1].geotorch_absent()


def _holder_only(module, name, **kwargs):
    # A "front door" that constrains nothing: the weight is kept, then trained off the set.
    return module


def _resampling(module, name, **kwargs):
    # A "front door" that replaces the weight, as geotorch's do, and is not assigned it back.
    with torch.no_grad():
        module.weight.normal_()
    return module


@pytest.mark.parametrize(
    ("front_door", "message"),
    [(_holder_only, "off the set after 5 Adam steps"), (_resampling, "did not start")],
)
def test_a_catalogue_contender_off_its_set_or_start_reads_error(front_door, message):
    cases = _load_cases()
    spec = _catalogue_spec("low_rank")
    generator = torch.Generator().manual_seed(0)
    start = spec.point(generator).float()
    loss_weights = torch.randn(spec.shape, generator=generator)
    contender = cases._catalogue_contender(
        "geoparam", front_door, spec, start, loss_weights, seed=0
    )
    with pytest.raises(RuntimeError, match=message):
        _ = contender.module.weight
    with pytest.raises(RuntimeError, match=message):
        contender.step()


def test_a_catalogue_row_where_geotorch_is_absent_says_why():
    report = import_with_siblings("bench_report")
    absent = {"na": "too big"}
    entry = {"median_ms": 1.0, "min_ms": 1.0, "reps": 1, "warmup_calls": 3, "cold": False}
    result = {
        "case": "alpha_stable 256x256",
        "family": "catalogue",
        "mode": "right inverse",
        "libraries": {"geoparam": entry, "torch": {"na": "no"}, "geotorch": absent},
        "speedup_vs_torch": None,
        "speedup_vs_geotorch": None,
    }
    notes = report._catalogue_notes([result])
    assert notes[-1] == "n/a for geotorch in the catalogue: alpha_stable 256x256: too big."
    assert report._catalogue_notes([{**result, "family": "orthogonal"}]) == []


CATALOGUE_RESULTS = (
    "| case | mode | geoparam ms median (min) | torch ms median (min) "
    "| geotorch ms median (min) | × torch | × geotorch | timed calls geoparam / torch / geotorch "
    "| orth. error geoparam / torch | grad rel. error geoparam / torch |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    "| orthogonal cayley 8x8 | fwd+bwd | 1.00 (0.90) | 2.00 (1.50) | 3.00 | 2 | 3 | 15 / 15 / 1* "
    "| – | – |\n"
    "| low_rank 8x8 rank=2 | forward | 1.00 (0.90) | n/a | 3.00 (2.00) | – | 3 | 15 / – / 15 "
    "| – | – |\n"
    "| low_rank 8x8 rank=2 | fwd+bwd | 1.00 (0.90) | n/a | 4.00 | – | 4 | 15 / – / 1* | – | – |\n"
    "| alpha_stable 256x256 | right inverse | 30.0 (29.0) | n/a | n/a | – | – | 15 / – / – "
    "| – | – |\n"
    "\n- notes\n"
)


SCALE_RESULTS = (
    CATALOGUE_RESULTS.split("\n\n- notes")[0]
    + "\n| orthogonal Linear(8, 256), default arguments | register | 2.00 (1.50) | 900 | 4,000 "
    "| 450 | 2e+03 | 15 / 1* / 1* | – | – |\n"
    "| orthogonal Embedding(1000, 8), default arguments | register | 5.00 (4.00) | n/a | n/a "
    "| – | – | 15 / – / – | – | – |\n"
    "| orthogonal Embedding(1000, 8), default arguments | fwd+bwd | 1.50 (1.40) | n/a | n/a "
    "| – | – | 15 / – / – | 2.0e-06 / – | – |\n"
    "\n| case | geoparam peak MiB | torch peak MiB | geotorch peak MiB |\n|---|--:|--:|--:|\n"
    "| orthogonal Linear(8, 256), default arguments | 1 | 1,071 | not measured |\n"
    "| orthogonal Embedding(1000, 8), default arguments | 114 | not measured | not measured |\n"
    "\n- notes\n"
)


def test_the_scale_table_joins_times_and_peak_memory():
    tables = load_standalone("tables.py")
    table = tables.scale_table(
        tables.parse_rows(SCALE_RESULTS), tables.parse_memory(SCALE_RESULTS)
    ).splitlines()
    assert table[4:] == [
        "| `Linear(8, 256)` | 2.00 / 900 (one cold call) / 4,000 (one cold call) | – | – "
        "| 1 / 1,071 |",
        "| `Embedding(1000, 8)` | 5.00 / n/a / n/a | 1.50 | 2.0e-06 | 114 / not measured |",
    ]
    blocks = (
        "<!-- bench-highlights:start -->\n<!-- bench-highlights:end -->\n"
        "<!-- bench-table:start -->\n<!-- bench-table:end -->\n"
        "<!-- bench-catalogue:start -->\n<!-- bench-catalogue:end -->\n"
    )
    with pytest.raises(ValueError, match="bench-scale"):
        tables.render_readme(blocks, SCALE_RESULTS, [])  # results have rows, README no block
    scale = "<!-- bench-scale:start -->\nstale\n<!-- bench-scale:end -->\n"
    assert "| `Embedding(1000, 8)` |" in tables.render_readme(blocks + scale, SCALE_RESULTS, [])
    with pytest.raises(ValueError, match="no scale row"):
        tables.render_readme(blocks + scale, CATALOGUE_RESULTS, [])
    without_memory = SCALE_RESULTS.split("\n\n| case | geoparam peak")[0]
    with pytest.raises(ValueError, match="no peak memory"):
        tables.render_readme(blocks + scale, without_memory, [])


def test_the_report_has_a_memory_table_only_when_measured():
    report = import_with_siblings("bench_report")
    result = {"case": "c", "peak_memory_mib": {"geoparam": 12.0, "torch": "not measured"}}
    assert report.memory_table([result, {**result}])[1:] == [
        "| case | geoparam peak MiB | torch peak MiB | geotorch peak MiB |",
        "|---|--:|--:|--:|",
        "| c | 12 | not measured | – |",
    ]
    assert report.memory_table([{"case": "c"}]) == []


def test_the_catalogue_table_lists_fwd_bwd_and_right_inverse_rows():
    tables = load_standalone("tables.py")
    table = tables.catalogue_table(tables.parse_rows(CATALOGUE_RESULTS)).splitlines()
    assert table[2:] == [
        "| constraint | geoparam ms | geotorch ms | speed-up |",
        "|---|--:|--:|--:|",
        "| `low_rank` 8x8 rank=2 | 1.00 | 4.00 (one cold call) | 4 |",
        "| `alpha_stable` 256x256, right inverse | 30.0 | n/a | – |",
    ]


def test_the_readme_has_a_catalogue_block_exactly_when_results_have_catalogue_rows():
    tables = load_standalone("tables.py")
    blocks = (
        "<!-- bench-highlights:start -->\n<!-- bench-highlights:end -->\n"
        "<!-- bench-table:start -->\n<!-- bench-table:end -->\n"
    )
    catalogue = "<!-- bench-catalogue:start -->\nstale\n<!-- bench-catalogue:end -->\n"
    rendered = tables.render_readme(blocks + catalogue, CATALOGUE_RESULTS, [])
    assert "| `low_rank` 8x8 rank=2 | 1.00 |" in rendered and "stale" not in rendered
    with pytest.raises(ValueError, match="bench-catalogue"):
        tables.render_readme(blocks, CATALOGUE_RESULTS, [])  # results have rows, README no block
    kept = [line for line in CATALOGUE_RESULTS.splitlines() if not line.startswith("| low_rank")]
    orthogonal_only = "\n".join(line for line in kept if not line.startswith("| alpha"))
    assert "catalogue" not in tables.render_readme(blocks, orthogonal_only, [])
    with pytest.raises(ValueError, match="no catalogue row"):
        tables.render_readme(blocks + catalogue, orthogonal_only, [])


def test_the_norms_block_is_the_operator_norm_table_of_results_md():
    tables = load_standalone("tables.py")
    report = import_with_siblings("bench_report")
    norms = [{"layer": "Conv2d(3, 8, 3)", "input_shape": [3, 8, 8], "torch": 1.93, "geoparam": 1.0}]
    table = report.norms_table(norms)[1:]
    assert table[-1] == "| Conv2d(3, 8, 3) | 3x8x8 | 1.930 | 1.0000 |"
    results = CATALOGUE_RESULTS.replace("\n- notes", "\n".join(["", *table, "", "- notes"]))
    assert tables.norms_block(results) == "\n".join(table)
    blocks = (
        "<!-- bench-highlights:start -->\n<!-- bench-highlights:end -->\n"
        "<!-- bench-table:start -->\n<!-- bench-table:end -->\n"
        "<!-- bench-catalogue:start -->\n<!-- bench-catalogue:end -->\n"
    )
    norms_markers = "<!-- bench-norms:start -->\nstale\n<!-- bench-norms:end -->\n"
    assert table[-1] in tables.render_readme(blocks + norms_markers, results, [])
    with pytest.raises(ValueError, match="bench-norms"):
        tables.render_readme(blocks, results, [])
    with pytest.raises(ValueError, match="no operator-norm table"):
        tables.render_readme(blocks + norms_markers, CATALOGUE_RESULTS, [])
