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
bench_python_venv "$VENV" mcp "$MCP_VERSION"
BIN=$(bench_binary)
trap bench_stop_server EXIT
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
"$VENV/bin/python" scripts/mcp_interop.py "$BENCH_URL" "$TOKEN"
