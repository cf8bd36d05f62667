"""torch.compile and inference side by side: graphs, breaks, compile time, eval overhead.

    python benchmarks/compile_report.py                 # every constraint, ~5-10 min on 2 cores
    python benchmarks/compile_report.py --out DIR       # also DIR/compile.md and compile.json
    python benchmarks/compile_report.py --quick         # one constraint: a smoke run
    python benchmarks/compile_report.py --repeat 3      # each cell the median of 3 processes

Each measurement runs in a fresh Python process with torch's compile caches disabled
(``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``), so a compile time is a cold one: what a user pays on
the first call of a new process. The model is six ``Linear(64, 64)`` layers with tanh between
them, each constrained the same way, by geoparam and by torch.nn.utils.parametrizations.

The same process also times inference: four constrained ``Linear(512, 512)`` layers in eval mode
under ``no_grad``, against the same model with its constraints removed (plain weights), the two
called alternately so that both see the same state of the machine's caches. (The benchmark
harness interleaves the libraries instead; there a parametrized model's neighbours, which
evaluate their maps at every call, evict its weights from the caches, and a frozen model's
neighbours do not.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

CONSTRAINTS = (
    "orthogonal matrix_exp",
    "orthogonal cayley",
    "orthogonal householder",
    "weight_norm",
    "spectral_norm",
)
LIBRARIES = ("geoparam", "torch")
BLOCKS, WIDTH, BATCH = 6, 64, 8

# The measurement, run by a fresh interpreter: prints one JSON object.
_CHILD = r"""
import json, sys, time
import torch
from torch import nn
import geoparam
from torch.nn.utils import parametrizations

library, constraint, blocks, width, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
torch.set_num_threads(2)
functions = geoparam if library == "geoparam" else parametrizations


def constrain(layer):
    if constraint.startswith("orthogonal"):
        functions.orthogonal(layer, orthogonal_map=constraint.split()[1])
    else:
        getattr(functions, constraint)(layer)


def build():
    torch.manual_seed(0)
    layers = []
    for _ in range(blocks):
        layer = nn.Linear(width, width)
        constrain(layer)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers)


x = torch.randn(batch, width)
explained = torch._dynamo.explain(build())(x)
torch._dynamo.reset()

model = build()
compiled = torch.compile(model, fullgraph=True)
start = time.perf_counter()
compiled(x).square().sum().backward()
cold = time.perf_counter() - start

# Steady state, compiled and eager, to check the compiled model is not slower.
def timed(function, reps=20):
    for _ in range(3):
        function()
    start = time.perf_counter()
    for _ in range(reps):
        function()
    return (time.perf_counter() - start) / reps

def step(m):
    def call():
        # As after an optimizer step: geoparam may not reuse the weights of the previous call.
        geoparam.clear_caches(m)
        m(x).square().sum().backward()
    return call

# Inference: the parametrized model in eval mode against itself with plain weights, alternately.
import statistics
torch.manual_seed(0)
wide = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)])
for layer in wide:
    constrain(layer)
wide.eval()
# The plain model gets the constrained weights as ordinary parameters. (Not a deepcopy with the
# constraints removed: with torch's parametrizations that also breaks the original, whose class
# the copy shares and loses the weight property of.)
plain = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)]).eval()
with torch.no_grad():
    for source, target in zip(wide, plain):
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)
batch = torch.randn(64, 512)
times = {"parametrized": [], "plain": []}
with torch.no_grad():
    for _ in range(3):
        wide(batch), plain(batch)
    for _ in range(30):
        for label, net in (("parametrized", wide), ("plain", plain)):
            start = time.perf_counter()
            net(batch)
            times[label].append(time.perf_counter() - start)
eval_ratio = statistics.median(times["parametrized"]) / statistics.median(times["plain"])

