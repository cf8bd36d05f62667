"""The benchmark harness: a --quick run through the CLI, and its float64 reference for tall maps."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "run.py").is_file(), reason="needs the source checkout's benchmarks/"
)

# Rows covering each mode and each kind of contender: a tall map with geotorch, a norm with
# geotorch n/a, the train step.
FILTERS = ["matrix_exp 64x8", "spectral_norm Linear", "RNN"]
EXPECTED_ROWS = {
    ("orthogonal matrix_exp 64x8", "forward"),
    ("orthogonal matrix_exp 64x8", "fwd+bwd"),
    ("spectral_norm Linear(32, 32)", "fwd+bwd"),
    ("orthogonal RNN matrix_exp h=16 T=4 B=8 (Adam)", "train step"),
}


def _load_cases():
    # A plain file beside run.py, not a package: load it without touching sys.path, under a
    # private name (dataclasses look their module up in sys.modules).
    name = "_geoparam_bench_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "bench_cases.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
        for name, entry in libraries.items():
            if "na" in entry:
                assert name == "geotorch"
                continue
            assert entry["error"] is None, (result["case"], name, entry["error"])
            assert 1 <= entry["reps"] <= report["settings"]["reps"]
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
    stdout, _, out = quick_run
    assert stdout == (out / "bench.md").read_text()
    assert "| case | mode | geoparam ms | torch ms | geotorch ms |" in stdout
    assert stdout.count("\n| orthogonal matrix_exp 64x8 |") == 2


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
