#!/usr/bin/env bash
# The README's test command: build once, run the suite on SQLite, the interop checks and the console in a browser,
# then the suite on a throwaway PostgreSQL, then the cluster suite and the contract checks (on SQLite, then on PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> openapi.yaml is valid OpenAPI 3.1"
python3 -c 'import openapi_spec_validator' 2>/dev/null || python3 -m pip install -q openapi-spec-validator
python3 - <<'PY'
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
document, _ = read_from_filename("openapi.yaml")
validate(document)
print("openapi.yaml: valid")
PY

echo "==> building (debug, with tests)"
swift build --build-tests

echo "==> suite on SQLite (one database file per test, in parallel)"
swift test --skip-build

echo "==> webhook deliveries verified by the reference Python library"
STEWARD_BIN=.build/debug/steward scripts/webhook-interop.sh

echo "==> MCP: the official Python SDK lists and calls tools over both protocol revisions"
STEWARD_BIN=.build/debug/steward scripts/mcp-interop.sh

echo "==> console: a real headless Chromium signs in, runs, cancels and audits through /console"
STEWARD_BIN=.build/debug/steward scripts/test-console.sh

echo "==> suite on PostgreSQL"
scripts/test-postgres.sh --skip-build

echo "==> cluster: three instances on one PostgreSQL, with kill -9, a PostgreSQL restart, a cut LISTEN and PgBouncer"
STEWARD_BIN=.build/debug/steward scripts/test-cluster.sh

echo "==> contract conformance: a Python client's walk and schemathesis against openapi.yaml"
STEWARD_BIN=.build/debug/steward scripts/test-conformance.sh

echo "==> contract conformance on PostgreSQL: the same walk and fuzz against a server on a throwaway PostgreSQL"
CONFORMANCE_DB=postgres STEWARD_BIN=.build/debug/steward scripts/test-conformance.sh
