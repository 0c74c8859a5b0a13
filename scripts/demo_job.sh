#!/usr/bin/env bash
# The main job (called by scripts/demo with the kinfer binary first):
# Best-of-N on a math data set with dense attention and with block top-k at
# one KV budget (two with --full or --budgets 2), each run a resumable trace, then the accuracy-vs-eFLOPs
# frontier (table + PNG) and one results table:
#   accuracy@1, pass@k, maj@N, eFLOPs per problem, tokens/s, KV bytes read.
# Defaults: SmolLM2-135M-Instruct on the CPU, the first 50 GSM8K problems x 8
# samples x 112 tokens, dense and block top-k k2: about 3.5 minutes on 2 cores
# (under 2 min a run); --quick: 10 problems (under a minute). With an NVIDIA GPU
# and a CUDA build (--device auto finds it), the job is sized to show the
# science: every GSM8K problem (1,319) x 16 samples x 320 tokens, dense and
# block top-k k2 and k6 (under a minute a run on an H200); --quick: 200
# problems. Flags: --quick, --full (every problem, and block top-k k6 too),
# --budgets 2 (k6 too), --device auto|cpu|cuda, --model M, --dataset D, -n N,
# --max-tokens L, --limit K, --out DIR, --threads T.
set -euo pipefail
KINFER=${1:?usage: demo_job.sh KINFER [--quick|--full] [--device D] [--model M] [--dataset D] [-n N] [--max-tokens L] [--limit K] [--out DIR]}
shift
# The device first: it sets the defaults the other flags override.
device=auto
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do [[ ${args[i]} == --device ]] && device=${args[i + 1]:-auto}; done
if [[ $device == auto ]]; then
  device=cpu
  # A CUDA build and a GPU its sm_90a kernels run on (H100/H200).
  if "$KINFER" version --json 2>/dev/null | grep -q '"cuda_device_supported":true'; then device=cuda; fi
fi
model=default dataset=gsm8k out=out/demo threads=0
if [[ $device == cuda ]]; then
  n=16 max_tokens=320 limit=0 budgets=2 quick_limit=200
else
  n=8 max_tokens=112 limit=50 budgets=1 quick_limit=10
fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) shift ;;
    --quick) limit=$quick_limit ;;
    --full) limit=0 budgets=2 ;;
    --budgets) budgets=$2; shift ;;
    --model) model=$2; shift ;;
    --dataset) dataset=$2; shift ;;
    -n) n=$2; shift ;;
    --max-tokens) max_tokens=$2; shift ;;
    --limit) limit=$2; shift ;;
    --out) out=$2; shift ;;
    --threads) threads=$2; shift ;;
    *) echo "demo_job.sh: unknown flag '$1'" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
common=(--model "$model" --dataset "$dataset" -n "$n" --max-tokens "$max_tokens" --seed 0 --device "$device" --resume --json)
[[ $device == cpu ]] && common+=(--threads "$threads")
[[ "$limit" -gt 0 ]] && common+=(--limit "$limit")
[[ -t 2 ]] && common+=(--progress)

# name | attention flags: block top-k keeps the sink page, the last local
# pages and the top-k pages by q.mean(k) score (16-token pages).
runs=(
  "dense|--attn dense"
  "blocktopk_k2|--attn blocktopk --local-pages 1 --topk-pages 2"
)
# A second block top-k budget adds a run (~4 min at the default size).
[[ "$budgets" -ge 2 ]] && runs+=("blocktopk_k6|--attn blocktopk --local-pages 2 --topk-pages 6")
for r in "${runs[@]}"; do
  name=${r%%|*}
  read -r -a flags <<< "${r#*|}"
  echo "== $name on $device: $dataset, n=$n, max_tokens=$max_tokens, limit=${limit/#0/all} (${flags[*]})" >&2
  "$KINFER" eval "${common[@]}" "${flags[@]}" --out "$out/$name.jsonl" > "$out/$name.summary.json"
done

traces=()
for r in "${runs[@]}"; do traces+=("$out/${r%%|*}.jsonl"); done
plot_flag=()
command -v gnuplot > /dev/null && plot_flag=(--plot "$out/frontier.png" --title "kinfer ($device): Best-of-$n on $dataset, ${limit/#0/all} problems, $max_tokens tokens")
"$KINFER" frontier "${traces[@]}" "${plot_flag[@]}" > "$out/frontier.txt"
"$KINFER" frontier "${traces[@]}" --json > "$out/frontier.json"

python3 - "$out" "${runs[@]}" <<'PY' | tee "$out/results.md"
import json, sys
out, runs = sys.argv[1], [r.split("|")[0] for r in sys.argv[2:]]
rows = []
for name in runs:
    j = json.load(open(f"{out}/{name}.summary.json"))
    s, run = j["summary"], j["run"]
    eng = run.get("engine", {})
    n = s["n"]
    rows.append([name, s["problems"], n, f'{s["accuracy"]:.3f}',
                 " ".join(f'{s["pass_at_k"][k]:.3f}' for k in sorted(s["pass_at_k"], key=int)),
                 f'{s["maj_at_k"][str(n)]:.3f}', f'{s["mean_gen_tokens"]:.0f}',
                 f'{s.get("tera_efflops_per_problem", 0):.4f}', f'{run["tok_s"]:.1f}',
                 f'{eng.get("kv_bytes_read_per_token", 0) / 1e6:.2f}'])
head = ["run", "problems", "N", "acc@1", "pass@1,2,4..N", "maj@N", "gen tok", "TeFLOPs/problem",
        "tok/s (this run)", "KV MB read/token"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
PY
echo >&2
cat "$out/frontier.txt" >&2
echo "traces, summaries and results.md in $out/" >&2
