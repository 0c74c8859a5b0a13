#!/usr/bin/env bash
# One call on the GPU machine: build the standalone CUDA targets (dev/cuda),
# run the kernel tests, then the benchmarks. Logs and JSON land in $OUT.
#   bash dev/cuda/device_run.sh [all|test|bench|prefill]      (carry build-devdeps)
# prefill: only the attention tests (prefill + decode) and the causal prefill
# benchmark rows (kinfer and torch SDPA on the same shapes).
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
mode=${1:-all}
T0=$(date +%s)
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  nvcc --version | tail -1
  for p in nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libpcre2-dev libutf8proc-dev libopenblas-dev libgtest-dev; do
    dpkg -s $p >/dev/null 2>&1 && echo "have $p" || echo "missing $p"
  done
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

B=build-dev-gpu
targets=""
[[ $mode == prefill ]] && targets="kernels_cuda_prefill kernels_cuda_attention kinfer_cuda_bench"
if ! { cmake -S dev/cuda -B $B -G Ninja -DKF_DEPS=$PWD/build-devdeps > "$OUT/build.log" 2>&1 &&
       ninja -C $B -j16 $targets >> "$OUT/build.log" 2>&1; }; then
  tail -40 "$OUT/build.log"
  exit 1
fi
echo "built in $(( $(date +%s) - T0 )) s"

if [[ $mode == all || $mode == test ]]; then
  for t in $B/kernels_*; do
    echo "== $t" | tee -a "$OUT/tests.log"
    "$t" 2>&1 | tee -a "$OUT/tests.log" | grep -E '^\[  (PASSED|FAILED) |FAILED|Failure|error|^\[==========\]' | head -40
  done
  echo "tests done at $(( $(date +%s) - T0 )) s"
fi

if [[ $mode == all || $mode == bench ]]; then
  J="$OUT/bench.jsonl"
  X=$B/kinfer_cuda_bench
  $X copy --json | tee "$J"
  copy=$(python3 -c "import json,sys; print(json.loads(open('$J').readline())['copy_gbps'])")
  att() {  # batch context attn [extra flags]
    $X attention --attn $3 --batch $1 --context $2 --q-heads 16 --kv-heads 8 --head-dim 128 \
      --page-size 16 --topk-pages 64 --local-pages 4 --copy-gbps "$copy" --json ${4:-} | tee -a "$J"
  }
  for shape in ${SHAPES:-64x16384 32x32768 32x16384 8x32768}; do
    for attn in ${ATTNS:-dense blocktopk local}; do att ${shape%x*} ${shape#*x} $attn; done
  done
  for shape in ${CONTIG_SHAPES:-64x16384 32x32768}; do
    for attn in dense blocktopk; do att ${shape%x*} ${shape#*x} $attn --contiguous; done
  done
  att 32 16384 topk
  PYTHONUNBUFFERED=1 python3 tools/bench_sdpa.py --shapes ${SDPA_SHAPES:-64x16384,32x32768,32x16384,8x32768} 2>/dev/null | tee -a "$J"
  echo "bench done at $(( $(date +%s) - T0 )) s"
fi

if [[ $mode == prefill ]]; then
  for t in $B/kernels_cuda_prefill $B/kernels_cuda_attention; do
    echo "== $t" | tee -a "$OUT/prefill_tests.log"
    "$t" 2>&1 | tee -a "$OUT/prefill_tests.log" | grep -E '^\[  (PASSED|FAILED) |FAILED|Failure|error|^\[==========\]' | head -40
  done
  echo "tests done at $(( $(date +%s) - T0 )) s"
  J="$OUT/prefill_bench.jsonl"
  : > "$J"
  X=$B/kinfer_cuda_bench
  # BATCHxCONTEXTxROWSxHQxHKVxD
  for sh in ${PREFILL_SHAPES:-4x2048x2048x32x8x128 1x8192x8192x32x8x128 16x1024x1024x32x8x128 1x8192x2048x32x8x128 4x4096x512x32x8x128 4x2048x2048x16x4x64}; do
    IFS=x read -r b l n hq hkv d <<< "$sh"
    $X attention --attn dense --batch $b --context $l --q-rows $n --q-heads $hq --kv-heads $hkv --head-dim $d \
      --page-size 16 --json | tee -a "$J"
    PYTHONUNBUFFERED=1 python3 tools/bench_sdpa.py --shapes ${b}x$l --q-rows $n --q-heads $hq --kv-heads $hkv \
      --head-dim $d 2>/dev/null | tee -a "$J"
  done
  # Decode rows unchanged: the usual decode shape, dense and blocktopk.
  for attn in dense blocktopk; do
    $X attention --attn $attn --batch 64 --context 16384 --q-heads 16 --kv-heads 8 --head-dim 128 --page-size 16 \
      --json | tee -a "$J"
  done
  echo "bench done at $(( $(date +%s) - T0 )) s"
fi
