#!/usr/bin/env bash
# Compares Arbor with `mlflow server` (SQLite) and FastTrackML (SQLite) on this machine.
#   bench/compare.sh [--quick] [other options of bench/compare.py]
# With --postgres postgres://USER@HOST/DB every server keeps its data in a new PostgreSQL
# database beside DB (Arbor with --store), and Arbor's gRPC figures come from two replicas.
# Builds Arbor (release), installs the peers into bench/.venv from PyPI (a peer that
# fails to install is reported by compare.py as not installed), and runs the comparison.
# Results go to bench/results/<time>/ (table.md, results.json, ratios.png).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins || exit 1
venv=bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || exit 1
# psycopg2: mlflow's PostgreSQL driver, for --postgres.
"$venv/bin/pip" install --quiet --disable-pip-version-check "mlflow==3.17.2" "matplotlib>=3.8" "psycopg2-binary>=2.9" \
  || echo "compare: mlflow could not be installed; it will be reported as not installed" >&2
# FastTrackML's package pins mlflow<3; its bundled `fml` binary needs none of it.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "fasttrackml==0.6.0" \
  || echo "compare: fasttrackml could not be installed; it will be reported as not installed" >&2
exec "$venv/bin/python" bench/compare.py --venv "$venv" "$@"
