"""benchmarks/tables.py: the README's benchmark blocks are what results.md generates, and the
docs include results.md; the generation itself (parsing, highlights, markers) on small tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_loading import BENCHMARKS, import_with_siblings, load_standalone

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "tables.py").is_file(), reason="needs the source checkout's benchmarks/"
)


def _load_tables():
    return load_standalone("tables.py")


def _load_report():
    return import_with_siblings("bench_report")


HEADER = (
    "| case | mode | geoparam ms median (min) | torch ms median (min) "
    "| geotorch ms median (min) | × torch | × geotorch | timed calls geoparam / torch / geotorch "
    "| orth. error geoparam / torch | grad rel. error geoparam / torch |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)
RESULTS = (
    "geoparam 0.1.0 (abc1234) · torch 2.13.0+cpu · geotorch 0.4.0 · Python 3.11.7  \n"
    "CPU: Test (2 logical CPUs), 2 torch threads; load average at start 0.10 · "
    "2026-12-01 04:09 UTC\n\n"
    + HEADER
    + "| map A 8x8 | fwd+bwd | 1.00 (0.90) | 7.00 (6.50) | 8.00 (7.00) | 7 | 8 | 15 / 15 / 15 "
    "| 1.0e-06 / 2.0e-06 | 1.0e-07 / 4.0e-06 |\n"
    "| map A 16x16 | fwd+bwd | 2.00 (1.90) | 2,400 | 3,000 | 1.2e+03 | 1.5e+03 | 15 / 1* / 1* "
    "| 1.0e-06 / 2.0e-06 | 2.0e-07 / 2.0e-06 |\n"
    "| norm B | fwd+bwd | 1.00 (0.95) | 1.02 (0.99) | n/a | 1.02 | – | 15 / 3† / – "
    "| – | 5.0e-08 / 5.0e-08 |\n"
    "\n- Times: the notes.\n"
)


def test_readme_and_docs_are_generated_from_results_md():
    tables = _load_tables()
    readme = tables.README.read_text(encoding="utf-8")
    results = tables.RESULTS.read_text(encoding="utf-8")
    assert tables.render_readme(readme, results) == readme, "run ./dev.sh tables"
    assert tables.docs_problems(tables.DOCS_PAGE.read_text(encoding="utf-8")) == []


def test_the_check_command_passes_on_the_committed_files():
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""  # --check writes nothing


def test_every_highlight_names_rows_of_results_md():
    tables = _load_tables()
    rows = tables.parse_rows(tables.RESULTS.read_text(encoding="utf-8"))
    for highlight in tables.HIGHLIGHTS:
        for case in highlight.cases:
            assert (case, highlight.mode) in rows, (case, highlight.mode)


def test_parse_rows_reads_the_harness_table():
    # The table bench_report writes is the one tables.py reads, column names included.
    report = _load_report()
    tables = _load_tables()
    entry = {
        "median_ms": 2.0,
        "min_ms": 1.5,
        "reps": 4,
        "warmup_calls": 3,
        "cold": False,
        "error": None,
        "orth_error": 1e-6,
        "grad_rel_error": 2e-7,
    }
    cold = {**entry, "median_ms": 9000.0, "min_ms": 9000.0, "reps": 1, "cold": True}
    result = {
        "case": "orthogonal matrix_exp 8x8",
        "mode": "fwd+bwd",
        "libraries": {"geoparam": entry, "torch": cold, "geotorch": {"na": "no equivalent"}},
        "speedup_vs_torch": 4500.0,
        "speedup_vs_geotorch": None,
    }
    machine = dict.fromkeys(["geoparam", "geoparam_git", "torch", "geotorch", "python"], "x")
    machine |= {"cpu": "c", "logical_cpus": 2, "threads": 2, "load_average_at_start": None}
    machine["date_utc"] = "2026-12-01 04:09"
    settings = {"reps": 4, "warmup": 3, "max_seconds_per_case": 5.0}
    markdown = report.markdown_report(machine, settings, [result])
    rows = tables.parse_rows(markdown)
    assert list(rows) == [("orthogonal matrix_exp 8x8", "fwd+bwd")]
    row = rows["orthogonal matrix_exp 8x8", "fwd+bwd"]
    assert list(row) == list(report.COLUMNS)
    assert row["geoparam ms median (min)"] == "2.00 (1.50)"
    assert row["torch ms median (min)"] == "9,000"  # one call: its median is its min
    assert row["geotorch ms median (min)"] == "n/a"
    assert row["timed calls geoparam / torch / geotorch"] == f"4 / {report.COLD} / –"
    assert row["× torch"] == "4.5e+03"
    assert tables.table_block(markdown).startswith(
        "<details><summary>The full table (one run, 2026-12-01)</summary>"
    )


def test_few_warmups_are_marked():
    report = _load_report()
    entry = {"median_ms": 2.0, "min_ms": 1.0, "reps": 2, "warmup_calls": 2, "cold": False}
    assert report._calls(entry, warmup=3) == f"2{report.FEW_WARMUPS}"
    assert report._calls({**entry, "warmup_calls": 3}, warmup=3) == "2"
    assert report._time_cell(entry) == "2.00 (1.00)"


def test_highlights_quote_ranges_and_flag_cold_calls():
    tables = _load_tables()
    rows = tables.parse_rows(RESULTS)
    chosen = [
        tables.Highlight("A", ("map A 8x8", "map A 16x16"), why="padding"),
        tables.Highlight("A 16", ("map A 16x16",)),
        tables.Highlight("B", ("norm B",)),
        tables.Highlight("A grads", ("map A 8x8", "map A 16x16"), measure="gradient"),
        tables.Highlight("A orth", ("map A 8x8", "map A 16x16"), measure="orthogonality"),
        tables.Highlight(
            "A 16 over 8", ("map A 16x16",), measure="relative", against=("map A 8x8", "fwd+bwd")
        ),
    ]
    assert tables.highlights(rows, chosen).splitlines() == [
        "- A: × torch 7.00–1,200 (some from one cold call), "
        "× geotorch 8.00–1,500 (some from one cold call); padding.",
        "- A 16: × torch 1,200 (from one cold call), × geotorch 1,500 (from one cold call).",
        "- B: × torch 1.02.",  # geotorch has no such row: no ratio quoted
        "- A grads: 10.0–40.0.",
        "- A orth: geoparam 1.0e-06, torch 2.0e-06 at most.",
        "- A 16 over 8: geoparam 2.00×, torch 343×, geotorch 375×.",
    ]


def test_a_highlight_of_a_missing_row_is_an_error():
    tables = _load_tables()
    rows = tables.parse_rows(RESULTS)
    with pytest.raises(ValueError, match="no row 'map C' 'fwd\\+bwd'"):
        tables.highlights(rows, [tables.Highlight("C", ("map C",))])


def test_parse_rows_needs_a_table():
    with pytest.raises(ValueError, match="no benchmark table"):
        _load_tables().parse_rows("no table here\n")


def test_render_replaces_only_between_the_markers():
    tables = _load_tables()
    readme = (
        "# title\n\nprose 1\n<!-- bench-highlights:start -->\nstale\n<!-- bench-highlights:end -->"
        "\nprose 2\n<!-- bench-table:start -->\nold table\n<!-- bench-table:end -->\nafter\n"
    )
    chosen = [tables.Highlight("B", ("norm B",))]
    rendered = tables.render_readme(readme, RESULTS, chosen)
    assert rendered.startswith(
        "# title\n\nprose 1\n<!-- bench-highlights:start -->\n- B: × torch 1.02.\n"
    )
    assert "stale" not in rendered and "old table" not in rendered
    assert "\n<!-- bench-highlights:end -->\nprose 2\n<!-- bench-table:start -->\n" in rendered
    assert rendered.endswith("</details>\n<!-- bench-table:end -->\nafter\n")
    assert RESULTS.strip() in rendered
    assert tables.render_readme(rendered, RESULTS, chosen) == rendered  # a fixed point


@pytest.mark.parametrize(
    "text",
    [
        "no markers",
        "<!-- bench-table:end -->\n<!-- bench-table:start -->",
        "<!-- bench-table:start -->\n<!-- bench-table:start -->\n<!-- bench-table:end -->",
    ],
)
def test_replace_block_needs_one_ordered_pair_of_markers(text):
    with pytest.raises(ValueError, match="expected one"):
        _load_tables().replace_block(text, "table", "x")


def test_docs_must_include_results_md_not_copy_it():
    tables = _load_tables()
    assert tables.docs_problems(f"# Benchmarks\n\n{tables.DOCS_INCLUDE}\n") == []
    problems = tables.docs_problems(f"# Benchmarks\n\n{HEADER}")
    assert len(problems) == 2
