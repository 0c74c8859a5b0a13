#!/usr/bin/env bash
# kinfer generate end to end on SmolLM2 (--model default):
#  - greedy dense and greedy blocktopk with topk >= pages give identical tokens
#  - Best-of-8 with blocktopk --topk-pages 2 --local-pages 1 runs, gives 8
#    samples, and is reproducible with the same seed (and differs with another)
#  - a sample does not depend on n (sample 0 of -n 8 == the -n 1 run)
#  - --summary-dtype int8: Best-of-8 reproducible, recorded in the stats, fewer
#    bytes read per token than the f32 summaries; a bad value is refused
#  - a prompt larger than the KV pool fails with a clear error
#  - bench generate: --warmup, --requests, --prefix-cache (fewer prefill rows)
set -euo pipefail
KINFER=${KINFER:-build/kinfer}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
tokens() { python3 -c 'import json,sys; print(json.dumps([s["tokens"] for s in json.load(open(sys.argv[1]))["samples"]]))' "$1"; }

grep -q -- "--topk-pages" <<< "$("$KINFER" generate --help)" || fail "--help lacks --topk-pages"

chat="Explain in two sentences why the sky is blue."
"$KINFER" generate --model default --chat "$chat" --max-tokens 40 --temp 0 --json > "$tmp/dense.json"
"$KINFER" generate --model default --chat "$chat" --max-tokens 40 --temp 0 --json \
  --attn blocktopk --topk-pages 64 --local-pages 1 > "$tmp/btk.json"
[[ "$(tokens "$tmp/dense.json")" == "$(tokens "$tmp/btk.json")" ]] || fail "greedy blocktopk (k >= pages) differs from dense"
python3 - "$tmp/dense.json" <<'EOF' || fail "dense greedy output malformed"
import json, sys
j = json.load(open(sys.argv[1]))
s = j["samples"][0]
assert len(s["tokens"]) > 0 and s["text"], s
assert s["stop_reason"] in ("eos", "length"), s
for k in ("prefill_tok_s", "decode_tok_s", "kv_pages_peak", "pages_read_per_step", "kv_bytes_read_per_token"):
    assert k in j["stats"], k
EOF

bon=(--model default --chat "Write a haiku about the sea." -n 8 --max-tokens 24
     --attn blocktopk --topk-pages 2 --local-pages 1 --page-size 8 --json)
"$KINFER" generate "${bon[@]}" --seed 7 > "$tmp/a.json"
"$KINFER" generate "${bon[@]}" --seed 7 > "$tmp/b.json"
"$KINFER" generate "${bon[@]}" --seed 8 > "$tmp/c.json"
[[ "$(tokens "$tmp/a.json")" == "$(tokens "$tmp/b.json")" ]] || fail "Best-of-8 not reproducible with the same seed"
[[ "$(tokens "$tmp/a.json")" != "$(tokens "$tmp/c.json")" ]] || fail "another seed gave identical samples"
python3 - "$tmp/a.json" <<'EOF' || fail "Best-of-8 output malformed"
import json, sys
j = json.load(open(sys.argv[1]))
assert len(j["samples"]) == 8
assert len({json.dumps(s["tokens"]) for s in j["samples"]}) > 1, "all 8 samples identical"
st = j["stats"]
# blocktopk really reads fewer pages than the cache holds: sink + 2 + local 1 at most
assert 0 < st["pages_read_per_step"] <= 4.0, st
EOF
one=(--model default --chat "Write a haiku about the sea." -n 1 --max-tokens 24
     --attn blocktopk --topk-pages 2 --local-pages 1 --page-size 8 --json --seed 7)
"$KINFER" generate "${one[@]}" > "$tmp/one.json"
first_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples"][0]["tokens"])' "$1"; }
[[ "$(first_of "$tmp/one.json")" == "$(first_of "$tmp/a.json")" ]] || fail "sample 0 depends on n"

"$KINFER" generate "${bon[@]}" --seed 7 --summary-dtype int8 > "$tmp/f1.json"
"$KINFER" generate "${bon[@]}" --seed 7 --summary-dtype int8 > "$tmp/f2.json"
[[ "$(tokens "$tmp/f1.json")" == "$(tokens "$tmp/f2.json")" ]] || fail "int8 summaries: Best-of-8 not reproducible"
python3 - "$tmp/f1.json" "$tmp/a.json" <<'EOF' || fail "int8 summaries: stats wrong"
import json, sys
f, a = (json.load(open(p)) for p in sys.argv[1:3])
assert f["stats"]["attn"]["summary_dtype"] == "int8", f["stats"]["attn"]
assert a["stats"]["attn"]["summary_dtype"] == "auto", a["stats"]["attn"]
assert len(f["samples"]) == 8 and all(s["tokens"] for s in f["samples"])
per_tok = lambda j: j["stats"]["kv_bytes_read_per_token"]
assert 0 < per_tok(f) < per_tok(a), (per_tok(f), per_tok(a))
EOF
if "$KINFER" generate --model default --prompt-ids 1,2 --summary-dtype fp16 2> "$tmp/err.txt"; then
  fail "bad --summary-dtype accepted"
fi
grep -q "summary-dtype" "$tmp/err.txt" || fail "bad --summary-dtype error unclear: $(cat "$tmp/err.txt")"

if "$KINFER" generate --model default --prompt-ids 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18 \
    --page-size 4 --kv-pages 3 --max-tokens 4 2> "$tmp/err.txt"; then
  fail "oversized prompt did not fail"
