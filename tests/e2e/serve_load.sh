#!/usr/bin/env bash
# Load test of kinfer serve: 1,000 requests from 200 concurrent clients
# (tests/e2e/serve_load.py); runs alone (RUN_SERIAL), bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 tests/e2e/serve_load.py
