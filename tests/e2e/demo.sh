#!/usr/bin/env bash
# scripts/demo's main job (scripts/demo_job.sh) end to end at a tiny size on
# SmolLM2 (--model default): it picks the CPU here, runs dense and block top-k
# k2 (and k6 with --budgets 2), and writes the summaries, the frontier (table
# and JSON) and results.md with one row per run; a rerun resumes from the
# traces without generating again; a bad flag is refused.
set -euo pipefail
: "${KINFER:?KINFER must point at the kinfer binary}"
: "${KINFER_SRC:?KINFER_SRC must point at the source tree}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
job=(bash "$KINFER_SRC/scripts/demo_job.sh" "$KINFER")
size=(--limit 2 -n 2 --max-tokens 8 --out "$TMP/d")

"${job[@]}" "${size[@]}" --budgets 2 2> "$TMP/log" || { cat "$TMP/log" >&2; fail "the job failed"; }
grep -q "== dense on cpu: gsm8k, n=2, max_tokens=8, limit=2" "$TMP/log" || fail "expected the CPU and the sizing flags"
python3 - "$TMP/d" <<'PY' || fail "outputs"
import json, os, sys
d = sys.argv[1]
runs = ["dense", "blocktopk_k2", "blocktopk_k6"]
for r in runs:
    s = json.load(open(f"{d}/{r}.summary.json"))
    assert s["summary"]["problems"] == 2 and s["summary"]["n"] == 2, s["summary"]
    rows = [json.loads(l) for l in open(f"{d}/{r}.jsonl")]
    assert len(rows) == 3, r  # header + 2 problems
    pol = rows[0]["attn"]
    assert pol["policy"] == ("dense" if r == "dense" else "blocktopk"), pol
    if r != "dense":
        assert pol["topk_pages"] == int(r[-1]), pol
f = json.load(open(f"{d}/frontier.json"))
# N = 1 and 2 for each of the three configurations, each labelled with the model's name.
pts = f["points"]
assert len(pts) == 6 and {p["n"] for p in pts} == {1, 2}, pts
assert len({p["attn"] for p in pts}) == 3 and all(p["label"].startswith(p["model"]) for p in pts), pts
assert any(p["on_frontier"] for p in pts)
table = open(f"{d}/results.md").read().splitlines()
assert table[0].startswith("| run |") and len(table) == 2 + len(runs), table
for r, line in zip(runs, table[2:]):
    assert line.startswith(f"| {r} | 2 | 2 |"), line
assert os.path.getsize(f"{d}/frontier.txt") > 0
PY

# The traces are complete: a rerun only regrades them (no generation).
before=$(md5sum "$TMP/d/dense.jsonl")
"${job[@]}" "${size[@]}" 2> "$TMP/log2" || fail "the rerun failed"
[ "$(md5sum "$TMP/d/dense.jsonl")" = "$before" ] || fail "the rerun rewrote a finished trace"

# --device cpu forces the CPU; an unknown flag is an error naming it.
"${job[@]}" --device cpu "${size[@]}" 2> "$TMP/log3" || fail "--device cpu failed"
if "${job[@]}" --bogus 2> "$TMP/err"; then fail "--bogus accepted"; fi
grep -q "unknown flag '--bogus'" "$TMP/err" || fail "no message for the bad flag"
echo "demo job: ok"
