"""geoparam against torch.nn.utils.parametrizations and geotorch: one run, a table and JSON.

Run ``python -m geoparam bench [options]`` (or ``python benchmarks/run.py [options]``):

    python -m geoparam bench                       # every case, ~20 min on 2 cores
    python -m geoparam bench --quick               # toy sizes, 2 reps: a smoke run
    python -m geoparam bench --filter 512 --out bench_out

Each row builds the same problem (same tensors) for every library and times the libraries
interleaved in this process, the call order rotating every round, after warm-up calls; see
``--help`` and the notes printed under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# The helpers are plain files beside this one, not a package: make them importable however
# this script is started (runpy from geoparam's CLI, python benchmarks/run.py, a test).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from bench_cases import (
    CONV,
    FORWARD_BACKWARD,
    LIBRARIES,
    TRAIN_STEP,
    Case,
    Problem,
    all_cases,
    operator_norms,
)
from bench_report import machine_info, markdown_report
from bench_timing import (
    WARMUP_CALLS,
    Timing,
    measure_interleaved,
    orthogonality_error,
    relative_error,
    workload,
)

__all__ = ["main"]


def _log(message: str) -> None:
    # Progress goes to stderr so that stdout is exactly the report.
    print(message, file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="geoparam bench",
        description="Time geoparam against torch.nn.utils.parametrizations and geotorch.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes and 2 reps: a smoke run in seconds"
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="timed calls per library and row (default 15; 2 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP_CALLS,
        help=f"untimed calls per library and row before the timed ones (default {WARMUP_CALLS})",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="SUBSTR",
        help="run only rows whose '<case> <mode>' contains SUBSTR (case-insensitive); repeatable",
    )
    parser.add_argument("--out", type=Path, help="folder for bench.json and bench.md")
    parser.add_argument(
        "--max-seconds-per-case",
        type=float,
        default=None,
        metavar="S",
        help="stop warming up a library in a row once its warm-up calls took S seconds, and "
        "stop timing it once its timed calls took S seconds; the table says how many calls "
        "were timed (default 5; 2 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random state")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 15
    if args.max_seconds_per_case is None:
        args.max_seconds_per_case = 2.0 if args.quick else 5.0
    if min(args.reps, args.warmup, args.threads) < 1 or args.max_seconds_per_case <= 0:
        parser.error("--reps, --warmup and --threads must be >= 1, --max-seconds-per-case > 0")
    return args


def _selected(cases: list[Case], filters: list[str]) -> list[tuple[Case, list[str]]]:
    """Each case with the modes whose row label matches a filter (all modes if no filter)."""
    wanted = [f.lower() for f in filters]
    selection = []
    for case in cases:
        modes = [
            mode
            for mode, row in zip(case.modes, case.rows(), strict=True)
            if not wanted or any(w in row.lower() for w in wanted)
        ]
        if modes:
            selection.append((case, modes))
    return selection


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _entry(timing: Timing) -> dict[str, object]:
    return {
        "median_ms": _ms(timing.median_s),
        "min_ms": _ms(timing.min_s),
        "times_ms": [t * 1e3 for t in timing.times_s],
        "first_call_ms": _ms(timing.first_s),
        "warmup_ms": [t * 1e3 for t in timing.warmup_s],
        "warmup_calls": len(timing.warmup_s),
        "reps": timing.reps,
        "cold": timing.cold,
        "capped": timing.capped,
        "error": timing.error,
        "orth_error": None,
        "grad_rel_error": None,
    }


def _run_row(case: Case, mode: str, problem: Problem, args: argparse.Namespace) -> dict:
    """Time one (case, mode) for every library and measure the accuracy of the warm-up call."""
    calls = {}
    entries: dict[str, dict[str, object]] = {}
    for library in LIBRARIES:
        contender = problem.contenders[library]
        if isinstance(contender, str):
            entries[library] = {"na": contender}
        else:
            calls[library] = workload(mode, contender, problem.cotangent)

    first_outputs: dict[str, tuple[object, list[torch.Tensor] | None]] = {}

    def keep_first(library: str, output: object) -> None:
        grads = None
        if mode == FORWARD_BACKWARD:
            grads = [
                torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                for p in problem.contenders[library].params
            ]
        first_outputs[library] = (output, grads)

    timings = measure_interleaved(
        calls, args.reps, args.max_seconds_per_case, keep_first, _log, warmup=args.warmup
    )
    for library, timing in timings.items():
        entries[library] = _entry(timing)
    entries = {library: entries[library] for library in LIBRARIES}  # table order in the JSON

    reference = None
    if mode == FORWARD_BACKWARD and problem.reference_gradient is not None and first_outputs:
        try:
            reference = problem.reference_gradient()
        except Exception as exc:  # the table still has the times
            _log(f"  float64 reference failed: {type(exc).__name__}: {exc}")
    for library, (output, grads) in first_outputs.items():
        entry = entries[library]
        if problem.orthogonal and isinstance(output, torch.Tensor):
            entry["orth_error"] = _finite(orthogonality_error(output))
        if grads is not None and reference is not None:
            to_reference = problem.contenders[library].to_reference
            if to_reference is not None:
                grads = to_reference(grads)
            entry["grad_rel_error"] = _finite(relative_error(grads, reference))
        if mode == TRAIN_STEP and isinstance(output, torch.Tensor):
            entry["first_loss"] = float(output)

    def speedup(library: str, statistic: str = "median_ms") -> float | None:
        theirs, ours = entries[library].get(statistic), entries["geoparam"].get(statistic)
        return theirs / ours if theirs and ours else None

    return {
        "case": case.name,
        "family": case.family,
        "mode": mode,
        **case.details,
        "libraries": entries,
        "speedup_vs_torch": speedup("torch"),
        "speedup_vs_geotorch": speedup("geotorch"),
        "speedup_vs_torch_min": speedup("torch", "min_ms"),
        "speedup_vs_geotorch_min": speedup("geotorch", "min_ms"),
    }


def _progress(result: dict) -> str:
    parts = []
    for library, entry in result["libraries"].items():
        if "na" in entry:
            continue
        if entry["error"]:
            parts.append(f"{library} error")
        else:
            calls = "1 call" if entry["reps"] == 1 else f"{entry['reps']} calls"
            parts.append(
                f"{library} {entry['median_ms']:.3g} ms (min {entry['min_ms']:.3g}, {calls})"
            )
    return ", ".join(parts)


def _write(out: Path, report: dict, markdown: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if markdown is not None:
        (out / "bench.md").write_text(markdown)


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows, print the markdown report, write ``--out`` files.

    Returns 1 if any library's call failed (the row says ``error``), else 0.
    """
    args = _parse(argv)
    selection = _selected(all_cases(quick=args.quick, seed=args.seed), args.filter)
    if args.list:
        for case, modes in selection:
            for mode in modes:
                print(f"{case.name} {mode}")
        return 0
    if not selection:
        _log(f"geoparam bench: no row matches {args.filter}; see --list")
        return 2

    torch.set_num_threads(args.threads)
    settings = {
        "quick": args.quick,
        "reps": args.reps,
        "warmup": args.warmup,
        "threads": args.threads,
        "max_seconds_per_case": args.max_seconds_per_case,
        "filters": args.filter,
        "seed": args.seed,
    }
    report = {"machine": machine_info(args.threads), "settings": settings, "results": []}
    total = sum(len(modes) for _, modes in selection)
    done = 0
    for case, modes in selection:
        try:
            problem = case.build()
        except Exception as exc:
            _log(f"{case.name}: building the problem failed: {type(exc).__name__}: {exc}")
            error = {"error": f"build: {type(exc).__name__}: {exc}"}
            for mode in modes:
                report["results"].append(
                    {
                        "case": case.name,
                        "family": case.family,
                        "mode": mode,
                        **case.details,
                        "libraries": {library: dict(error) for library in LIBRARIES},
                        "speedup_vs_torch": None,
                        "speedup_vs_geotorch": None,
                        "speedup_vs_torch_min": None,
                        "speedup_vs_geotorch_min": None,
                    }
                )
            done += len(modes)
            continue
        rows = []
        for mode in modes:
            done += 1
            _log(f"[{done}/{total}] {case.name} {mode}")
            result = _run_row(case, mode, problem, args)
            _log(f"  {_progress(result)}")
            report["results"].append(result)
            rows.append(result)
            if args.out is not None:  # keep partial results of a long run
                _write(args.out, report, None)
        del problem
        if case.memory is not None:
            _log(f"  peak memory of {case.name}, in fresh processes")
            peaks = case.memory()
            _log(f"  {peaks}")
            for result in rows:
                result["peak_memory_mib"] = peaks

    if any(case.family == CONV for case, _ in selection):
        _log("operator norms left by each library's spectral normalisation (dense, float64)")
        report["operator_norms"] = operator_norms(args.seed, reads=10 if args.quick else 100)
    markdown = markdown_report(
        report["machine"], settings, report["results"], report.get("operator_norms", [])
    )
    print(markdown, end="")
    if args.out is not None:
        _write(args.out, report, markdown)
        _log(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    failed = any(
        entry.get("error") for result in report["results"] for entry in result["libraries"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
