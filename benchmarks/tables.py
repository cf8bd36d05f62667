"""Regenerate the README's benchmark table and highlights from ``benchmarks/results.md``.

    python benchmarks/tables.py           # rewrite README.md's generated blocks
    python benchmarks/tables.py --check   # exit 1 if README.md or the docs are stale
    ./dev.sh tables [--check]             # the same, in the project's virtual environment

``benchmarks/results.md`` is the committed run: the ``bench.md`` that
``python -m geoparam bench --out DIR`` writes, copied as it is. Every figure the README quotes
about speed comes from it, through two blocks of README.md's "Speed" section, each between
``<!-- bench-NAME:start -->`` and ``<!-- bench-NAME:end -->``:

* ``highlights``: one bullet per entry of :data:`HIGHLIGHTS`, quoting the ratios of its rows;
* ``table``: the whole of results.md (header, table, notes) inside ``<details>``;
* ``catalogue``: geoparam against geotorch on each constraint of :data:`CATALOGUE`
  (forward+backward, and the right inverse where the table has it); this block is required
  exactly when results.md has such rows;
* ``norms``: the operator norms that torch's ``spectral_norm`` and geoparam's with
  ``input_shape`` leave on a few convolutions (the third table of results.md, as it is);
  required exactly when results.md has that table;
* ``scale``: the tall weights at scale (cases ending in :data:`SCALE_SUFFIX`): registration,
  forward+backward and peak memory (the second table of results.md); required exactly when
  results.md has such rows.

The docs page ``docs/benchmarks.md`` includes results.md itself (a ``pymdownx.snippets`` line,
read when the site is built), so it holds no copy to regenerate; ``--check`` verifies the include.

Only the standard library: this runs in a second, without torch.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CATALOGUE",
    "HIGHLIGHTS",
    "Highlight",
    "catalogue_table",
    "docs_problems",
    "highlights",
    "main",
    "norms_block",
    "parse_memory",
    "parse_rows",
    "render_readme",
    "replace_block",
    "scale_table",
    "table_block",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.md"
README = ROOT / "README.md"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_INCLUDE = '--8<-- "benchmarks/results.md"'

LIBRARIES = ("geoparam", "torch", "geotorch")
# Header cells of bench_report.COLUMNS that this script reads.
_CALLS = "timed calls " + " / ".join(LIBRARIES)
_GRAD_ERROR = "grad rel. error geoparam / torch"
_ORTH_ERROR = "orth. error geoparam / torch"
_COLD = "1*"

Row = dict[str, str]
"""One table row: header cell to its text."""


@dataclass(frozen=True)
class Highlight:
    """One generated bullet: the ratios of some rows of the table, and the words around them.

    ``measure`` is ``"speed"`` (the × torch and × geotorch columns: their median time over
    geoparam's), ``"gradient"`` (torch's gradient error over geoparam's), ``"orthogonality"``
    (geoparam's and torch's orthogonality errors) or ``"relative"`` (each library's median time
    in the row over its own median in the row ``against``, a ``(case, mode)``). Over several
    rows the bullet quotes the range.
    """

    label: str
    cases: tuple[str, ...]
    mode: str = "fwd+bwd"
    measure: str = "speed"
    why: str = ""
    against: tuple[str, str] | None = None


_SQUARE = ("64x64", "256x256", "512x512", "1024x1024")
_TALL = ("1024x64", "4096x64")


def _cases(orthogonal_map: str, shapes: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"orthogonal {orthogonal_map} {shape}" for shape in shapes)


HIGHLIGHTS: tuple[Highlight, ...] = (
    Highlight("`matrix_exp`, square 64×64 to 1024×1024", _cases("matrix_exp", _SQUARE)),
    Highlight(
        "`householder`, square 64×64 to 1024×1024",
        _cases("householder", _SQUARE),
        why="products in the compact-WY form where torch's backward loops over the reflectors; "
        "from 128×128 on, the base is absorbed into blocks of reflectors (64, 128 from 256×256)",
    ),
    Highlight(
        "`householder`, tall 1024×64 and 4096×64",
        _cases("householder", _TALL),
        why="at 1024×64 both libraries pay torch's n × n base product, most of geoparam's time; "
        "at 4096×64 geoparam's default compact base (n × k) does not",
    ),
    Highlight(
        "`householder` 1024×64 with torch's n × n base, over the same map without it "
        "(`use_trivialization=False`; each library's own times)",
        ("orthogonal householder 1024x64",),
        measure="relative",
        against=("orthogonal householder 1024x64 no base", "fwd+bwd"),
        why="the two n²k products with the base, against the map's O(nk²)",
    ),
    Highlight(
        "`matrix_exp`, tall 1024×64 and 4096×64",
        _cases("matrix_exp", _TALL),
        why="torch and geotorch pad a tall weight to n × n",
    ),
    Highlight(
        "`cayley`, tall 1024×64 and 4096×64",
        _cases("cayley", _TALL),
        why="the same padding",
    ),
    Highlight(
        "orthogonal RNN training step (`matrix_exp`, Adam)",
        ("orthogonal RNN matrix_exp h=256 T=32 B=64 (Adam)",),
        mode="train step",
    ),
    Highlight(
        "a recurrent cell that reads its weight at each of 50 steps, over the same cell given "
        "the weight read once per step (each library's own times)",
        ("orthogonal RNN cell h=256 T=50, weight read at every step (Adam)",),
        mode="train step",
        measure="relative",
        against=("orthogonal RNN cell h=256 T=50, weight read once per step (Adam)", "train step"),
        why="geoparam evaluates the map once per value of the weight, without any `cached()`",
    ),
    Highlight(
        "inference in eval mode, four orthogonal `Linear(512, 512)`",
        ("orthogonal MLP 4 x Linear(512) batch 64, parametrized",),
        mode="eval forward",
        why="torch and geotorch evaluate the map at every call, geoparam once per value",
    ),
    Highlight(
        "`matrix_exp` 512×512 forward+backward under `torch.compile(fullgraph=True)`",
        ("orthogonal matrix_exp 512x512 torch.compile",),
        mode="compiled fwd+bwd",
    ),
    Highlight(
        "the same, compiled over eager (each library's own times)",
        ("orthogonal matrix_exp 512x512 torch.compile",),
        mode="compiled fwd+bwd",
        measure="relative",
        against=("orthogonal matrix_exp 512x512", "fwd+bwd"),
    ),
    Highlight(
        "`cayley`, square 64×64 to 1024×1024",
        _cases("cayley", _SQUARE),
        why="one LU factorisation in both; geoparam's solve takes the base as its right-hand "
        "side, and from 256×256 on its backward is one solve with those factors and one "
        "product, torch's one solve and two products",
    ),
    Highlight(
        "forward only, `cayley` square",
        _cases("cayley", _SQUARE),
        mode="forward",
        why="one LU solve, as in torch (with the base as its right-hand side)",
    ),
    Highlight(
        "forward only, `householder` square",
        _cases("householder", _SQUARE),
        mode="forward",
        why="LAPACK's `orgqr` and the base product at 64×64, as in torch; from 128×128 on, "
        "blocks of reflectors that absorb the base",
    ),
    Highlight(
        "forward only, `householder` tall 1024×64 and 4096×64",
        _cases("householder", _TALL),
        mode="forward",
        why="compact-WY products where torch calls `orgqr`, then the base product (torch's "
        "n × n base in both at 1024×64, geoparam's compact one at 4096×64)",
    ),
    Highlight(
        "registering `orthogonal(nn.Linear(64, 8192))` with default arguments",
        ("orthogonal Linear(64, 8192), default arguments",),
        mode="register",
        why="geoparam keeps a compact 8192 × 64 base (one QR of the weight); torch and geotorch "
        "build and factor an 8192 × 8192 one",
    ),
    Highlight(
        "the operator's power iteration: `spectral_norm(Conv2d(64, 64, 3), input_shape=(64, 32, "
        "32))`, a training-mode forward at batch 64 over the plain layer's (each library's own "
        "times; torch's normalises the reshaped kernel instead)",
        ("Conv2d(64, 64, 3) 32x32 batch 64, spectral_norm (train mode)",),
        mode="layer forward",
        measure="relative",
        against=("Conv2d(64, 64, 3) 32x32 batch 64, no constraint", "layer forward"),
        why="one convolution and one transposed convolution of a single input per iteration",
    ),
    Highlight(
        "`OrthogonalConv2d(64, 64, 3)` forward+backward at batch 64 against a plain circular "
        "`Conv2d` of the same shape (in the torch column: the ratio is the plain layer's time "
        "over the orthogonal one's)",
        ("OrthogonalConv2d(64, 64, 3) 32x32 batch 64 against a plain Conv2d",),
        mode="layer fwd+bwd",
        why="FFTs of the input and a 64 × 64 Cayley transform at each of 32 × 17 frequencies",
    ),
    Highlight(
        "weight and spectral normalisation",
        (
            "spectral_norm Linear(1024, 1024)",
            "spectral_norm Conv2d(64, 64, 3)",
            "weight_norm Linear(1024, 1024)",
            "weight_norm Conv2d(64, 64, 3)",
        ),
        why="the same torch operations, plus geoparam's bookkeeping of some 10–20 µs a read",
    ),
    Highlight(
        "orthogonality error ‖WᴴW − I‖₂ of `matrix_exp` far from the chart's centre, "
        "‖A‖₂ = 1000, 256×256 and 1024×64",
        ("orthogonal matrix_exp 256x256 ‖A‖=1000", "orthogonal matrix_exp 1024x64 ‖A‖=1000"),
        measure="orthogonality",
        why="geoparam's map ends with a Newton-Schulz step where the squarings pile up error",
    ),
    Highlight(
        "`matrix_exp` at ‖A‖₂ = 1000, 256×256 and 1024×64",
        ("orthogonal matrix_exp 256x256 ‖A‖=1000", "orthogonal matrix_exp 1024x64 ‖A‖=1000"),
    ),
    Highlight(
        "gradient error of `matrix_exp`, square and tall, torch's over geoparam's",
        _cases("matrix_exp", _SQUARE + _TALL),
        measure="gradient",
    ),
)
"""The README's highlights, in order; each names its rows by case and mode."""


CATALOGUE: tuple[str, ...] = (
    "low_rank",
    "fixed_rank",
    "almost_orthogonal",
    "invertible",
    "sln",
    "positive_definite",
    "positive_semidefinite",
    "positive_semidefinite_low_rank",
    "positive_semidefinite_fixed_rank",
    "grassmannian",
    "sphere",
    "skew",
    "symmetric",
    "alpha_stable",
)
"""The front doors whose rows (cases named ``"<front door> <size> ..."``) the catalogue block
lists, in table order."""

_CATALOGUE_MODES = ("fwd+bwd", "right inverse")
SCALE_SUFFIX = ", default arguments"
"""How the cases of tall weights at scale end (``"orthogonal Embedding(30000, 50), default
arguments"``)."""

_SCALE_START = "<!-- bench-scale:start -->"
_CATALOGUE_START = "<!-- bench-catalogue:start -->"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_lines(results: str, header: str) -> list[str] | None:
    """The lines of the table of ``results`` whose header line starts with ``header``, header and
    separator included, or ``None`` if it has none."""
    lines = results.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    if start is None:
        return None
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def _table_rows(lines: list[str]) -> list[Row]:
    header = _cells(lines[0])
    return [dict(zip(header, _cells(line), strict=True)) for line in lines[2:]]


def parse_rows(results: str) -> dict[tuple[str, str], Row]:
    """The table of ``results`` (a bench.md) as ``(case, mode)`` to its row.

    Raises:
        ValueError: if ``results`` holds no table whose header starts ``| case | mode |``.
    """
    lines = _table_lines(results, "| case | mode |")
    if lines is None:
        raise ValueError("no benchmark table (a line '| case | mode | ...') found")
    return {(row["case"], row["mode"]): row for row in _table_rows(lines)}


def _number(cell: str) -> float | None:
    """The leading number of a cell (``"2,202"``, ``"2.98e+03"``, ``"276 (271)"``), if any."""
    match = re.match(r"[0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?", cell)
    return float(match.group().replace(",", "")) if match else None


def _figure(value: float) -> str:
    """A ratio for prose: two or three significant digits, thousands separated."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _span(values: list[float]) -> str:
    low, high = _figure(min(values)), _figure(max(values))
    return low if low == high else f"{low}–{high}"


def _column(row: Row, column: str) -> str:
    try:
        return row[column]
    except KeyError:
        raise ValueError(f"the table has no column {column!r}: is results.md current?") from None


def _speed(rows: list[Row]) -> str:
    parts = []
    for position, library in enumerate(LIBRARIES[1:], start=1):
        values = [_number(_column(row, f"× {library}")) for row in rows]
        present = [v for v in values if v is not None]
        if not present:
            continue
        cold = [_column(row, _CALLS).split(" / ")[position] == _COLD for row in rows]
        rough = " (from one cold call)" if all(cold) else ""
        rough = rough or (" (some from one cold call)" if any(cold) else "")
        parts.append(f"× {library} {_span(present)}{rough}")
    return ", ".join(parts) or "no ratio"


def _orthogonality(rows: list[Row]) -> str:
    ours, theirs = [], []
    for row in rows:
        mine, torchs = (_number(x) for x in _column(row, _ORTH_ERROR).split(" / "))
        if mine is not None and torchs is not None:
            ours.append(mine)
            theirs.append(torchs)
    if not ours:
        return "no error"
    return f"geoparam {max(ours):.1e}, torch {max(theirs):.1e} at most"


def _gradient(rows: list[Row]) -> str:
    ratios = []
    for row in rows:
        ours, theirs = (_number(x) for x in _column(row, _GRAD_ERROR).split(" / "))
        if ours and theirs is not None:
            ratios.append(theirs / ours)
    return _span(ratios) if ratios else "no ratio"


def _relative(rows: list[Row], against: Row) -> str:
    parts = []
    for library in LIBRARIES:
        column = _time_column(against, library)
        base = _number(against[column]) if column else None
        values = []
        for row in rows:
            time = _number(row.get(_time_column(row, library) or "", ""))
            if time is not None and base:
                values.append(time / base)
        if values:
            parts.append(f"{library} {_span(values)}×")
    return ", ".join(parts) or "no ratio"


def _time_column(row: Row, library: str) -> str | None:
    """The header of ``library``'s time column (``"geoparam ms median (min)"``), if present."""
    return next((column for column in row if column.startswith(f"{library} ms")), None)


def highlights(rows: dict[tuple[str, str], Row], chosen: Sequence[Highlight] = HIGHLIGHTS) -> str:
    """The highlights block: one markdown bullet per :class:`Highlight`, figures from ``rows``.

    Raises:
        ValueError: if a highlight names a row the table lacks (a renamed case, a partial run).
    """
    bullets = []
    for highlight in chosen:
        wanted = [(case, highlight.mode) for case in highlight.cases]
        if highlight.against is not None:
            wanted.append(highlight.against)
        missing = [key for key in wanted if key not in rows]
        if missing:
            raise ValueError(
                f"results.md has no row {missing[0][0]!r} {missing[0][1]!r}: run the full "
                "benchmark, or update HIGHLIGHTS in benchmarks/tables.py"
            )
        selected = [rows[case, highlight.mode] for case in highlight.cases]
        if highlight.measure == "relative":
            if highlight.against is None:
                raise ValueError(f"the relative highlight {highlight.label!r} needs `against`")
            figures = _relative(selected, rows[highlight.against])
        elif highlight.measure == "speed":
            figures = _speed(selected)
        elif highlight.measure == "orthogonality":
            figures = _orthogonality(selected)
        else:
            figures = _gradient(selected)
        why = f"; {highlight.why}" if highlight.why else ""
        bullets.append(f"- {highlight.label}: {figures}{why}.")
    return "\n".join(bullets)


def _catalogue_rows(rows: dict[tuple[str, str], Row]) -> list[Row]:
    return [
        row
        for (case, mode), row in rows.items()
        if case.split(" ", 1)[0] in CATALOGUE and mode in _CATALOGUE_MODES
    ]


def _median(row: Row, library: str) -> str:
    """A library's median from its time cell (``"276 (271)"`` gives ``"276"``), or the cell."""
    cell = _column(row, f"{library} ms median (min)")
    median = cell.split(" (", 1)[0]
    position = LIBRARIES.index(library)
    cold = _column(row, _CALLS).split(" / ")[position] == _COLD
    return f"{median} (one cold call)" if cold else median


def catalogue_table(rows: dict[tuple[str, str], Row]) -> str:
    """The catalogue block: per constraint, geoparam's and geotorch's median ms and the ratio.

    Raises:
        ValueError: if ``rows`` has no row of a :data:`CATALOGUE` constraint.
    """
    selected = _catalogue_rows(rows)
    if not selected:
        raise ValueError(
            "results.md has no catalogue row: run the full benchmark, or remove the "
            "bench-catalogue block from README.md"
        )
    lines = [
        "Forward+backward of one float32 weight unless stated, median ms; speed-up: geotorch's "
        "time over geoparam's; n/a: see the notes under the full table.",
        "",
        "| constraint | geoparam ms | geotorch ms | speed-up |",
        "|---|--:|--:|--:|",
    ]
    for row in selected:
        name, _, size = row["case"].partition(" ")
        mode = "" if row["mode"] == "fwd+bwd" else f", {row['mode']}"
        lines.append(
            f"| `{name}` {size}{mode} | {_median(row, 'geoparam')} | "
            f"{_median(row, 'geotorch')} | {_column(row, '× geotorch')} |"
        )
    return "\n".join(lines)


_NORMS_HEADER = "| layer | input | operator norm, torch's spectral_norm"
_NORMS_START = "<!-- bench-norms:start -->"


def norms_block(results: str) -> str:
    """The operator-norm table of ``results``, as it is.

    Raises:
        ValueError: if ``results`` has no such table.
    """
    lines = _table_lines(results, _NORMS_HEADER)
    if lines is None:
        raise ValueError(
            "results.md has no operator-norm table: run the full benchmark, or remove the "
            "bench-norms block from README.md"
        )
    return "\n".join(lines)


def parse_memory(results: str) -> dict[str, Row]:
    """The peak-memory table of ``results`` (header ``| case | geoparam peak MiB |``), by case."""
    lines = _table_lines(results, "| case | geoparam peak MiB")
    return {} if lines is None else {row["case"]: row for row in _table_rows(lines)}


def scale_table(rows: dict[tuple[str, str], Row], memory: dict[str, Row]) -> str:
    """The scale block: per tall weight, registration and fwd+bwd times and peak memory.

    Raises:
        ValueError: if ``rows`` has no scale row, or one without its peak memory.
    """
    cases = list(dict.fromkeys(case for case, _ in rows if case.endswith(SCALE_SUFFIX)))
    if not cases:
        raise ValueError(
            "results.md has no scale row: run the full benchmark, or remove the bench-scale "
            "block from README.md"
        )
    lines = [
        "Default arguments (geoparam's compact base, torch's and geotorch's n × n one); median "
        "ms; peak MiB: the peak resident memory of registration (and one forward+backward, "
        "where timed) in a fresh process; n/a: not run, see the notes under the full table.",
        "",
        "| weight | register ms geoparam / torch / geotorch | fwd+bwd ms geoparam | "
        "orth. error | peak MiB geoparam / torch |",
        "|---|--:|--:|--:|--:|",
    ]
    for case in cases:
        register = rows.get((case, "register"))
        step = rows.get((case, "fwd+bwd"))
        if case not in memory:
            raise ValueError(f"results.md has no peak memory of {case!r}")
        times = " / ".join(_median(register, library) for library in LIBRARIES) if register else "–"
        step_time = _median(step, "geoparam") if step else "–"
        orth = _column(step, _ORTH_ERROR).split(" / ")[0] if step else "–"
        peaks = " / ".join(memory[case][f"{library} peak MiB"] for library in LIBRARIES[:2])
        name = case.removesuffix(SCALE_SUFFIX).removeprefix("orthogonal ")
        lines.append(f"| `{name}` | {times} | {step_time} | {orth} | {peaks} |")
    return "\n".join(lines)


def table_block(results: str) -> str:
    """The whole of ``results`` inside a collapsed ``<details>``, dated from its header."""
    date = re.search(r"· (\d{4}-\d{2}-\d{2}) \d{2}:\d{2} UTC", results)
    when = f"one run, {date.group(1)}" if date else "one run"
    return f"<details><summary>The full table ({when})</summary>\n\n{results.strip()}\n\n</details>"


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with what lies between its ``bench-{name}`` markers replaced by ``content``.

    Raises:
        ValueError: unless ``text`` has exactly one start marker followed by one end marker.
    """
    start, end = f"<!-- bench-{name}:start -->", f"<!-- bench-{name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one {start} followed by one {end}")
    before, rest = text.split(start)
    _, after = rest.split(end)
    return f"{before}{start}\n{content}\n{end}{after}"


def render_readme(readme: str, results: str, chosen: Sequence[Highlight] = HIGHLIGHTS) -> str:
    """``readme`` with its highlights (``chosen``), table, catalogue and scale blocks.

    The catalogue (scale) block is regenerated when results.md has catalogue (scale) rows or
    the README has the block; either without the other is an error (see
    :func:`catalogue_table`, :func:`scale_table`).
    """
    rows = parse_rows(results)
    text = replace_block(readme, "highlights", highlights(rows, chosen))
    if _catalogue_rows(rows) or _CATALOGUE_START in readme:
        text = replace_block(text, "catalogue", catalogue_table(rows))
    if _NORMS_HEADER in results or _NORMS_START in readme:
        text = replace_block(text, "norms", norms_block(results))
    if any(case.endswith(SCALE_SUFFIX) for case, _ in rows) or _SCALE_START in readme:
        text = replace_block(text, "scale", scale_table(rows, parse_memory(results)))
    return replace_block(text, "table", table_block(results))


def docs_problems(page: str) -> list[str]:
    """Why ``docs/benchmarks.md`` would not show results.md as it is (empty if it would)."""
    problems = []
    if page.count(DOCS_INCLUDE) != 1:
        problems.append(f"it should include the results once by the line {DOCS_INCLUDE}")
    if any(line.startswith("| case | mode |") for line in page.splitlines()):
        problems.append("it holds a copy of the table; include benchmarks/results.md instead")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md from results.md, or with ``--check`` report what is stale.

    Returns 0 when the files are (now) current, 1 when ``--check`` finds one stale.
    """
    parser = argparse.ArgumentParser(
        prog="benchmarks/tables.py",
        description="Regenerate README.md's benchmark table and highlights from "
        "benchmarks/results.md.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    results = RESULTS.read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    expected = render_readme(readme, results)
    stale = []
    if expected != readme:
        if args.check:
            stale.append(f"{README.name}: its benchmark blocks differ from results.md")
        else:
            README.write_text(expected, encoding="utf-8")
            print(f"{README.name}: regenerated from {RESULTS.name}")
    stale += [f"docs/{DOCS_PAGE.name}: {p}" for p in docs_problems(DOCS_PAGE.read_text("utf-8"))]
    for problem in stale:
        print(problem, file=sys.stderr)
    if stale and args.check:
        print("run ./dev.sh tables (python benchmarks/tables.py) to regenerate", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
