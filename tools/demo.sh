#!/usr/bin/env bash
# Runs the demo: a virtualenv in .venv, dbpool installed into it, then a short
# multi-threaded workload in both modes on the embedded SQLite database.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "== installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing dbpool"
.venv/bin/python -m pip install -q -e .
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
echo "== running the demo in $workdir (no config file: embedded SQLite)"
cd "$workdir"
env -u DBPOOL_CONFIG "$OLDPWD/.venv/bin/python" -m dbpool demo "$@"
