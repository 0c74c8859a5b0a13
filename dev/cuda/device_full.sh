#!/usr/bin/env bash
# The whole project on the GPU machine: unpack the Debian packages its image
# lacks (pcre2, utf8proc; fetched here with `apt-get download` into
# build-devdeps/debs) under /tmp/devroot, build with CUDA (-Werror), run the
# kernels layer (scripts/test --gpu's GPU part), then the decode benchmarks.
#   bash dev/cuda/device_full.sh [test|bench|all]       (carry build-devdeps)
# Env: TESTS='ctest -R regex' filter, DECODE_TOKENS (timed steps), HF=0 skips
# the transformers baseline.
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
mode=${1:-all}
T0=$(date +%s)
source "$(dirname "$0")/devdeps.sh"
devdeps_debs .
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/env.txt" 2>&1
nvcc --version | tail -1 >> "$OUT/env.txt"

# FIXTURES="name ..." makes those HF model fixtures first (tools/make_model_fixtures.py),
# unpacks them for the tests and returns the tars in $OUT.
if [[ -n ${FIXTURES:-} ]]; then
  python3 tools/make_model_fixtures.py "$OUT" $FIXTURES 2>&1 | tail -5
  for t in "$OUT"/*.tar; do tar -C tests/fixtures/models -xf "$t"; done
fi

B=build-gpu
if ! { cmake -S . -B $B -G Ninja -DKINFER_CUDA=ON -DKINFER_WERROR=ON -DKINFER_TEST_LAYERS=kernels \
         > "$OUT/build.log" 2>&1 && ninja -C $B -j16 >> "$OUT/build.log" 2>&1; }; then
  grep -E 'error|Error' "$OUT/build.log" | head -30
  tail -30 "$OUT/build.log"
  exit 1
fi
echo "built in $(( $(date +%s) - T0 )) s"

if [[ $mode == all || $mode == test ]]; then
  ctest --test-dir $B -L kernels ${TESTS:-} --output-on-failure -j4 > "$OUT/tests.log" 2>&1
  grep -E 'tests passed|FAILED|Failed|\*\*\*' "$OUT/tests.log" | head -40
  $B/kernels_cuda_sample > "$OUT/cuda_sample.log" 2>&1
  $B/kernels_cuda_model > "$OUT/cuda_model.log" 2>&1
  echo "tests done at $(( $(date +%s) - T0 )) s"
fi

if [[ $mode == all || $mode == bench ]]; then
  K=$B/kinfer
  J="$OUT/decode.jsonl"
  $K bench copy --json | tee "$J"
  copy=$(python3 -c "import json; print(json.loads(open('$J').readline())['copy_gbps'])")
  dec() {  # attn [extra flags]
    $K bench decode --device cuda --model random:qwen3-0.6b --batch 32 --context 16384 --attn "$1" \
      --topk-pages 64 --local-pages 4 --page-size 16 --tokens ${DECODE_TOKENS:-20} --copy-gbps "$copy" --json \
      "${@:2}" | tee -a "$J"
  }
  dec dense
  dec blocktopk
  dec blocktopk --no-graphs
  KINFER_GEMM_TUNE=0 dec blocktopk
  dec local --local-pages 1
  dec blocktopk --profile
  # The engine end to end: Best-of-32, 64-token prompt, 4096 tokens each, device sampling.
  for a in dense blocktopk; do
    $K bench generate --device cuda --model random:qwen3-0.6b -n 32 --max-tokens ${GEN_TOKENS:-4096} --attn $a \
      --topk-pages 64 --local-pages 4 --json | python3 -c "import json,sys; print(json.dumps(json.load(sys.stdin)))" |
      tee -a "$J"
  done
  if [[ ${HF:-1} == 1 ]]; then
    PYTHONUNBUFFERED=1 python3 tools/bench_hf_decode.py --preset qwen3-0.6b --batch 32 --context 16384 \
      --tokens 5 2>"$OUT/hf.err" | tee -a "$J" || tail -5 "$OUT/hf.err"
  fi
  echo "bench done at $(( $(date +%s) - T0 )) s"
fi
