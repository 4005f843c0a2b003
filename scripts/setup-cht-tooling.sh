#!/usr/bin/env bash
# Install what the CHT configuration tests need: Debian `chromium` and `xsltproc` (for
# cht-conf-test-harness) and the pinned npm packages of cht-config/ (cht-conf, the harness, mocha).
# Idempotent and quick when everything is there: apt runs only for a missing package (with
# `apt-get update` only when the package lists do not know it), `npm ci` only when
# cht-config/package-lock.json changed since the last install. No browser is downloaded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG_DIR="$ROOT/cht-config"
STAMP="$CONFIG_DIR/node_modules/.ltfu-lock.sha256"

log() { printf 'setup-cht-tooling: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root (or sudo) to run: $*"; return 1; fi
}

# --- Debian packages -------------------------------------------------------------------------
missing=()
if [ ! -x /usr/lib/chromium/chromium ] && ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if ! command -v xsltproc >/dev/null 2>&1; then missing+=(xsltproc); fi
if [ "${#missing[@]}" -gt 0 ]; then
  for pkg in "${missing[@]}"; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      log "package lists do not know $pkg: apt-get update"
      as_root apt-get update -qq
      break
    fi
  done
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Node packages -------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node and npm are required (Node >= 20)"; exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  log "Node >= 20 is required by cht-conf 6 (found $(node --version))"; exit 1
fi

lock_sum="$(sha256sum "$CONFIG_DIR/package-lock.json" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$lock_sum" ] && [ -x "$CONFIG_DIR/node_modules/.bin/cht" ]; then
  log "npm packages up to date"
else
  log "npm ci in cht-config/"
  (
    cd "$CONFIG_DIR"
    PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 \
      npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  )
  printf '%s\n' "$lock_sum" >"$STAMP"
fi
log "ready: chromium $( (/usr/lib/chromium/chromium --version 2>/dev/null || chromium --version) | awk '{print $2}'), node $(node --version)"
