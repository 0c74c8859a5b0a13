#!/usr/bin/env bash
# Load test of kinfer serve: 1,000 requests from 200 concurrent clients
# (tests/e2e/serve_load.py); runs alone (RUN_SERIAL), bounded in time. Twice:
# one engine with room to spare, then two replicas with 20-page pools, so the
# prefix cache evicts (checked), the routing record forgets, and sequences
# are preempted (most runs) under the same hang-ups and bad requests.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 tests/e2e/serve_load.py
LOAD_KV_PAGES=20 LOAD_EXPECT_EVICTIONS=1 LOAD_SERVER_ARGS="--replicas 2 ${LOAD_SERVER_ARGS:-}" python3 tests/e2e/serve_load.py
