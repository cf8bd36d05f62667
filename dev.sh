#!/usr/bin/env bash
# Set up a virtual environment (once) and run one of the project's jobs.
#   ./dev.sh demo [options]   the main job: python -m geoparam demo
#   ./dev.sh test             lint, the test suite and the strict docs build (what CI runs)
#   ./dev.sh bench [options]  the benchmark harness against torch and geotorch
#   ./dev.sh tables [--check] README.md's benchmark table and highlights from benchmarks/results.md
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# The constraints file pins torch to the CPU build used in development and CI.
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"

job="${1:-}"
shift || true
case "$job" in
  demo) exec "$venv/bin/python" -m geoparam demo "$@" ;;
  bench) exec "$venv/bin/python" -m geoparam bench "$@" ;;
  tables) exec "$venv/bin/python" benchmarks/tables.py "$@" ;;
  test)
    "$venv/bin/ruff" check src tests benchmarks examples
    "$venv/bin/ruff" format --check -q src tests benchmarks examples
    "$venv/bin/python" -m pytest -q "$@"
    if [ -f mkdocs.yml ]; then "$venv/bin/mkdocs" build --strict -q -d "$(mktemp -d)"; fi
    ;;
  *) echo "usage: ./dev.sh {demo|test|bench|tables} [options]" >&2; exit 2 ;;
esac
