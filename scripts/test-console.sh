#!/usr/bin/env bash
# The console in a real browser: Debian's chromium and chromium-driver, Selenium 4.51 from PyPI, against a
# `steward serve` on a fresh data directory (scripts/console_check.py). On failure the screenshot and browser log are
# under .build/console-artifacts/. STEWARD_BIN names the binary (default: the debug build, else a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source scripts/lib-postgres.sh
if [ -z "${STEWARD_BIN:-}" ] && [ -x .build/debug/steward ]; then export STEWARD_BIN=.build/debug/steward; fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> installing chromium and chromium-driver from the OS packages"
  pg_install chromium chromium-driver
fi
SELENIUM_VERSION=4.51.0
VENV=.build/console-venv
bench_python_venv "$VENV" selenium "$SELENIUM_VERSION"
BIN=$(bench_binary)
ARTIFACTS=.build/console-artifacts
rm -rf "$ARTIFACTS"
trap bench_stop_server EXIT
# Rate limits stay off (bench/lib.sh), but the lockout is on, at 3 failures, for the lockout check.
export STEWARD_LOCKOUT_THRESHOLD=3
# The console's session cookie is `__Host-` and Secure: browsers keep it over plain HTTP only for localhost. The
# public URL says localhost too: the identity provider returns the browser there, where its binding cookie lives.
export BENCH_PORT; BENCH_PORT=$(bench_free_port)
export STEWARD_PUBLIC_URL="http://localhost:$BENCH_PORT"
# An identity provider for the sign-in checks: scripts/fake_oidc.py, started by the check on this port.
export FAKE_IDP_PORT; FAKE_IDP_PORT=$(bench_free_port)
export STEWARD_OIDC_PROVIDERS=corp STEWARD_OIDC_CORP_NAME="Corp SSO" STEWARD_OIDC_CORP_ISSUER="http://127.0.0.1:$FAKE_IDP_PORT" \
  STEWARD_OIDC_CORP_CLIENT_ID=console-check STEWARD_OIDC_CORP_CLIENT_SECRET=console-check-secret
bench_start_server "$BIN"
URL=${BENCH_URL/127.0.0.1/localhost}
if ! "$VENV/bin/python" scripts/console_check.py "$URL" bench@example.com Bench-Password-42 "$(pwd)/$ARTIFACTS"; then
  mkdir -p "$ARTIFACTS"; cp "$BENCH_DIR/server.log" "$ARTIFACTS/server.log" 2>/dev/null || true
  echo "artifacts: $(pwd)/$ARTIFACTS"
  exit 1
fi
