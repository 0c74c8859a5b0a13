#!/usr/bin/env bash
# kinfer vs llama.cpp on the CPU, on the same GGUF, in one run:
#   tg1   decode, batch 1, 1 thread      llama-bench -p 0 -n 64 -t 1   | kinfer bench decode --batch 1 --threads 1
#   tg2   decode, batch 1, 2 threads     llama-bench -p 0 -n 64 -t 2   | ... --threads 2
#   b8    8 sequences decoding, 2 thr.   llama-batched-bench -npp 32 -ntg 64 -npl 8 -t 2 | --batch 8 --prompt-len 32
#   pp256 prompt processing, 256 tokens  llama-bench -p 256 -n 0 -t 2  | --prompt-len 256 (prefill_tok_s)
# Each measurement is taken --reps times with the two engines alternating (so
# both see the same machine load), and the medians are compared. llama.cpp is
# built by tools/llamacpp_build.sh (PyPI sdist of llama-cpp-python 0.3.36,
# CPU only, GGML_NATIVE) outside the repository.
#
#   tools/bench_llamacpp.sh [--model GGUF] [--kinfer BIN] [--reps N] [--out DIR] [--fixture]
# Writes DIR/cpu_llamacpp.json (every run, the commands, the machine and
# its load) and DIR/cpu_llamacpp.md (the table); DIR defaults to
# bench/results. --fixture also remakes the greedy-text fixture
# tests/fixtures/llamacpp/smollm2_greedy.json with llama.cpp.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cmdline="tools/bench_llamacpp.sh $*"
model="${KINFER_DEFAULT_MODEL:-$HOME/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf}"
kinfer="$ROOT/build/kinfer" reps=5 out="$ROOT/bench/results" fixture=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model=$2; shift ;;
    --kinfer) kinfer=$2; shift ;;
    --reps) reps=$2; shift ;;
    --out) out=$2; shift ;;
    --fixture) fixture=1 ;;
    *) echo "bench_llamacpp.sh: unknown flag '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ -s "$model" ]] || { echo "no model at $model (run scripts/demo once, or pass --model)" >&2; exit 1; }
[[ -x "$kinfer" ]] || { echo "no kinfer binary at $kinfer (build it first)" >&2; exit 1; }
source "$ROOT/tools/llamacpp_build.sh"

if ((fixture)); then
  python3 "$ROOT/tools/make_llamacpp_greedy.py" --model "$model" --out "$ROOT/tests/fixtures/llamacpp/smollm2_greedy.json"
fi

mkdir -p "$out"
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before="$(load)"

# name | llama.cpp command | kinfer bench decode flags (one line each)
tests=(
  "tg1|$LLAMACPP_BIN/llama-bench -m $model -p 0 -n 64 -t 1 -r 1 -o json|--batch 1 --prompt-len 1 --tokens 64 --threads 1"
  "tg2|$LLAMACPP_BIN/llama-bench -m $model -p 0 -n 64 -t 2 -r 1 -o json|--batch 1 --prompt-len 1 --tokens 64 --threads 2"
  "b8|$LLAMACPP_BIN/llama-batched-bench -m $model -c 1024 -b 512 -ub 512 -npp 32 -ntg 64 -npl 8 -t 2 -tb 2 --output-format jsonl|--batch 8 --prompt-len 32 --tokens 64 --threads 2"
  "pp256|$LLAMACPP_BIN/llama-bench -m $model -p 256 -n 0 -t 2 -r 1 -o json|--batch 1 --prompt-len 256 --tokens 1 --threads 2"
)
for ((rep = 0; rep < reps; ++rep)); do
  for t in "${tests[@]}"; do
    IFS='|' read -r name lcmd kflags <<<"$t"
    echo "[$((rep + 1))/$reps] $name" >&2
    # shellcheck disable=SC2086
    $lcmd >"$raw/$name.llama.$rep" 2>/dev/null
    # shellcheck disable=SC2086
    "$kinfer" bench decode --model "$model" $kflags --json >"$raw/$name.kinfer.$rep"
  done
done
load_after="$(load)"

python3 - "$raw" "$out" "$reps" "$model" "$kinfer" "$load_before" "$load_after" "$ROOT" "$cmdline" "${tests[@]}" <<'PY'
import json, os, platform, statistics, subprocess, sys, time
raw, out, reps, model, kinfer, load_before, load_after, root, cmdline = sys.argv[1:10]
tests = [t.split("|") for t in sys.argv[10:]]
reps = int(reps)

def llama_value(name, text):
    if name == "b8":  # llama-batched-bench jsonl: aggregate decode tokens/s of the 8 sequences
        return [json.loads(l) for l in text.splitlines() if l.startswith("{")][-1]["speed_tg"]
    return json.loads(text)[0]["avg_ts"]  # llama-bench: tokens/s of the test

def kinfer_value(name, j):
    return j["prefill_tok_s"] if name == "pp256" else j["tokens_per_s"]

what = {"tg1": "decode, batch 1, 1 thread", "tg2": "decode, batch 1, 2 threads",
        "b8": "decode, 8 sequences, 2 threads", "pp256": "prompt processing, 256 tokens, 2 threads"}
runs, rows = {}, []
for name, lcmd, kflags in tests:
    l = [llama_value(name, open(f"{raw}/{name}.llama.{r}").read()) for r in range(reps)]
    kj = [json.load(open(f"{raw}/{name}.kinfer.{r}")) for r in range(reps)]
    k = [kinfer_value(name, j) for j in kj]
    ml, mk = statistics.median(l), statistics.median(k)
    runs[name] = {"what": what[name], "llama_cpp_tok_s": l, "kinfer_tok_s": k, "median_llama_cpp": ml,
                  "median_kinfer": mk, "ratio": mk / ml, "llama_cpp_command": lcmd,
                  "kinfer_command": f"{kinfer} bench decode --model {model} {kflags} --json",
                  "kinfer_backend": kj[0]["backend"], "kinfer_weights": kj[0].get("weights", "")}
    rows.append((what[name], ml, mk, mk / ml))

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
result = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "model": os.path.basename(model),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "load_before": load_before, "load_after": load_after,
                "kernel": platform.release()},
    "llama_cpp": {"pypi": "llama-cpp-python==0.3.36", "commit": os.environ.get("LLAMACPP_COMMIT", ""),
                  "build": "CMake Release, GGML_NATIVE=ON, CPU only (tools/llamacpp_build.sh)"},
    "kinfer_commit": sh(f"git -C {root} rev-parse --short HEAD"),
    "reps": reps,
    "command": cmdline,
    "runs": runs,
}
os.makedirs(out, exist_ok=True)
with open(f"{out}/cpu_llamacpp.json", "w") as f:
    json.dump(result, f, indent=1)
md = [f"kinfer vs llama.cpp ({result['llama_cpp']['pypi']}, commit {result['llama_cpp']['commit']}) on "
      f"{result['model']}, {cpu}, {os.cpu_count()} cores; median of {reps} alternating runs; "
      f"load average {load_before} before, {load_after} after.", "",
      "| test | llama.cpp tok/s | kinfer tok/s | kinfer / llama.cpp |", "|---|---|---|---|"]
md += [f"| {w} | {l:.1f} | {k:.1f} | {r:.2f}x |" for w, l, k, r in rows]
open(f"{out}/cpu_llamacpp.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
