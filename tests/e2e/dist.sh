#!/usr/bin/env bash
# More than one engine, end to end on SmolLM2 (--model default) on the CPU:
# - eval with two CPU replicas (--replicas 2, the data-parallel path) writes
#   the same problem lines, byte for byte, as one engine, and generate splits
#   its samples over replicas with the same samples as one engine;
# - eval --shard 0/2 and 1/2 merge (kinfer merge) into the whole run's
#   problems; frontier and regrade take the merged file, frontier refuses a
#   lone shard; merge refuses a missing shard, mismatched shards, a gap and a
#   duplicate;
# - bad flags (--tp on the CPU, a GPU that does not exist, --shard 2/2) fail
#   with errors that name them.
set -euo pipefail
: "${KINFER:?KINFER must point at the kinfer binary}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
base=(--model default --dataset gsm8k -n 2 --max-tokens 6 --limit 4 --no-progress --threads 2)
run=("${base[@]}" --seed 3)
# Problem lines sorted by id (lines are appended as problems finish).
problems() { tail -n +2 "$1" | python3 -c "import json,sys; [print(json.dumps(r, sort_keys=True)) for r in sorted((json.loads(l) for l in sys.stdin), key=lambda r: r['id'])]"; }

"$KINFER" eval "${run[@]}" --out "$TMP/one.jsonl" --json > "$TMP/one.json"
"$KINFER" eval "${run[@]}" --replicas 2 --out "$TMP/two.jsonl" --json > "$TMP/two.json"
cmp <(problems "$TMP/one.jsonl") <(problems "$TMP/two.jsonl") || fail "two replicas wrote other problem lines than one engine"
python3 - "$TMP/two.json" <<'PY' || fail "replica stats"
import json, sys
e = json.load(open(sys.argv[1]))["run"]["engine"]
reps = e["replicas"]
assert len(reps) == 2 and sum(r["requests"] for r in reps) == 4, reps
assert sum(r["generated_tokens"] for r in reps) == e["generated_tokens"], e
PY

"$KINFER" generate --model default --prompt "The capital of France is" -n 3 --max-tokens 5 --seed 4 --temp 0.9 --json \
  > "$TMP/g1.json"
"$KINFER" generate --model default --prompt "The capital of France is" -n 3 --max-tokens 5 --seed 4 --temp 0.9 --json \
  --replicas 2 > "$TMP/g2.json"
python3 - "$TMP/g1.json" "$TMP/g2.json" <<'PY' || fail "generate over two replicas"
import json, sys
a, b = (json.load(open(p))["samples"] for p in sys.argv[1:3])
assert [s["tokens"] for s in a] == [s["tokens"] for s in b], (a, b)
PY

# Shards: two halves of the run, merged, are the whole run's problems in selection order.
"$KINFER" eval "${run[@]}" --shard 1/2 --out "$TMP/s1.jsonl" --json > /dev/null
"$KINFER" eval "${run[@]}" --shard 0/2 --out "$TMP/s0.jsonl" --json > /dev/null
[ "$(wc -l < "$TMP/s0.jsonl")" = 3 ] || fail "shard 0/2 of 4 problems should hold 2"
"$KINFER" merge "$TMP/s1.jsonl" "$TMP/s0.jsonl" --out "$TMP/all.jsonl" > "$TMP/merge.txt"
grep -q "merged 2 shards: 4 problems, 8 samples" "$TMP/merge.txt" || fail "merge summary: $(cat "$TMP/merge.txt")"
cmp <(problems "$TMP/all.jsonl") <(problems "$TMP/one.jsonl") || fail "merged shards differ from the whole run"
python3 - "$TMP/all.jsonl" <<'PY' || fail "merged order/header"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows[1:]] == ["0", "1", "2", "3"], [r["id"] for r in rows[1:]]
assert "shard" not in rows[0] and len(rows[0]["merged_from"]) == 2, rows[0]
PY
"$KINFER" frontier "$TMP/all.jsonl" --json > /dev/null || fail "frontier on the merged trace"
"$KINFER" regrade "$TMP/all.jsonl" --json > /dev/null || fail "regrade on the merged trace"
if "$KINFER" frontier "$TMP/s0.jsonl" 2> "$TMP/err.txt"; then fail "frontier took a lone shard"; fi
grep -q "kinfer merge" "$TMP/err.txt" || fail "frontier's shard error does not say to merge: $(cat "$TMP/err.txt")"

expect_fail() {  # pattern command...
  local pat=$1; shift
  if "$@" > /dev/null 2> "$TMP/err.txt"; then fail "accepted: $*"; fi
  grep -qE -- "$pat" "$TMP/err.txt" || fail "error for '$*' lacks '$pat': $(cat "$TMP/err.txt")"
}
expect_fail "shard 1 of 2 missing" "$KINFER" merge "$TMP/s0.jsonl" --out "$TMP/m1.jsonl"
expect_fail "both shard 0/2" "$KINFER" merge "$TMP/s0.jsonl" "$TMP/s0.jsonl" --out "$TMP/m2.jsonl"
"$KINFER" eval "${base[@]}" --seed 4 --shard 1/2 --out "$TMP/s1b.jsonl" --json > /dev/null
expect_fail "not shards of one run" "$KINFER" merge "$TMP/s0.jsonl" "$TMP/s1b.jsonl" --out "$TMP/m3.jsonl"
head -2 "$TMP/s1.jsonl" > "$TMP/s1cut.jsonl"  # a shard cut short
expect_fail "missing" "$KINFER" merge "$TMP/s0.jsonl" "$TMP/s1cut.jsonl" --out "$TMP/m4.jsonl"
(cat "$TMP/s1.jsonl"; tail -1 "$TMP/s1.jsonl") > "$TMP/s1dup.jsonl"
expect_fail "appears twice" "$KINFER" merge "$TMP/s0.jsonl" "$TMP/s1dup.jsonl" --out "$TMP/m5.jsonl"
expect_fail "not a shard" "$KINFER" merge "$TMP/one.jsonl" "$TMP/s1.jsonl" --out "$TMP/m6.jsonl"
expect_fail "exists" "$KINFER" merge "$TMP/s0.jsonl" "$TMP/s1.jsonl" --out "$TMP/all.jsonl"
# --resume of a shard must name the same shard.
expect_fail "shard" "$KINFER" eval "${run[@]}" --shard 0/3 --resume --out "$TMP/s0.jsonl"

expect_fail "--shard 2/2: the index" "$KINFER" eval "${run[@]}" --shard 2/2 --out "$TMP/x.jsonl"
expect_fail "tensor parallelism splits a model over GPUs" "$KINFER" generate --model default --prompt hi --tp 2
expect_fail "GPU 7 does not exist|no GPU is visible" "$KINFER" generate --model default --prompt hi --devices 0,7
expect_fail "--replicas is for CPU" "$KINFER" generate --model default --prompt hi --num-gpus 1 --replicas 2
expect_fail "--tp 2" "$KINFER" bench decode --model default --tp 2
echo "dist e2e: ok"
