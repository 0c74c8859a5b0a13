#!/usr/bin/env bash
# tools/bench_serve.py end to end on SmolLM2 (--model default) on the CPU:
# it launches kinfer serve, warms each level up untimed (--warmup), streams
# the timed requests, and compares with kinfer bench generate. Checks that
# every request completed with exactly --output-len tokens, that the warm-up
# waves ran at each level's concurrency and are not counted in its numbers,
# that the server's engine metrics over a level count exactly its rows, and
# that the comparison with bench generate is filled in (with the prefix
# cache, serve's default, on both sides); then a shared-prefix workload
# (--shared-prefix-len), whose timed requests prefill only their own ids, and
# conversations (--turns), whose second turns take the first turn's prompt
# and answer from the cache.
set -euo pipefail
KINFER=${KINFER:-build/kinfer}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

grep -q -- "--warmup" <<< "$(python3 tools/bench_serve.py --help)" || fail "bench_serve.py --help lacks --warmup"
timeout 300 python3 tools/bench_serve.py --kinfer "$KINFER" --server-args "--model default" --concurrency 1,3 \
  --output-len 6 --min-prompts 4 --compare-generate --out "$tmp/serve.json" > /dev/null 2> "$tmp/err.txt" ||
  fail "bench_serve.py failed: $(tail -5 "$tmp/err.txt")"
python3 - "$tmp/serve.json" <<'PY' || fail "bench_serve.py results wrong"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["warmup"] == 1 and j["output_len"] == 6 and j["prefix_cache"] is True, j
assert [lv["concurrency"] for lv in j["levels"]] == [1, 3], j["levels"]
for lv in j["levels"]:
    assert lv["requests"] == 4 and lv["completed"] == 4 and lv["errors"] == 0, lv
    assert lv["output_tokens"] == 4 * 6, lv  # the warm-up's tokens are not in the level's
    assert lv["warmup_requests"] == lv["concurrency"] and lv["warmup_errors"] == 0, lv
    assert lv["output_tok_s"] > 0 and lv["ttft_ms"]["median"] > 0, lv
    e = lv["engine"]  # the server's /metrics over the timed level alone: 64-id prompts, 6 tokens each
    # The prefix cache (serve's default) holds the prompt since the warm-up: each request computes 2 rows.
    assert e["rows"] == {"prefill": 4 * 2, "decode": 4 * 5, "prefix_cached": 4 * 62}, e
    assert e["steps"] > 0 and e["ms_per_step"]["stage_and_launch"] > 0 and e["ms_per_step"]["device"] == 0, e
    g, shared = lv["bench_generate"], lv["bench_generate_shared_prompt"]
    assert g["generated_tokens"] == shared["generated_tokens"] == lv["concurrency"] * 6, (g, shared)
    assert "--requests %d" % lv["concurrency"] in g["command"] and "--requests 1" in shared["command"], (g, shared)
    assert "--prefix-cache" in g["command"], g  # the same cache on both sides
    assert lv["ratio_to_generate"] > 0 and lv["decode_ratio_to_generate"] > 0, lv
    assert lv["ratio_to_generate_shared_prompt"] > 0, lv
PY
# --shared-prefix-len: 48 common ids (3 pages of 16), 16 of each request's own. With the prefix cache (on
# by default in serve) the warm-up wave caches the common pages, so each timed request prefills only its
# own 16 rows.
timeout 300 python3 tools/bench_serve.py --kinfer "$KINFER" --server-args "--model default" \
  --concurrency 3 --input-len 64 --shared-prefix-len 48 --output-len 4 --min-prompts 4 --out "$tmp/shared.json" \
  > /dev/null 2> "$tmp/err.txt" || fail "bench_serve.py --shared-prefix-len failed: $(tail -5 "$tmp/err.txt")"
python3 - "$tmp/shared.json" <<'PY' || fail "bench_serve.py --shared-prefix-len results wrong"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["shared_prefix_len"] == 48, j
lv = j["levels"][0]
assert lv["completed"] == 4 and lv["errors"] == 0 and lv["output_tokens"] == 4 * 4, lv
assert lv["engine"]["rows"] == {"prefill": 4 * 16, "decode": 4 * 3, "prefix_cached": 4 * 48}, lv["engine"]
PY
# --turns 2: two conversations of two turns, each prompt its own 64 ids (--shared-prefix-len 0). A second
# turn quotes the first's prompt and 20-token answer (rows for 83 inputs: 5 full pages of 16) and 16 new
# ids: it takes 80 of its 100 rows from the cache and computes 20.
timeout 300 python3 tools/bench_serve.py --kinfer "$KINFER" --server-args "--model default" --concurrency 2 \
  --input-len 64 --shared-prefix-len 0 --output-len 20 --turns 2 --turn-len 16 --min-prompts 2 \
  --out "$tmp/turns.json" > /dev/null 2> "$tmp/err.txt" || fail "bench_serve.py --turns failed: $(tail -5 "$tmp/err.txt")"
python3 - "$tmp/turns.json" <<'PY' || fail "bench_serve.py --turns results wrong"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["turns"] == 2 and j["turn_len"] == 16, j
lv = j["levels"][0]
assert lv["conversations"] == 2 and lv["requests"] == 4 and lv["completed"] == 4 and lv["errors"] == 0, lv
assert lv["output_tokens"] == 4 * 20 and len(lv["ttft_ms_by_turn"]) == 2, lv
assert lv["engine"]["rows"] == {"prefill": 2 * 64 + 2 * 20, "decode": 4 * 19, "prefix_cached": 2 * 80}, lv["engine"]
PY
if python3 tools/bench_serve.py --turns 2 --compare-generate 2> "$tmp/err.txt"; then
  fail "--turns with --compare-generate accepted"
fi
grep -q "leave out --turns" "$tmp/err.txt" || fail "unclear --turns error: $(cat "$tmp/err.txt")"
if python3 tools/bench_serve.py --shared-prefix-len 65 --input-len 64 2> "$tmp/err.txt"; then
  fail "--shared-prefix-len past --input-len accepted"
fi
grep -q "must be within" "$tmp/err.txt" || fail "unclear --shared-prefix-len error: $(cat "$tmp/err.txt")"
echo "bench_serve e2e: ok"
