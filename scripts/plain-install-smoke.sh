#!/usr/bin/env bash
# A plain install must run: a fresh venv, `pip install .` (no extras), `ltfu --help`, `ltfu demo --cases 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'status=$?; [ $status -eq 0 ] && rm -rf "$work" || echo "kept $work for its logs"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q .
cd "$work"
"$work/venv/bin/ltfu" --help >/dev/null
"$work/venv/bin/ltfu" demo --cases 5
echo "plain install: ltfu --help and ltfu demo --cases 5 ran"
