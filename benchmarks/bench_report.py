"""The machine header, the markdown table (the one the README shows) and the notes under it.

``benchmarks/tables.py`` reads this table back (from ``benchmarks/results.md``) to regenerate
the README's copy and its highlights: keep :data:`COLUMNS` and the cell formats in step with it.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

import geoparam
from bench_cases import CATALOGUE, CATALOGUE_LR, CATALOGUE_STEPS, CONV, SCALE, SCALE_ADAM_STEPS

__all__ = [
    "COLD",
    "COLUMNS",
    "FEW_WARMUPS",
    "machine_info",
    "markdown_report",
    "memory_table",
    "norms_table",
]

_REPO = Path(__file__).resolve().parents[1]

_LIBRARIES = ("geoparam", "torch", "geotorch")

COLUMNS: tuple[str, ...] = (
    "case",
    "mode",
    *(f"{library} ms median (min)" for library in _LIBRARIES),
    "× torch",
    "× geotorch",
    "timed calls " + " / ".join(_LIBRARIES),
    "orth. error geoparam / torch",
    "grad rel. error geoparam / torch",
)
"""The table's header cells, in order."""

COLD = "1*"
"""The timed-calls cell of a library measured by its single cold call."""

FEW_WARMUPS = "†"
"""Suffix of a timed-calls count whose warm-up calls were cut short by the budget."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_revision() -> str | None:
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def machine_info(threads: int) -> dict[str, object]:
    """Versions, CPU, threads and load: what a reader needs to weigh the numbers."""
    try:
        import geotorch

        geotorch_version = geotorch.__version__
    except ImportError:
        geotorch_version = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "geotorch": geotorch_version,
        "geoparam": geoparam.__version__,
        "geoparam_git": _git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "mkl": torch.backends.mkl.is_available(),
        "load_average_at_start": None if load is None else [round(x, 2) for x in load],
    }


def _header(machine: dict[str, object]) -> str:
    revision = f" ({machine['geoparam_git']})" if machine["geoparam_git"] else ""
    load = machine["load_average_at_start"]
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (
        f"geoparam {machine['geoparam']}{revision} · torch {machine['torch']} · "
        f"geotorch {machine['geotorch'] or 'not installed'} · Python {machine['python']}  \n"
        f"CPU: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), "
        f"{machine['threads']} torch threads{load_text} · {machine['date_utc']} UTC"
    )


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 1000:
        return f"{ms:,.0f}"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _time_cell(entry: dict[str, object]) -> str:
    """``median (min)`` in ms; a single measurement is both, so it is written once."""
    if "na" in entry:
        return "n/a"
    if entry.get("error"):
        return "error"
    median = _ms(entry["median_ms"] / 1e3)
    if entry["reps"] < 2:
        return median
    return f"{median} ({_ms(entry['min_ms'] / 1e3)})"


def _calls(entry: dict[str, object], warmup: int) -> str:
    """How many calls make up a library's time: ``15``, ``3†`` (warm-up cut short), ``1*``."""
    if "na" in entry or entry.get("error"):
        return "–"
    if entry["cold"]:
        return COLD
    suffix = FEW_WARMUPS if entry["warmup_calls"] < warmup else ""
    return f"{entry['reps']}{suffix}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _pair(first: float | None, second: float | None) -> str:
    if first is None and second is None:
        return "–"
    return " / ".join("–" if x is None else f"{x:.1e}" for x in (first, second))


def _row(result: dict[str, object], warmup: int) -> str:
    libraries = result["libraries"]
    geoparam_entry, torch_entry = libraries["geoparam"], libraries["torch"]
    cells = [
        result["case"],
        result["mode"],
        *(_time_cell(libraries[name]) for name in _LIBRARIES),
        _ratio(result["speedup_vs_torch"]),
        _ratio(result["speedup_vs_geotorch"]),
        " / ".join(_calls(libraries[name], warmup) for name in _LIBRARIES),
        _pair(geoparam_entry.get("orth_error"), torch_entry.get("orth_error")),
        _pair(geoparam_entry.get("grad_rel_error"), torch_entry.get("grad_rel_error")),
    ]
    return "| " + " | ".join(cells) + " |"


