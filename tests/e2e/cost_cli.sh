#!/usr/bin/env bash
# kinfer cost / frontier / plan end to end: numbers from the formulas
# (worked out independently in Python), a known frontier on fixture traces,
# a non-empty plot, and clean errors on bad input.
set -euo pipefail
: "${KINFER:?KINFER must point at the kinfer binary}"
: "${KINFER_SRC:?KINFER_SRC must point at the source tree}"
FIX="$KINFER_SRC/tests/fixtures/traces"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# near GOT WANT: relative difference below 1e-9
near() { python3 -c "import sys; g,w=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(g-w)<=1e-9*abs(w) else 1)" "$1" "$2"; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }

for cmd in cost frontier plan; do grep -q -- "--json" <<< "$("$KINFER" "$cmd" --help)" || fail "$cmd --help lacks --json"; done

# Dense Qwen3-0.6B, Lin 100, L 1000, N 4, B200: 6.5665024e12 FLOPs, 2.408448e11 bytes.
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len 1000 -n 4 --json > "$TMP/dense.json"
near "$(jget "$TMP/dense.json" "['compute']")" 6566502400000 || fail "dense compute"
near "$(jget "$TMP/dense.json" "['memory']")" 240844800000 || fail "dense memory"
near "$(jget "$TMP/dense.json" "['intensity']")" 562.5 || fail "intensity"
near "$(jget "$TMP/dense.json" "['efflops']")" 142041702400000 || fail "dense efflops"

# Sparse beyond the budget, H100 intensity: kv = 1024*5000 - 924^2/2.
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len 5000 -n 2 --attn sparse --budget 1024 \
  --hardware h100 --json > "$TMP/sparse.json"
near "$(jget "$TMP/sparse.json" "['compute']")" 17192974516224 || fail "sparse compute"
near "$(jget "$TMP/sparse.json" "['memory']")" 1076487258112 || fail "sparse memory"
near "$(jget "$TMP/sparse.json" "['efflops']")" "$(python3 -c 'print(17192974516224 + 1076487258112*295)')" || fail "sparse efflops"

# Blocktopk with floor-divided search terms.
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len 1001 -n 3 --attn blocktopk \
  --local-tokens 80 --page-size 16 --topk-pages 64 --json > "$TMP/btk.json"
near "$(jget "$TMP/btk.json" "['compute']")" 4943061387264 || fail "blocktopk compute"
near "$(jget "$TMP/btk.json" "['memory']")" 212557176832 || fail "blocktopk memory"
# int8 page summaries: the search's 5,740,134,400 bytes become 132/256 of it.
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len 1001 -n 3 --attn blocktopk \
  --local-tokens 80 --page-size 16 --topk-pages 64 --summary-dtype int8 --json > "$TMP/btk8.json"
near "$(jget "$TMP/btk8.json" "['memory']")" 209776799232 || fail "blocktopk int8 memory"
near "$(jget "$TMP/btk8.json" "['compute']")" 4943061387264 || fail "blocktopk int8 compute"
if "$KINFER" cost --model qwen3-0.6b --prompt-len 1 --gen-len 1 --summary-dtype int8 2> "$TMP/err.txt"; then
  fail "--summary-dtype int8 with dense accepted"
fi
grep -q "blocktopk only" "$TMP/err.txt" || fail "--summary-dtype error unclear: $(cat "$TMP/err.txt")"

# A list of lengths is priced as the mean; --intensity overrides the preset.
"$KINFER" cost --model qwen3-0.6b --prompt-len 50 --gen-len 1000,3000 -n 2 --intensity 562.5 --json > "$TMP/mean.json"
near "$(jget "$TMP/mean.json" "['efflops']")" 336219955200000 || fail "mean over lengths"

# Readable breakdown.
"$KINFER" cost --model qwen3-8b --prompt-len 128 --gen-len 8192 -n 8 --attn blocktopk > "$TMP/text.txt"
grep -q "page search" "$TMP/text.txt" || fail "text breakdown lacks the search part"
grep -q "eFLOPs" "$TMP/text.txt" || fail "text breakdown lacks eFLOPs"

# Bad input: clean errors, exit 1 (not a crash).
if "$KINFER" cost --model qwen3-0.6b --prompt-len 1 --gen-len 10 --attn sparse 2> "$TMP/err"; then fail "sparse without budget accepted"; fi
grep -q -- "--budget" "$TMP/err" || fail "error does not name --budget"
if "$KINFER" cost --model no-such-model --prompt-len 1 --gen-len 10 2> /dev/null; then fail "unknown model accepted"; fi
if "$KINFER" cost --model qwen3-0.6b --prompt-len 1 --gen-len 10,x 2> /dev/null; then fail "bad length accepted"; fi

