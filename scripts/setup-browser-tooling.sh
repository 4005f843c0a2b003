#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests (tests/ui): Debian's chromium and fonts (DejaVu for
# Latin scripts, Lohit Devanagari for the Nepali pages).
# Idempotent: installs only what is missing. The Python driver is the `playwright` package (in the
# venv); it is pointed at /usr/bin/chromium, so `playwright install` is never run.
set -euo pipefail

need=()
for pkg in chromium fonts-dejavu-core fonts-lohit-deva; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
/usr/bin/chromium --version