def _notes(settings: dict[str, object]) -> list[str]:
    budget, reps, warmup = settings["max_seconds_per_case"], settings["reps"], settings["warmup"]
    return [
        f"Times: median (min) in ms over up to {reps} timed calls per library, after {warmup} "
        "untimed warm-up calls each, made in rounds of one call per library in one process. "
        "The order rotates every round: of the L libraries timed in a row, in the order "
        "(geoparam, torch, geotorch), round r starts with the (r mod L)-th, so each goes first "
        "equally often. The min is the call least disturbed by the machine. "
        "float32 (complex64 for unitary) on CPU.",
        "forward: read `module.weight` under `torch.no_grad()`. fwd+bwd: read it, "
        "loss = `(W * G).sum()` with a fixed random G, backward to the unconstrained tensors. "
        "train step: `zero_grad`, forward over the sequence inside `parametrize.cached()` "
        "(the weight is computed once per step), backward, Adam step; the RNN cell rows use no "
        "`cached()`: the cell reads its weight at every step, or is given it read once per "
        "step. eval forward: the model in eval mode under `torch.no_grad()`, parametrized or "
        "frozen to plain weights (geoparam.freeze; torch's `remove_parametrizations` for "
        "torch and geotorch). compiled fwd+bwd: the fwd+bwd loss under "
        "`torch.compile(fullgraph=True)` (inductor), compiled when the row is built: "
        "compilation is not timed. geoparam reuses a weight while nothing it depends on "
        "changes; the forward and fwd+bwd rows clear that cache before every call.",
        "Weight state: `original` = X whose skew part A = tril(X) − tril(X)ᴴ has ‖A‖₂ = 1 "
        "(per matrix); Householder: strictly-lower entries N(0, 1/(4n)), diagonal −1; the "
        "base is torch's random orthogonal one. The same tensors are loaded into every "
        "library, geotorch included (its Stiefel map stores the same `original` and `base` "
        "and builds the same A). Norms: the layer's default init; geoparam gets torch's "
        "`state_dict` (same u, v).",
        "× torch, × geotorch: their median time / geoparam's median time (> 1: geoparam is "
        "faster); bench.json also has the ratio of the minima.",
        "orth. error: ‖WᴴW − I‖₂ of each library's float32 output, computed in float64 "
        "(max over a batch). grad rel. error: ‖g − g_ref‖_F / ‖g_ref‖_F, g_ref = the gradient "
        "through torch's map in float64 from the same state; for n×k weights with n > 1024 "
        "(matrix_exp, cayley) g_ref uses the exact rank-2k form of torch's map, "
        "f(A) = I + U(f(M) − I)Uᴴ with U from a QR of the lower block, because torch's "
        "n×n float64 backward takes minutes.",
        "timed calls: how many calls each library's time is over, in the order geoparam / "
        f"torch / geotorch; fewer than {reps} where they passed the budget of {budget:g} s per "
        f"library and row. {COLD}: a single cold call, the first warm-up call, which alone "
        "passed the budget (it got no further call; its time is that call's). "
        f"{FEW_WARMUPS}: fewer than {warmup} warm-up calls, when they passed the budget first. "
        "Treat both as rough.",
        "n/a: geotorch has no Householder map, no unitary (complex) weights (its skew part is "
        "X − Xᵀ), no weight_norm or spectral_norm.",
    ]


def _catalogue_notes(results: list[dict[str, object]]) -> list[str]:
    """The notes on the constraint catalogue's rows, if the run has any."""
    rows = [result for result in results if result.get("family") == CATALOGUE]
    if not rows:
        return []
    absent = {
        result["case"]: result["libraries"]["geotorch"]["na"]
        for result in rows
        if "na" in result["libraries"]["geotorch"]
    }
    notes = [
        "Catalogue rows (from `low_rank` to `alpha_stable`): one float32 weight constrained by "
        "geoparam and by geotorch, each with its own default map (`triv`) and function (`f`); "
        "torch has none of these constraints (n/a). Both start from the same weight W₀ on the "
        "set, drawn independently of both libraries (geotorch replaces the weight by a random "
        "one at registration, so W₀ is assigned back), then take the same "
        f"{CATALOGUE_STEPS} Adam steps (lr {CATALOGUE_LR:g}) on a fixed loss `(W * G′).sum()`, "
        "which move each map off its chart's centre, where a matrix exponential costs next to "
        "nothing; the calls are timed at the point each library reached. right inverse: "
        "`module.weight = W₀`, what registration runs (for `alpha_stable`, a Lyapunov solve).",
        "Catalogue checks: the two libraries parametrize each set differently, so their "
        "gradients are not compared (grad rel. error –). Instead each library's weight must "
        "start at W₀ and, after the steps, satisfy the constraint by an oracle independent of "
        "both (singular values, eigenvalues, determinant, norms, computed in float64), within "
        "1e-4 of the scale; a library that fails reads error. orth. error of `grassmannian`: "
        "geoparam's weight.",
    ]
    if absent:
        reasons = "; ".join(f"{case}: {reason}" for case, reason in absent.items())
        notes.append(f"n/a for geotorch in the catalogue: {reasons}.")
    return notes


