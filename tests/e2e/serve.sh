#!/usr/bin/env bash
# kinfer serve through the official openai client (tests/e2e/serve_api.py):
# completions, chat, n=8, streaming, logprobs, echo, stop, seeds, per-request
# policy, usage, every error status, hang-ups, --max-waiting, SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 tests/e2e/serve_api.py
