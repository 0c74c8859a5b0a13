#!/usr/bin/env bash
# kinfer eval end to end on SmolLM2 (--model default): a tiny GSM8K run writes
# a header and one graded line per problem, --resume skips finished problems
# and redoes a half-written one, a custom JSONL data set works, and regrade
# sweeps token budgets. Sizes are tiny so this stays fast on 2 cores.
set -euo pipefail
: "${KINFER:?KINFER must point at the kinfer binary}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
run=(--model default --dataset gsm8k -n 2 --seed 7 --no-progress)

"$KINFER" eval "${run[@]}" --max-tokens 8 --limit 2 --out "$TMP/t.jsonl" --json > "$TMP/s1.json"
[ "$(wc -l < "$TMP/t.jsonl")" = 3 ] || fail "expected header + 2 problems"
[ "$(jget "$TMP/s1.json" "['summary']['problems']")" = 2 ] || fail "summary problems"
[ "$(jget "$TMP/s1.json" "['summary']['samples']")" = 4 ] || fail "summary samples"
[ "$(jget "$TMP/s1.json" "['run']['problems_run']")" = 2 ] || fail "problems_run"
python3 - "$TMP/t.jsonl" "$TMP/s1.json" <<'PY' || fail "trace content"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
h = rows[0]
assert h["kinfer_trace"] == 1 and h["dataset"] == "gsm8k" and h["attn"]["policy"] == "dense", h
assert h["prompt_template"] == "kinetics-math" and h["sampling"]["n"] == 2
assert sorted(r["id"] for r in rows[1:]) == ["0", "1"]
for r in rows[1:]:
    assert len(r["samples"]) == 2 and r["efflops"]["efflops"] > 0
    for s in r["samples"]:
        assert s["gen_tokens"] <= 8 and s["prompt_tokens"] > 50, s
        assert s["stop_reason"] in ("eos", "length", "repetition", "stop"), s
s = json.load(open(sys.argv[2]))["summary"]
assert set(s["pass_at_k"]) == {"1", "2"} and set(s["maj_at_k"]) == {"1", "2"}
assert 0 <= s["accuracy"] <= s["pass_at_k"]["2"] <= 1
assert s["efflops_per_problem"] > 0 and s["mean_gen_tokens"] <= 8
PY

# A run killed while writing leaves half a line: --resume drops it and runs
# only problem 2; the finished problems are kept byte for byte.
head -c 40 <(sed -n 2p "$TMP/t.jsonl") >> "$TMP/t.jsonl"
cp "$TMP/t.jsonl" "$TMP/before.jsonl"
"$KINFER" eval "${run[@]}" --max-tokens 8 --limit 3 --out "$TMP/t.jsonl" --resume --json > "$TMP/s2.json"
[ "$(jget "$TMP/s2.json" "['run']['problems_run']")" = 1 ] || fail "resume ran $(jget "$TMP/s2.json" "['run']['problems_run']")"
[ "$(jget "$TMP/s2.json" "['summary']['problems']")" = 3 ] || fail "resume summary"
[ "$(wc -l < "$TMP/t.jsonl")" = 4 ] || fail "expected header + 3 problems"
cmp <(head -3 "$TMP/t.jsonl") <(head -3 "$TMP/before.jsonl") || fail "resume changed finished problems"
# Different settings must not be appended to the same trace.
if "$KINFER" eval "${run[@]}" --limit 3 --max-tokens 9 --out "$TMP/t.jsonl" --resume 2> "$TMP/err.txt"; then
  fail "resume with other settings accepted"
fi
grep -q "max_tokens" "$TMP/err.txt" || fail "resume error does not name the field"
# Nor int8 page summaries to a trace of summaries in the KV dtype (the
# header records summary_dtype only when it is not the default).
if "$KINFER" eval "${run[@]}" --limit 3 --max-tokens 8 --out "$TMP/t.jsonl" --resume --summary-dtype int8 \
    2> "$TMP/err.txt"; then
  fail "resume with int8 summaries accepted"
fi
grep -q "summary_dtype" "$TMP/err.txt" || fail "resume error does not name summary_dtype"

# A custom JSONL data set with its own field names, selected by id.
printf '{"key": "k1", "q": "What is 2+3?", "a": 5}\n{"key": "k2", "q": "What is 3*3?", "a": 9}\n' > "$TMP/mine.jsonl"
"$KINFER" eval --model default --dataset "$TMP/mine.jsonl" --question-field q --answer-field a --ids 1 -n 1 \
  --max-tokens 4 --no-progress --out "$TMP/m.jsonl" --json > "$TMP/s3.json"
python3 - "$TMP/m.jsonl" <<'PY' || fail "custom data set"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2 and rows[1]["id"] == "1" and rows[1]["answer"] == "9" and rows[1]["question"] == "What is 3*3?"
PY

# Long-CoT sweep: cutting to fewer tokens never adds tokens or eFLOPs.
"$KINFER" regrade "$TMP/t.jsonl" --budgets 2,4,8 --json > "$TMP/r.json"
python3 - "$TMP/r.json" <<'PY' || fail "regrade budgets"
import json, sys
r = json.load(open(sys.argv[1]))
b = r["budgets"]
assert [x["budget"] for x in b] == [2, 4, 8]
assert all(x["mean_gen_tokens"] <= x["budget"] for x in b)
assert b[0]["efflops_per_problem"] <= b[1]["efflops_per_problem"] <= b[2]["efflops_per_problem"]
assert r["changed"] == 0, r["changed"]
PY
if "$KINFER" eval --model default --dataset nope -n 1 --out "$TMP/x.jsonl" 2> "$TMP/err.txt"; then fail "bad dataset"; fi
grep -q "nope" "$TMP/err.txt" || fail "dataset error does not name it"
echo "eval e2e: ok"