def _memory_cell(value: float | str) -> str:
    return f"{value:,.0f}" if isinstance(value, float) else value


def memory_table(results: list[dict[str, object]]) -> list[str]:
    """The table of peak memory, one line per case that measured it (none: no lines)."""
    seen: dict[str, dict[str, float | str]] = {}
    for result in results:
        if "peak_memory_mib" in result:
            seen.setdefault(result["case"], result["peak_memory_mib"])
    if not seen:
        return []
    lines = [
        "",
        "| case | " + " | ".join(f"{library} peak MiB" for library in _LIBRARIES) + " |",
        "|---|" + "--:|" * len(_LIBRARIES),
    ]
    for case, peaks in seen.items():
        cells = [_memory_cell(peaks.get(library, "–")) for library in _LIBRARIES]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def norms_table(norms: list[dict[str, object]]) -> list[str]:
    """The table of the operator norms each library's spectral normalisation leaves."""
    if not norms:
        return []
    lines = [
        "",
        "| layer | input | operator norm, torch's spectral_norm | operator norm, geoparam "
        "input_shape |",
        "|---|---|--:|--:|",
    ]
    for row in norms:
        shape = "x".join(map(str, row["input_shape"]))
        lines.append(f"| {row['layer']} | {shape} | {row['torch']:.3f} | {row['geoparam']:.4f} |")
    return lines


def _conv_notes(results: list[dict[str, object]], norms: list[dict[str, object]]) -> list[str]:
    notes = []
    if any(result.get("family") == CONV for result in results):
        notes.append(
            "Convolution rows: a 3x3 circular `Conv2d` layer at batch 64 timed as a whole "
            "(geotorch has no convolution constraint). layer forward: the layer called under "
            "`no_grad`; spectral_norm (train mode): geoparam's with `input_shape` (one power "
            "iteration on the operator: a convolution and a transposed convolution of one "
            "input) against torch's (one on the reshaped kernel); no constraint: the plain "
            "layer, the same in both columns, the reference of the others. layer fwd+bwd: a "
            "mean-square loss and its backward; `OrthogonalConv2d` in the geoparam column, a "
            "plain circular `Conv2d` of the same shape in the torch column (× torch below 1: the "
            "orthogonal layer's cost over the plain one's)."
        )
    if norms:
        notes.append(
            "Operator norms (the third table): each layer normalised by torch's `spectral_norm` "
            "and by geoparam's with `input_shape`, from the same kernel, after 100 training-mode "
            "reads (one power iteration each); then the largest singular value of the eval-mode "
            "layer's dense matrix on that input, in float64. 1 is the target of both."
        )
    return notes


def _scale_notes(results: list[dict[str, object]]) -> list[str]:
    if not any(result.get("family") == SCALE for result in results):
        return []
    return [
        "Scale rows (`orthogonal Linear(64, 8192)`, `Embedding(...)`, default arguments): each "
        "library's `orthogonal` with no argument but the module, so geoparam keeps its compact "
        "base (an n×k `base`), torch and geotorch an n×n one. register: the front door on a "
        "fresh copy of the plain module (the copy is part of the time). fwd+bwd: after "
        f"{SCALE_ADAM_STEPS} Adam steps (lr 1e-3) on `(W * G′).sum()`; orth. error is the "
        "weight's there. Not run where the n×n base alone is several GiB.",
        "Peak memory (the second table): in a fresh process per library, the peak resident "
        "size during registration and (for the rows with fwd+bwd) one read of the weight and "
        "a backward, above the size before registering, when the plain module was already "
        "built (Linux `VmHWM`, restarted through `/proc/self/clear_refs`).",
    ]


def markdown_report(
    machine: dict[str, object],
    settings: dict[str, object],
    results: list[dict[str, object]],
    norms: list[dict[str, object]] = (),
) -> str:
    """The header, the table and its notes, as printed and written to ``bench.md``."""
    warmup = int(settings["warmup"])
    lines = [
        _header(machine),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "--:|" * (len(COLUMNS) - 2),
        *(_row(result, warmup) for result in results),
        *memory_table(results),
        *norms_table(list(norms)),
        "",
        *(
            f"- {note}"
            for note in _notes(settings)
            + _catalogue_notes(results)
            + _scale_notes(results)
            + _conv_notes(results, list(norms))
        ),
    ]
    return "\n".join(lines) + "\n"