print(json.dumps({
    "eval_over_plain": eval_ratio,
    "graphs": explained.graph_count,
    "breaks": explained.graph_break_count,
    "cold_compile_s": cold,
    "compiled_step_ms": timed(step(compiled)) * 1e3,
    "eager_step_ms": timed(step(model)) * 1e3,
}))
"""


def _measure(library: str, constraint: str) -> dict[str, object]:
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1", "PYTHONWARNINGS": "ignore"}
    args = [library, constraint, str(BLOCKS), str(WIDTH), str(BATCH)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, timeout=900
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last, "wall_s": time.perf_counter() - start}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict[str, object]]) -> dict[str, object]:
    """Each field's median over the runs (a cold compile time varies from process to process)."""
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    merged: dict[str, object] = {"runs": len(good)}
    for key in good[0]:
        merged[key] = statistics.median(run[key] for run in good)
    return merged


def _cell(entry: dict[str, object], key: str, digits: int = 1) -> str:
    if "error" in entry:
        return "error"
    value = entry[key]
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _markdown(results: dict[str, dict[str, dict[str, object]]], repeat: int = 1) -> str:
    header = (
        "| constraint | graphs geoparam / torch | graph breaks geoparam / torch "
        "| cold compile s geoparam / torch | compiled step ms geoparam / torch "
        "| geoparam compiled / eager | eval forward over plain weights geoparam / torch |"
    )
    lines = [header, "|---|--:|--:|--:|--:|--:|--:|"]
    for constraint, entries in results.items():
        ours, theirs = entries["geoparam"], entries["torch"]

        def pair(key: str, digits: int = 1, ours=ours, theirs=theirs) -> str:
            return f"{_cell(ours, key, digits)} / {_cell(theirs, key, digits)}"

        ratio = (
            f"{ours['compiled_step_ms'] / ours['eager_step_ms']:.2f}"
            if "error" not in ours
            else "–"
        )
        lines.append(
            f"| {constraint} | {pair('graphs')} | {pair('breaks')} | {pair('cold_compile_s')} "
            f"| {pair('compiled_step_ms', 2)} | {ratio} | {pair('eval_over_plain', 2)} |"
        )
    notes = [
        "",
        f"- Model: {BLOCKS} × (`Linear({WIDTH}, {WIDTH})` + tanh), every layer constrained the "
        f"same way; input batch {BATCH}, float32, 2 threads.",
        "- graphs, graph breaks: `torch._dynamo.explain(model)(x)`.",
        f"- every figure: the median over {repeat} fresh process(es) per library and constraint.",
        "- cold compile: the first forward+backward of `torch.compile(model, fullgraph=True)` "
        "(inductor) in a fresh process with compile caches disabled.",
        "- compiled step: forward+backward of the compiled model after 3 warm-up calls, mean "
        "of 20; geoparam compiled / eager: the same step compiled over eager.",
        "- eval forward over plain weights: 4 constrained `Linear(512, 512)` in eval mode under "
        "`no_grad`, batch 64, over the same model with its constraints removed; medians of 30 "
        "calls each, the two models called alternately. torch's parametrizations evaluate the "
        "map at every call; geoparam's evaluate it once and reuse it while nothing changes.",
    ]
    return "\n".join(lines + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the matrix_exp row only")
    parser.add_argument("--out", type=Path, help="folder for compile.md and compile.json")
    parser.add_argument(
        "--repeat", type=int, default=1, help="fresh processes per cell; the median is reported"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    constraints = CONSTRAINTS[:1] if args.quick else CONSTRAINTS
    results: dict[str, dict[str, dict[str, object]]] = {}
    for constraint in constraints:
        results[constraint] = {}
        for library in LIBRARIES:
            print(f"{constraint}, {library} ...", file=sys.stderr, flush=True)
            runs = [_measure(library, constraint) for _ in range(args.repeat)]
            results[constraint][library] = _median_of(runs)
    markdown = _markdown(results, args.repeat)
    print(markdown, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compile.md").write_text(markdown)
        (args.out / "compile.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = any("error" in entry for entries in results.values() for entry in entries.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
