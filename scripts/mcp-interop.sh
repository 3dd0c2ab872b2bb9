#!/usr/bin/env bash
# Interop check: the official MCP Python SDK (`mcp` 2.3.0 from PyPI), unchanged, drives a running steward over
# protocol 2026-07-28, the 2025-11-25 handshake and its own negotiation (scripts/mcp_interop.py).
# STEWARD_BIN names the binary (default: the debug build, else a release build is made).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
if [ -z "${STEWARD_BIN:-}" ] && [ -x .build/debug/steward ]; then export STEWARD_BIN=.build/debug/steward; fi
MCP_VERSION=2.3.0
VENV=.build/mcp-venv
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
  echo "==> installing mcp $MCP_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "mcp==$MCP_VERSION"
fi
BIN=$(bench_binary)
trap bench_stop_server EXIT
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
"$VENV/bin/python" scripts/mcp_interop.py "$BENCH_URL" "$TOKEN"
