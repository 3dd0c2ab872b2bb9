#!/usr/bin/env bash
# The console's first load (issue 25): bytes transferred and time to interactive in a fresh headless Chromium,
# against the release build (or STEWARD_BIN). Needs chromium, chromium-driver and Selenium (scripts/test-console.sh
# installs them into .build/console-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=$(bench_binary)
trap bench_stop_server EXIT
bench_start_server "$BIN"
.build/console-venv/bin/python bench/console_load.py "${BENCH_URL/127.0.0.1/localhost}" "${CONSOLE_RUNS:-7}"
