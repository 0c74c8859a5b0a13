#!/usr/bin/env bash
# kinfer grade and regrade without a model: verdicts and predictions from the
# CLI, JSON shape, re-scoring a hand-made trace, and clean errors.
set -euo pipefail
: "${KINFER:?KINFER must point at the kinfer binary}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }

for cmd in grade regrade eval; do grep -q -- "--json" <<< "$("$KINFER" "$cmd" --help)" || fail "$cmd --help lacks --json"; done

echo 'Thus $\boxed{\dfrac{3}{4}}$.' | "$KINFER" grade --gold '\frac34' --json > "$TMP/a.json"
[ "$(jget "$TMP/a.json" "['correct']")" = "True" ] || fail "3/4 not correct"
[ "$(jget "$TMP/a.json" "['prediction']")" = '\dfrac{3}{4}' ] || fail "prediction $(cat "$TMP/a.json")"

echo 'Therefore, the final answer is: $\boxed{(3,4)}$. I hope it is correct' |
  "$KINFER" grade --gold '(3,4]' --json > "$TMP/b.json"
[ "$(jget "$TMP/b.json" "['correct']")" = "False" ] || fail "(3,4) accepted for (3,4]"

# Numeric golds fall back to the last number; text output names the verdict.
echo 'She earns 9 * 2 = 18 dollars.' | "$KINFER" grade --gold 18 | grep -q '^correct' || fail "gsm8k last number"
echo 'She earns 9 * 2 = 18 dollars.' | "$KINFER" grade --gold 18 --style math | grep -q '^wrong' ||
  fail "--style math must not use the last number"
if "$KINFER" grade < /dev/null 2> "$TMP/err.txt"; then fail "grade without --gold accepted"; fi

# regrade: a hand-made trace whose stored verdicts are all wrong.
cat > "$TMP/t.jsonl" <<'JSONL'
{"kinfer_trace": 1, "model": "none", "dataset": "mine", "attn": {"policy": "dense"}, "sampling": {"n": 2}, "prompt_template": "plain", "git": "", "created": ""}
{"id": "a", "question": "q1", "answer": "\\frac{1}{2}", "samples": [{"text": "so \\boxed{0.5}", "prediction": "", "correct": false, "prompt_tokens": 10, "gen_tokens": 5, "stop_reason": "eos"}, {"text": "so \\boxed{2}", "prediction": "", "correct": true, "prompt_tokens": 10, "gen_tokens": 7, "stop_reason": "eos"}]}
{"id": "b", "question": "q2", "answer": "x^2+1", "samples": [{"text": "\\boxed{1+x^2}", "prediction": "", "correct": false, "prompt_tokens": 10, "gen_tokens": 9, "stop_reason": "eos"}, {"text": "no answer", "prediction": "", "correct": false, "prompt_tokens": 10, "gen_tokens": 20, "stop_reason": "length"}]}
JSONL
"$KINFER" regrade "$TMP/t.jsonl" --json --write "$TMP/re.jsonl" > "$TMP/r.json"
[ "$(jget "$TMP/r.json" "['changed']")" = "3" ] || fail "changed verdicts: $(cat "$TMP/r.json")"
[ "$(jget "$TMP/r.json" "['summary']['accuracy']")" = "0.5" ] || fail "accuracy"
[ "$(jget "$TMP/r.json" "['summary']['pass_at_k']['2']")" = "1.0" ] || fail "pass@2"
[ "$(jget "$TMP/r.json" "['summary']['stop_reasons']['length']")" = "1" ] || fail "stop reasons"
python3 - "$TMP/re.jsonl" <<'PY' || fail "rewritten trace"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows[0]["kinfer_trace"] == 1
assert [s["prediction"] for s in rows[1]["samples"]] == ["0.5", "2"]
assert [s["correct"] for s in rows[2]["samples"]] == [True, False]
PY
if "$KINFER" regrade "$TMP/missing.jsonl" 2> "$TMP/err.txt"; then fail "missing trace accepted"; fi
grep -q "missing.jsonl" "$TMP/err.txt" || fail "error does not name the file"
echo '{"kinfer_trace": 1' > "$TMP/bad.jsonl"
if "$KINFER" regrade "$TMP/bad.jsonl" 2> "$TMP/err.txt"; then fail "broken trace accepted"; fi
if "$KINFER" regrade "$TMP/t.jsonl" --budgets 0 2> "$TMP/err.txt"; then fail "--budgets 0 accepted"; fi
echo "grade e2e: ok"