# Frontier over fixture traces: qwen3-0.6b dense is cheapest, 8B blocktopk beats 8B dense at equal accuracy.
"$KINFER" frontier "$FIX"/kinfer_toy_*.jsonl --json --plot "$TMP/frontier.png" > "$TMP/frontier.json"
[ -s "$TMP/frontier.png" ] || fail "no plot written"
python3 - "$TMP/frontier.json" <<'PY' || fail "frontier numbers"
import json, sys
d = json.load(open(sys.argv[1]))
pts = {(p["label"], p["n"]): p for p in d["points"]}
assert len(pts) == 6, pts.keys()
small = pts[("qwen3-0.6b dense", 1)]
assert abs(small["coverage"] - 0.25) < 1e-12, small            # (1/2 + 0/2) / 2
big1 = pts[("qwen3-8b dense", 1)]
assert abs(big1["coverage"] - 0.75) < 1e-12, big1
sparse1 = pts[("qwen3-8b blocktopk T=80 P=16 K=64", 1)]
assert sparse1["efflops"] < big1["efflops"]
# Memory-bound at B200 intensity: 8B with block top-k is cheaper than 0.6B dense and more accurate,
# so it alone forms the frontier (the paper's point).
front = {(p["label"], p["n"]) for p in d["frontier"]}
assert front == {("qwen3-8b blocktopk T=80 P=16 K=64", 1), ("qwen3-8b blocktopk T=80 P=16 K=64", 2)}, front
P8, H8, D8 = 8.19e9, 32, 128 * 36
def kv(B, Lin, L): return Lin * L + 0.5 * L * L if Lin + L <= B else B * L - 0.5 * max(0, B - Lin) ** 2
def btk(L, N=1, Lin=100, T=80, Ps=16, K=64):
    k = kv(T + Ps * K, Lin, L)
    compute = N * (2 * P8 * L + 4 * k * H8 * D8) + N * ((2 * Lin + L) // Ps) * L * H8 * D8
    memory = 4 * N * k * 8 * D8 + ((2 * Lin + N * L) // Ps) * L * 8 * D8
    return compute + memory * 562.5
want_b = (btk(1000) + btk(1000) + btk(2000) + btk(2000)) / 4
assert abs(sparse1["efflops"] - want_b) <= 1e-9 * want_b, (sparse1["efflops"], want_b)
# Mean eFLOPs per problem, each problem priced from its own lengths (dense 0.6B, N 1, Lin 100, B200).
P, Hq, Hkv, D, I = 0.752e9, 16, 8, 128 * 28, 562.5
def dense(L, N=1, Lin=100):
    return N * (2 * P * L + 2 * (2 * Lin + L) * L * Hq * D) + 2 * (2 * Lin + N * L) * L * Hkv * D * I
want = ((dense(1000) + dense(3000)) / 2 + dense(2000)) / 2
assert abs(small["efflops"] - want) <= 1e-9 * want, (small["efflops"], want)
PY

# Kinetics files need a tokenizer for their token counts; without one, a clear error.
if "$KINFER" frontier "$FIX/kinetics_aime24_qwen3-0-6b_blocktopk.jsonl" 2> "$TMP/err"; then fail "Kinetics file without tokenizer accepted"; fi
grep -q -- "--tokenizer" "$TMP/err" || fail "error does not mention --tokenizer"
# The Qwen3 tokenizer fixture (gzipped tokenizer.json) unpacked into an HF-style directory.
QWEN_TOK="$TMP/qwen3"
if [ -e "$KINFER_SRC/tests/fixtures/tokenizer/qwen3/tokenizer.json.gz" ]; then
  mkdir -p "$QWEN_TOK"
  gunzip -c "$KINFER_SRC/tests/fixtures/tokenizer/qwen3/tokenizer.json.gz" > "$QWEN_TOK/tokenizer.json"
  cp "$KINFER_SRC/tests/fixtures/tokenizer/qwen3/tokenizer_config.json" "$QWEN_TOK/"
  "$KINFER" frontier "$FIX/kinetics_aime24_qwen3-0-6b_blocktopk.jsonl" --tokenizer "$QWEN_TOK" --json > "$TMP/kin.json"
  python3 -c "
import json,sys; d=json.load(open('$TMP/kin.json')); p=d['points']
assert [x['n'] for x in p]==[1,2], p
assert abs(p[0]['coverage']-2/3)<1e-12, p[0]
assert p[0]['attn']=='blocktopk T=32 P=16 K=8', p[0]
" || fail "Kinetics trace frontier"
  # Long-CoT budgets: every sample is short, so 4096 keeps the accuracy; 4 tokens cut everything.
  "$KINFER" frontier "$FIX/kinetics_aime24_qwen3-0-6b_blocktopk.jsonl" --tokenizer "$QWEN_TOK" --budgets 4,4096 --ns 1 --json > "$TMP/cot.json"
  python3 -c "
import json; d=json.load(open('$TMP/cot.json')); p={x['gen_budget']:x for x in d['points']}
assert abs(p[4096]['coverage']-2/3)<1e-12 and p[4]['coverage']==0.0, p
assert p[4]['mean_gen_tokens']==4, p[4]
" || fail "long-CoT budgets"
fi

# Plan with traces: the best within a budget, and runners-up.
"$KINFER" plan --budget 1e18 "$FIX"/kinfer_toy_*.jsonl --json > "$TMP/plan.json"
python3 -c "
import json; d=json.load(open('$TMP/plan.json'))
assert d['best']['coverage']==1.0, d['best']
assert len(d['runners_up'])>=1
" || fail "plan with traces"
if "$KINFER" plan --budget 1 "$FIX"/kinfer_toy_*.jsonl > /dev/null; then fail "impossible budget reported a plan"; fi
# The traces priced as block top-k with int8 page summaries: the same best
# configuration, fewer eFLOPs; --summary-dtype alone is refused.
"$KINFER" plan --budget 1e18 "$FIX"/kinfer_toy_*.jsonl --attn blocktopk --json > "$TMP/plan_bt.json"
"$KINFER" plan --budget 1e18 "$FIX"/kinfer_toy_*.jsonl --attn blocktopk --summary-dtype int8 --json > "$TMP/plan_i8.json"
python3 -c "
import json; a=json.load(open('$TMP/plan_bt.json'))['best']; b=json.load(open('$TMP/plan_i8.json'))['best']
assert b['attn']==a['attn']+' int8' and b['n']==a['n'] and b['efflops']<a['efflops'], (a, b)
" || fail "plan with traces priced with int8 summaries"
if "$KINFER" plan --budget 1e18 "$FIX"/kinfer_toy_*.jsonl --summary-dtype int8 > /dev/null 2>&1; then
  fail "plan took --summary-dtype without --attn"
fi

# Plan without traces: N=1 longest L for dense 0.6B matches the cost command.
"$KINFER" plan --budget 1e15 --prompt-len 100 --models qwen3-0.6b --policies dense --json > "$TMP/plan2.json"
L=$(jget "$TMP/plan2.json" "['configs'][0]['max_gen_len']")
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len "$L" --json > "$TMP/c1.json"
"$KINFER" cost --model qwen3-0.6b --prompt-len 100 --gen-len "$((L + 1))" --json > "$TMP/c2.json"
python3 -c "
import json; a=json.load(open('$TMP/c1.json'))['efflops']; b=json.load(open('$TMP/c2.json'))['efflops']
assert a<=1e15<b, (a,b)
" || fail "plan without traces: L=$L is not the longest affordable"
# Block top-k with int8 page summaries reads fewer bytes a step: at the same
# budget it affords at least as long a generation, the longest that `kinfer
# cost --summary-dtype int8` prices within the budget.
"$KINFER" plan --budget 2e15 --prompt-len 4000 --models qwen3-8b --policies blocktopk,blocktopk-int8 --max-n 1 \
  --json > "$TMP/plan4.json"
python3 -c "
import json; c=json.load(open('$TMP/plan4.json'))['configs']
assert [x['attn'].endswith(' int8') for x in c]==[False, True], [x['attn'] for x in c]
assert c[0]['max_gen_len']<c[1]['max_gen_len']<32768, c
" || fail "plan without traces: blocktopk-int8 is not the cheaper policy"
L=$(jget "$TMP/plan4.json" "['configs'][1]['max_gen_len']")
for g in "$L" "$((L + 1))"; do
  "$KINFER" cost --model qwen3-8b --prompt-len 4000 --gen-len "$g" --attn blocktopk --summary-dtype int8 --json \
    > "$TMP/c_$g.json"
done
python3 -c "
import json; a=json.load(open('$TMP/c_$L.json'))['efflops']; b=json.load(open('$TMP/c_$((L + 1)).json'))['efflops']
assert a<=2e15<b, (a,b)
" || fail "plan without traces: blocktopk-int8 L=$L is not the longest affordable"
if "$KINFER" plan --budget 1e16 --prompt-len 100 --policies blocktopk-fp8 2> "$TMP/err.txt"; then
  fail "an unknown policy was accepted"
fi
grep -q "unknown policy 'blocktopk-fp8'" "$TMP/err.txt" || fail "unknown policy error: $(cat "$TMP/err.txt")"
# Negative or non-numeric numbers: the option, what it wants and what it got (not CLI11's DBL_MAX range).
if "$KINFER" plan --budget -5 --prompt-len 100 2> "$TMP/err.txt"; then fail "a negative budget was accepted"; fi
grep -q -- "--budget: must be > 0 (got -5)" "$TMP/err.txt" || fail "negative budget error: $(cat "$TMP/err.txt")"
if "$KINFER" cost --model qwen3-8b --prompt-len x --gen-len 10 2> "$TMP/err.txt"; then fail "--prompt-len x accepted"; fi
grep -q -- "'x' is not a number" "$TMP/err.txt" || fail "non-numeric --prompt-len error: $(cat "$TMP/err.txt")"
"$KINFER" plan --budget 1e16 --prompt-len 1000 > "$TMP/plan3.txt"
grep -q "qwen3-32b" "$TMP/plan3.txt" || fail "plan table lacks qwen3-32b"
echo "cost e2e: ok"
