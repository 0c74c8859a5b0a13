#!/usr/bin/env bash
# Same-machine A/B of the whole decode step: a baseline revision against the
# working tree, both built on the GPU machine, rows interleaved (A B A B) so
# the machine and its clocks are the same for both. The attention
# microbenchmark alone is no proxy for the step (docs/cuda-experiments.md, 2026-11-30).
#
#   here:    bash dev/cuda/ab.sh prepare [REV]   # REV (default HEAD) -> dev/cuda/ab_base.tgz
#   device:  bash dev/cuda/ab.sh run             # carry build-devdeps and dev/cuda/ab_base.tgz; ~3 min
# (ab_base.tgz is git-ignored, so a commit cannot take it in; it travels only when carried)
# AB_ROWS overrides the rows: "[VAR=VALUE...] preset batch context attn [flags];..."
# (VAR=VALUE: environment for both variants' runs of that row; default: the
# qwen3-0.6b B32/B64 x 16K blocktopk rows of issue 13 and one dense row; a
# row with --profile compares the attention op's own time per step);
# AB_REPS the number of A B rounds (default 2). JSON lines go to $OUT/ab.jsonl
# with "variant": "base" or "tree".
set -uo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tgz=$here/dev/cuda/ab_base.tgz

prepare() {
  local rev=${1:-HEAD}
  git -C "$here" archive "$rev" --format=tar.gz -o "$tgz" || exit 1
  echo "baseline $(git -C "$here" rev-parse --short "$rev") -> $tgz ($(du -h "$tgz" | cut -f1)); remove it afterwards"
}

run() {
  [[ -s $tgz ]] || { echo "ab: no $tgz (run 'bash dev/cuda/ab.sh prepare' here first)"; exit 1; }
  local OUT=${OUT:-$here/out}
  mkdir -p "$OUT"
  source "$here/dev/cuda/devdeps.sh"
  devdeps_debs "$here"
  devdeps_cutlass "$here"
  rm -rf /tmp/ab_base && mkdir -p /tmp/ab_base && tar -xzf "$tgz" -C /tmp/ab_base
  local jobs=$(( $(nproc) / 2 ))
  for v in base tree; do
    local src=/tmp/ab_base
    [[ $v == tree ]] && src=$here
    (cmake -S "$src" -B /tmp/ab_$v -G Ninja -DKINFER_CUDA=ON -DKINFER_TESTS=OFF -DASIO_INCLUDE_DIR=$R/usr/include \
       > "$OUT/ab_build_$v.log" 2>&1 && ninja -C /tmp/ab_$v -j$jobs kinfer >> "$OUT/ab_build_$v.log" 2>&1 ||
       { echo "ab: the $v build failed"; tail -5 "$OUT/ab_build_$v.log"; }) &
  done
  wait
  [[ -x /tmp/ab_base/kinfer && -x /tmp/ab_tree/kinfer ]] || exit 1
  local copy
  copy=$(/tmp/ab_tree/kinfer bench copy --json | python3 -c "import json,sys; print(json.load(sys.stdin)['copy_gbps'])")
  IFS=';' read -ra rows <<< "${AB_ROWS:-qwen3-0.6b 32 16384 blocktopk;qwen3-0.6b 64 16384 blocktopk;qwen3-0.6b 32 16384 dense}"
  for ((rep = 0; rep < ${AB_REPS:-2}; ++rep)); do
    for row in "${rows[@]}"; do
      set -- $row
      local envs=()
      while [[ ${1:-} == *=* ]]; do envs+=("$1"); shift; done
      for v in base tree; do
        env "${envs[@]}" /tmp/ab_$v/kinfer bench decode --device cuda --model random:$1 --batch $2 --context $3 --attn $4 \
          --topk-pages 64 --local-pages 4 --page-size 16 --tokens 32 --copy-gbps "$copy" --json "${@:5}" 2>>"$OUT/ab.err" |
          python3 -c "import json,sys; j=json.load(sys.stdin); j['variant']='$v'; j['env']='${envs[*]}'; print(json.dumps(j))" >> "$OUT/ab.jsonl"
      done
    done
  done
  python3 - "$OUT/ab.jsonl" <<'PY'
import json, sys, collections
t = collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    j = json.loads(l)
    # --profile rows (ops timed one by one, no graphs) compare the attention op's time per step
    prof = j.get('profile')
    attn = sum(v['ms_per_step'] for k, v in prof.items() if k.startswith('attention')) if prof else None
    a = j['attn']
    kind = a['kind'] + (' int8' if a.get('summary_dtype') == 'int8' else '') + (' dense-layers' if a.get('dense_layers') else '')
    key = (j['model'], j['batch'], j['context'], kind + (' attention op' if prof else ''), j.get('env', ''))
    t[key][j['variant']].append(attn if prof else j['step_ms'])
print(f"{'row':72} {'base ms':>10} {'tree ms':>10} {'tree/base':>10}")
for k, v in t.items():
    b, w = min(v['base']), min(v['tree'])
    print(f"{' '.join(map(str, k)):72} {b:10.3f} {w:10.3f} {w / b:10.3f}")
PY
}

case ${1:-} in
  prepare) prepare "${2:-}" ;;
  run) run ;;
  *) sed -n 2,14p "$0"; exit 2 ;;
esac
