#!/usr/bin/env bash
# Installs the Node tooling of the OpenHIM tests (openhim-mediator-utils, from npm) into
# tests/openhim/node/node_modules. Idempotent: does nothing when node_modules matches package-lock.json.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../tests/openhim/node" && pwd)"
cd "$dir"
if ! command -v npm >/dev/null 2>&1; then
  echo "setup-openhim-tooling: npm not found (install Node.js 18+ to run the openhim-mediator-utils test)" >&2
  exit 1
fi
stamp=node_modules/.ltfu-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