fi
grep -q "KV pages" "$tmp/err.txt" || fail "oversized prompt error unclear: $(cat "$tmp/err.txt")"
if "$KINFER" generate --model default --prompt '' 2> "$tmp/err.txt"; then fail "empty --prompt accepted"; fi
grep -q -- "--prompt is empty" "$tmp/err.txt" || fail "empty --prompt error unclear: $(cat "$tmp/err.txt")"
"$KINFER" generate --model default --chat '' --max-tokens 2 --json > /dev/null || fail "an empty chat message was refused"
if "$KINFER" generate --model default --prompt-ids 1,2 --attn sparse 2> "$tmp/err.txt"; then fail "bad --attn accepted"; fi
grep -q "unknown attention policy" "$tmp/err.txt" || fail "bad --attn error unclear"
# --device: a bad name is refused; cuda without a GPU (or a CUDA build) says so and suggests cpu.
if "$KINFER" generate --model default --prompt-ids 1,2 --device gpu 2> "$tmp/err.txt"; then fail "bad --device accepted"; fi
grep -q "cpu or cuda" "$tmp/err.txt" || fail "bad --device error unclear: $(cat "$tmp/err.txt")"
if ! nvidia-smi -L > /dev/null 2>&1; then
  if "$KINFER" generate --model default --prompt-ids 1,2 --device cuda 2> "$tmp/err.txt"; then
    fail "--device cuda without a GPU did not fail"
  fi
  grep -q "use --device cpu" "$tmp/err.txt" || fail "--device cuda error unclear: $(cat "$tmp/err.txt")"
fi
# kinfer bench generate: its untimed warm-up (--warmup) is left out of the
# stats, so the counters equal a run without it; a bad value is refused.
grep -q -- "--warmup" <<< "$("$KINFER" bench generate --help)" || fail "bench generate --help lacks --warmup"
bench=(bench generate --model default -n 2 --max-tokens 12 --json)
"$KINFER" "${bench[@]}" --warmup 0 > "$tmp/bench0.json"
"$KINFER" "${bench[@]}" --warmup 2 > "$tmp/bench2.json"
python3 - "$tmp/bench0.json" "$tmp/bench2.json" <<'EOF' || fail "bench generate --warmup leaked into the stats"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert (a["warmup"], b["warmup"]) == (0, 2), (a["warmup"], b["warmup"])
assert a["generated_tokens"] == 24, a["generated_tokens"]
for k in ("generated_tokens", "prefill_tokens", "decode_tokens", "steps", "kv_bytes_read_total"):
    assert a[k] == b[k], (k, a[k], b[k])
assert 0 < b["wall_s"] and b["decode_tok_s"] > 0, b
EOF
# --requests R: the n samples as R requests, each prefilling its own copy of
# the prompt: R times the prefill rows, the same generated tokens and steps.
"$KINFER" "${bench[@]}" --warmup 0 --requests 2 > "$tmp/bench_r2.json"
python3 - "$tmp/bench0.json" "$tmp/bench_r2.json" <<'EOF' || fail "bench generate --requests wrong"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert (a["requests"], b["requests"]) == (1, 2), (a["requests"], b["requests"])
assert b["prefill_tokens"] == 2 * a["prefill_tokens"], (a["prefill_tokens"], b["prefill_tokens"])
for k in ("generated_tokens", "decode_tokens", "steps"):
    assert a[k] == b[k], (k, a[k], b[k])
EOF
# --prefix-cache: the warm-up's prompt pages are cached, so each of the R
# requests prefills only past the full pages of its prompt, and at least its
# last two rows (it copies a page it keeps in part): the rows it shares leave
# the prefill count.
grep -q -- "--prefix-cache" <<< "$("$KINFER" bench generate --help)" || fail "bench generate --help lacks --prefix-cache"
"$KINFER" "${bench[@]}" --warmup 1 --requests 2 --prefix-cache > "$tmp/bench_pc.json"
python3 - "$tmp/bench_r2.json" "$tmp/bench_pc.json" <<'EOF' || fail "bench generate --prefix-cache wrong"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert (a["prefix_cache"], b["prefix_cache"]) == (False, True), (a["prefix_cache"], b["prefix_cache"])
L, P = b["prompt_tokens"], b["attn"]["page_size"]
shared = 2 * min(P * (L // P), L - 2)
assert shared > 0 and b["prefix_cached_rows"] == shared, (L, P, b["prefix_cached_rows"])
assert a["prefix_cached_rows"] == 0, a["prefix_cached_rows"]
assert b["prefill_tokens"] == a["prefill_tokens"] - shared, (a["prefill_tokens"], b["prefill_tokens"], shared)
for k in ("generated_tokens", "decode_tokens", "steps"):
    assert a[k] == b[k], (k, a[k], b[k])
EOF
if "$KINFER" bench generate --model default -n 2 --max-tokens 2 --requests 3 2> "$tmp/err.txt"; then
  fail "--requests 3 -n 2 accepted"
fi
grep -q -- "--requests 3 is more than the 2 samples" "$tmp/err.txt" || fail "bad --requests error unclear"
if "$KINFER" bench generate --model default -n 1 --max-tokens 2 --warmup -1 2> "$tmp/err.txt"; then
  fail "--warmup -1 accepted"
fi
grep -q -- "--warmup" "$tmp/err.txt" || fail "bad --warmup error unclear: $(cat "$tmp/err.txt")"
echo "generate e2e: ok"
