#!/usr/bin/env bash
# The project on the GPU machine, step by step, in one device call:
#   bash dev/cuda/gpu.sh STEP [STEP...]          (carry build-devdeps)
# Steps:
#   build       configure + build everything with CUDA (-Werror) in $B (default /tmp/kbuild);
#               TARGETS="a b" builds only those targets; CMAKE_ARGS adds configure options
#   tests       ctest -L 'kernels|model' (every CUDA op vs the CPU, HF parity, engine on the GPU)
#   diag32k     the long-context rows with KINFER_CUDA_SYNC=1 (a fault names its op)
#   mlp         the fused decode MLP: its kernel tests and sandbox (dev/cuda/mlp_bench.cpp, a
#               dev/cuda build in $B.dev), 0.6B decode rows with KINFER_MLP_FUSED=0 / 1
#   quick       two decode rows, a profile and one generate row
#   sample      kinfer bench sample rows (batch 32 / 64, the Qwen3 defaults, greedy, top-k 64; batch 1024 x 49,152
#               and 256 x 151,936); SAMPLE_SUBS="0 1 2 6" runs each with KINFER_SAMPLE_SUB_CHUNKS at each (0: the rule)
#   attn        kinfer bench attention vs PyTorch SDPA at query groups 2, 4, 8 (dense on scattered and
#               on consecutive pages, blocktopk)
#   demo        scripts/demo's main job on the GPU (needs $GGUF): results in $OUT/demo.tar.xz
#   mma_all     a second build (in $B.mma) with the tensor-core attention for every query
#               group (KINFER_ATTN_MMA_MIN_GROUP=1): attention and decode rows at groups 1-2
#   gemm_pdl    can cuBLASLt's GEMMs start before their producer ends (dev/cuda/gemm_pdl.cu, a
#               dev/cuda build in $B.dev): do they wait, do they trigger, a 28-layer chain with
#               hot weights, L2 prefetches and programmatic edges
#   cutlass     CUTLASS's Hopper GEMMs that wait under programmatic launch against cuBLASLt in the
#               step's chain (dev/cuda/gemm_cutlass.cu, a dev/cuda build in $B.dev; carry
#               build-devdeps with the PyPI wheel nvidia_cutlass-*.whl in it)
#   gemm_tune   decode rows with cuBLASLt's first candidate and with KINFER_GEMM_TUNE=1
#   kernels     every kernel of a decode step measured alone by ncu, summed by kernel
#               (KERNELS_MODEL, KERNELS_BATCH, KERNELS_CONTEXT, KERNELS_ATTN, KERNELS_ATTN_FLAGS, KERNELS_SKIP/COUNT launches,
#               KERNELS_METRICS more ncu metrics; dev/cuda/step_trace.py); csv kept in $OUT
#   kernels_switch  kernels with SWITCH=VAR at 0, then 1 (outputs tagged _VAR_0, _VAR_1)
#   phases      where the fused sparse decode kernel's time goes: a dev/cuda build with phase
#               probes (backend/cuda/phases.cuh), bench attention rows with per-phase block times
#               (PHASE_SHAPES="B T [Hq [Hkv D k local]]; ...": Hq 16, Hkv 8, D 128, k 64, local 4 unless given;
#               e.g. "1024 288 9 3 64 2 1" is the SmolLM2 eval's step, served by the sparse warp kernel)
#               (in a real step: CMAKE_ARGS=-DKINFER_ATTN_PHASES=ON, bench decode --profile)
#   green       can two half-batches on SM partitions (green contexts) overlap the attention's
#               bytes with the other half's chain of small kernels (dev/cuda/green.cu, no build
#               needed; GREEN_ARGS "L A_MB W_MB K", default 28 212 42 7)
#   granule     what DRAM gives scattered reads of 128 B-8 KB chunks (dev/cuda/granule.cu, no build needed)
#   switch      decode rows with a backend switch at 0 and 1 interleaved: SWITCH=VAR (e.g.
#               KINFER_SILU_EPILOGUE), SWITCH_ROWS "preset B T attn [flags];..." (default: the
#               issue-13 block top-k rows), SWITCH_REPS rounds (default 2)
#   stage       switch with KINFER_ATTN_STAGE (the sparse kernel's known pages staged in shared
#               memory or not; STAGE_ROWS, STAGE_REPS)
#   bulk        the dense decode kernel's tiles by bulk copies or not (KINFER_ATTN_BULK=0 / 1
#               interleaved): attention rows at query groups 2, 4, 8 with SDPA, dense decode rows
#               (BULK_DECODE_ROWS "preset B T;..."; BULK_ATTN=0: no attention rows)
#   splits      dense attention rows at forced split counts (KINFER_DECODE_SPLITS; 0: the rule):
#               SPLIT_ROWS "B T Hq Hkv: s1 s2 ...;..."
#   decode      kinfer bench decode rows (Qwen3 shapes, dense and blocktopk, 16K-40K)
#   smol        the SmolLM2 GSM8K eval's step shape with random weights (random:smollm2-135m, B512/B1024 x 288):
#               per-op profiles of dense and block top-k k2 local 1, and bench generate n=1024 x 320 tokens
#   warp        block top-k attention by the sparse warp kernel (KINFER_SPARSE_WARP=1), the block kernel (0) and
#               the default's choice, per shape (WARP_ROWS "Hq Hkv D B ctx k local;...")
#   generate    kinfer bench generate rows with --profile, and the HF generate baseline (GEN_HF=0: not)
#   eval        the SmolLM2 GSM8K eval job (needs $GGUF) and its HF baseline
#   serve_load  tests/e2e/serve_load.py against a GPU server (needs $GGUF): 1,000 requests from 200
#               clients with streaming, n > 1, chat, bad JSON, oversized prompts and hang-ups
#   serve       the serving benchmark (tools/bench_serve.py) against bench generate
#               (SERVE_ARGS: more server flags, e.g. --no-prefix-cache; SERVE_BENCH: the workload, e.g.
#               "--concurrency 64,256 --input-len 1088 --shared-prefix-len 1024 --output-len 256";
#               SERVE_TAG names the JSON)
#   dist        more than one GPU (kind nvidia-h200-x2) = dist_tests dist_decode dist_eval:
#   dist_tests  the multi-GPU tests (kernels_cuda_dist: NCCL, --tp 2 vs --tp 1, data parallel)
#   dist_decode bench decode --tp 2 vs --tp 1 (qwen3-8b, qwen3-32b; dense, blocktopk), all-reduce time
#   dist_eval   eval on 2 GPUs vs 1, same job (needs $GGUF; DIST_DATASET/N/TOKENS/SEQS size it)
#               NCCL: the pip package nvidia-nccl-cu13, found by CMake through python3
#               (or -DKINFER_NCCL_ROOT); NCCL_NVLS_ENABLE=0 is exported above
# Logs and JSON lines go to $OUT; a short table is printed at the end.
# Debian packages the GPU image lacks (pcre2, utf8proc, asio) are unpacked from
# build-devdeps/debs (made here with `apt-get download`).
set -uo pipefail
OUT=${OUT:-$PWD/out}
B=${B:-/tmp/kbuild}
K=$B/kinfer
mkdir -p "$OUT"
T0=$(date +%s)
source "$(dirname "$0")/devdeps.sh"
devdeps_debs .
devdeps_cutlass .
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
J="$OUT/results.jsonl"
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/steps.log"; }

step_build() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/env.txt" 2>&1
  nvcc --version | tail -1 >> "$OUT/env.txt"
  if ! { cmake -S . -B $B -G Ninja -DKINFER_CUDA=ON -DKINFER_WERROR=${WERROR:-OFF} -DASIO_INCLUDE_DIR=$R/usr/include -DKINFER_TEST_LAYERS="unit;model;kernels" ${CMAKE_ARGS:-} \
           > "$OUT/build.log" 2>&1 && ninja -C $B -j16 ${TARGETS:-} >> "$OUT/build.log" 2>&1; }; then
    grep -E 'error' "$OUT/build.log" | head -30
    tail -20 "$OUT/build.log"
    exit 1
  fi
  log "built"
}

step_tests() {
  ctest --test-dir $B -L 'kernels|model' --output-on-failure -j4 --timeout 600 > "$OUT/tests.log" 2>&1
  grep -E 'tests passed|tests failed|Failed|\*\*\*' "$OUT/tests.log" | head -30
  grep -hE '^\[ (sample|attn) ' "$OUT/tests.log" | head -20
  log "tests done"
}

dec() {  # preset batch context attn [extra]
  $K bench decode --device cuda --model random:$1 --batch $2 --context $3 --attn $4 --topk-pages 64 --local-pages 4 \
    --page-size 16 --tokens ${DECODE_TOKENS:-20} --copy-gbps "$COPY" --json "${@:5}" 2>>"$OUT/decode.err" | tee -a "$J" |
    python3 -c "import json,sys
for l in sys.stdin:
  j=json.loads(l); a=j['attn']; sd=' int8 summaries' if a.get('summary_dtype')=='int8' else ''; print(f\"decode {j['model']} B{j['batch']}x{j['context']} {a['kind']}{sd}: {j['step_ms']:.2f} ms/step, {j['roofline_fraction']:.2f} of roofline\")"
}

copy_bw() { COPY=$($K bench copy --json | tee -a "$J" | python3 -c "import json,sys; print(json.load(sys.stdin)['copy_gbps'])"); }

step_kernels() {  # every kernel of two decode steps alone (ncu durations), summed by kernel: dev/cuda/step_trace.py
  local m=${KERNELS_MODEL:-qwen3-0.6b} b=${KERNELS_BATCH:-32} a=${KERNELS_ATTN:-blocktopk}
  local t=${KERNELS_CONTEXT:-16384} af=${KERNELS_ATTN_FLAGS:---topk-pages 64 --local-pages 4}
  # A synthetic context (16K unless KERNELS_CONTEXT); its set-up kernels (fill, kv_write, kv_summary) are filtered out,
  # so the step's own kv_summary launches are not counted either. 700 matching launches of the
  # 6 warm-up steps are skipped, then ~2 steps (KERNELS_COUNT: 2 x 286 launches for 28 layers;
  # qwen3-8b's 36 layers: KERNELS_SKIP=900 KERNELS_COUNT=736). KERNELS_TAG names the output.
  timeout ${KERNELS_TIMEOUT:-300} ncu --csv --metrics gpu__time_duration.sum${KERNELS_METRICS:+,$KERNELS_METRICS} \
    --cache-control none --clock-control none \
    --kernel-name 'regex:^(?!.*(fill_kernel|kv_write_kernel|kv_summary_kernel)).*' --launch-skip ${KERNELS_SKIP:-700} \
    --launch-count ${KERNELS_COUNT:-572} $K bench decode --device cuda --model random:$m --batch $b --context $t \
    --attn $a $af --page-size 16 --warmup 6 --tokens 4 --no-graphs --json \
    > /tmp/kernels.csv 2>"$OUT/kernels.err"
  python3 dev/cuda/step_trace.py /tmp/kernels.csv --steps 2 | tee "$OUT/kernels_${m}_b${b}_$a${KERNELS_TAG:-}.txt" | head -25
  cp /tmp/kernels.csv "$OUT/kernels_${m}_b${b}_$a${KERNELS_TAG:-}.csv"
  log "kernels done"
}

# step_kernels with $SWITCH at 0 and then 1 (e.g. the 8B silu epilogue question:
# SWITCH=KINFER_SILU_EPILOGUE KERNELS_MODEL=qwen3-8b KERNELS_SKIP=900 KERNELS_COUNT=736
# KERNELS_METRICS=dram__bytes_read.sum,lts__t_sectors_srcunit_tex_op_read.sum KERNELS_TIMEOUT=280).
step_kernels_switch() {
  local v
  for v in 0 1; do
    pkill -f 'kinfer bench' 2>/dev/null || true  # a timed-out ncu run must not hold the GPU for the next
    export "$SWITCH=$v"
    KERNELS_TAG="_${SWITCH}_$v" step_kernels
  done
  unset "$SWITCH"
}

step_phases() {  # where the fused sparse kernel's time goes: a dev/cuda build with phase probes (phases.cuh)
  local PB=$B.phases
  if ! { cmake -S dev/cuda -B $PB -G Ninja -DKINFER_ATTN_PHASES=ON > "$OUT/build_phases.log" 2>&1 &&
         ninja -C $PB -j16 kinfer_cuda_bench >> "$OUT/build_phases.log" 2>&1; }; then
    grep -E 'error' "$OUT/build_phases.log" | head -20; return
  fi
  local cp=$($PB/kinfer_cuda_bench copy --json | python3 -c "import json,sys; print(json.load(sys.stdin)['copy_gbps'])")
  local shapes
  IFS=';' read -ra shapes <<< "${PHASE_SHAPES:-32 16384;64 16384;32 32768;128 4096}"
  for shape in "${shapes[@]}"; do
    set -- $shape  # batch context [q_heads kv_heads head_dim k local]
    $PB/kinfer_cuda_bench attention --batch $1 --context $2 --q-heads ${3:-16} --kv-heads ${4:-8} --head-dim ${5:-128} \
      --attn blocktopk --topk-pages ${6:-64} --local-pages ${7:-4} --copy-gbps "$cp" --json 2>>"$OUT/attn.err" |
      tee -a "$J" | python3 -c "import json,sys
j=json.load(sys.stdin); p=j.get('phases',{})
print(f\"phases B{j['batch']}x{j['context']} Hq{j['q_heads']}: {j['ms_per_step']*1e3:.1f} us ({j['fraction_of_copy']:.2f} of copy) \" + ' '.join(f'{k[:-3]} {v:.2f}' if k.endswith('_us') else f'{k} {v}' for k,v in p.items()))" ||
      tail -2 "$OUT/attn.err"
  done
  log "phases done"
}

step_green() {  # the sandbox is one file: two half-batches on SM partitions (green contexts) vs today's step
  nvcc -O3 -arch=sm_90a -o /tmp/green dev/cuda/green.cu -lcuda || return
  /tmp/green ${GREEN_ARGS:-} > "$OUT/green.json"
  python3 -c "import json,sys
j=json.load(open('$OUT/green.json')); print('green: valid', j['valid'])
for r in j['rows']: print(f\"  {r['variant']:30s} attn {r['attn_sms']:3d} SMs, chain {r['chain_sms']:3d}: {r['us_per_layer']:7.2f} us a layer\")"
  log "green done"
}

step_granule() {  # the sandbox is one file: nvcc it and run it at GRANULE_MB (64 256) MB per launch
  nvcc -O3 -arch=sm_90a -I src -o /tmp/granule dev/cuda/granule.cu || return
  for mb in ${GRANULE_MB:-64 256}; do /tmp/granule $mb; done > "$OUT/granule.json"
  python3 - "$OUT/granule.json" <<'PY'
import json, re, sys
for run in map(json.loads, re.findall(r'\{"bench.*?\]\}', open(sys.argv[1]).read(), re.S)):
    rows = {}
    for r in run["rows"]:
        rows.setdefault((r["where"], r["how"], r["in_flight"]), []).append(f'{r["gbps"]}{"" if r["valid"] else "(INVALID)"}')
    print(f'granule, {run["mb_per_launch"]} MB a launch, GB/s for 128 B ... 8 KB chunks:')
    for (where, how, u), v in rows.items():
        print(f"  {where:9s} {how:11s} {u:2d}: {' '.join(v)}")
PY
  log "granule done"
}

step_switch() {  # $SWITCH at 0 and 1 (SWITCH_VALUES) on the same rows, interleaved; JSON in $OUT/switch0.jsonl, ...
  copy_bw
  local rows
  IFS=';' read -ra rows <<< "${SWITCH_ROWS:-qwen3-0.6b 32 16384 blocktopk;qwen3-0.6b 32 16384 blocktopk --summary-dtype int8;qwen3-0.6b 64 16384 blocktopk;qwen3-0.6b 64 16384 blocktopk --summary-dtype int8;qwen3-0.6b 32 32768 blocktopk --summary-dtype int8;qwen3-8b 32 16384 blocktopk --summary-dtype int8}"
  for ((rep = 0; rep < ${SWITCH_REPS:-2}; ++rep)); do
    for row in "${rows[@]}"; do
      for v in ${SWITCH_VALUES:-0 1}; do
        echo -n "$SWITCH=$v: "
        export "$SWITCH=$v"
        J=$OUT/switch$v.jsonl dec $row || tail -2 "$OUT/decode.err"
        unset "$SWITCH"
      done
    done
  done
  log "$SWITCH done"
}

step_stage() { SWITCH=KINFER_ATTN_STAGE SWITCH_ROWS=${STAGE_ROWS:-} SWITCH_REPS=${STAGE_REPS:-2} step_switch; }

step_diag32k() {
  copy_bw
  KINFER_CUDA_SYNC=1 DECODE_TOKENS=3 dec qwen3-0.6b 16 32768 dense --warmup 1 || tail -3 "$OUT/decode.err"
  DECODE_TOKENS=5 dec qwen3-0.6b 32 32768 dense --warmup 1 || tail -3 "$OUT/decode.err"
  DECODE_TOKENS=5 dec qwen3-0.6b 4 40960 blocktopk --warmup 1 || tail -3 "$OUT/decode.err"
  log "diag32k done"
}

step_decode() {
  copy_bw
  for a in dense blocktopk; do
    dec qwen3-0.6b 32 16384 $a
    dec qwen3-0.6b 64 16384 $a
    dec qwen3-8b 32 16384 $a
    dec qwen3-0.6b 32 32768 $a
    dec qwen3-0.6b 4 40960 $a
  done
  dec qwen3-0.6b 32 16384 blocktopk --dense-layers 0
  for shape in "qwen3-0.6b 32 16384" "qwen3-0.6b 64 16384" "qwen3-8b 32 16384" "qwen3-0.6b 32 32768"; do
    dec $shape blocktopk --summary-dtype int8  # page summaries as int8 codes (attn/summary.h)
  done
  dec qwen3-0.6b 32 16384 blocktopk --dense-layers 0 --summary-dtype int8
  dec qwen3-8b 128 4096 dense
  dec qwen3-32b 16 16384 dense
  dec qwen3-0.6b 32 16384 blocktopk --profile > /dev/null
  tail -1 "$J" | python3 -c "import json,sys; p=json.load(sys.stdin)['profile']; [print(f'  {k}: {v[\"ms_per_step\"]:.3f} ms') for k,v in sorted(p.items(), key=lambda kv: -kv[1]['ms'])[:12]]"
  log "decode done"
}

step_mlp() {  # the fused decode MLP (backend/cuda/mlp.cu): its tests, its sandbox, decode rows with it off / on
  local PB=$B.dev
  if ! { cmake -S dev/cuda -B $PB -G Ninja ${MLP_CMAKE_ARGS:-} > "$OUT/build_dev.log" 2>&1 &&
         ninja -C $PB -j16 mlp_bench kernels_cuda_fused >> "$OUT/build_dev.log" 2>&1; }; then
    grep -E 'error' "$OUT/build_dev.log" | head -20; return
  fi
  $PB/kernels_cuda_fused --gtest_filter='*Mlp*' > "$OUT/mlp_tests.log" 2>&1; tail -3 "$OUT/mlp_tests.log"
  grep -E 'Failure|Expected|Which is|actual' "$OUT/mlp_tests.log" | head -20
  $PB/mlp_bench 20 2>&1 | tee "$OUT/mlp_bench.txt"
  copy_bw
  for shape in ${MLP_ROWS:-"1 4096 dense" "8 4096 dense" "16 4096 dense" "32 16384 blocktopk"}; do
    set -- $shape
    for f in 0 1; do
      echo -n "KINFER_MLP_FUSED=$f "
      KINFER_MLP_FUSED=$f dec qwen3-0.6b $1 $2 $3
    done
  done
  log "mlp done"
}

step_quick() {
  copy_bw
  dec qwen3-0.6b 32 16384 dense
  dec qwen3-0.6b 32 16384 blocktopk
  dec qwen3-0.6b 32 16384 blocktopk --profile > /dev/null
  tail -1 "$J" | python3 -c "import json,sys; p=json.load(sys.stdin)['profile']; [print(f'  {k}: {v[\"ms_per_step\"]:.3f} ms') for k,v in sorted(p.items(), key=lambda kv: -kv[1]['ms'])[:10]]"
  gen -n 256 --max-tokens 256
  log "quick done"
}

att() {  # batch context q_heads kv_heads attn [flags, e.g. --contiguous]
  $K bench attention --batch $1 --context $2 --q-heads $3 --kv-heads $4 --attn $5 --topk-pages 64 --local-pages 4 \
    --copy-gbps "$COPY" --json "${@:6}" 2>>"$OUT/attn.err" | tee -a "$J" | python3 -c "import json,sys
j=json.load(sys.stdin); print(f\"attention B$1x$2 Hq$3/Hkv$4 $5 {j['pages']}: {j['ms_per_step']:.4f} ms, {j['effective_gbps']:.0f} GB/s ({j.get('fraction_of_copy',0):.2f} of copy)\")" ||
    tail -2 "$OUT/attn.err"
}

step_bulk() {  # KINFER_ATTN_BULK 0 (K/V tiles into registers) / 1 (a shared-memory ring by bulk copies)
  copy_bw
  for h in "16 8" "32 8" "64 8"; do
    [[ ${BULK_ATTN:-1} == 0 ]] && break
    set -- $h
    for rep in 1 2; do
      for shape in "64 16384" "32 32768"; do
        for v in 0 1; do echo -n "bulk $v: "; KINFER_ATTN_BULK=$v J=$OUT/bulk$v.jsonl att $shape $1 $2 dense; done
      done
    done
    python3 tools/bench_sdpa.py --shapes 64x16384,32x32768 --q-heads $1 --kv-heads $2 --head-dim 128 2>>"$OUT/attn.err" |
      tee -a "$J" | python3 -c "import json,sys
for l in sys.stdin:
  j=json.loads(l); print(f\"sdpa B{j['batch']}x{j['context']} Hq{j['q_heads']}/Hkv{j['kv_heads']}: {j['best_ms_per_step']} ms\")"
  done
  local rows
  IFS=';' read -ra rows <<< "${BULK_DECODE_ROWS:-qwen3-0.6b 32 16384;qwen3-0.6b 64 16384;qwen3-8b 32 16384;qwen3-32b 16 16384;qwen3-0.6b 8 4096;qwen3-0.6b 64 4096;qwen3-8b 128 4096}"
  for row in "${rows[@]}"; do
    for v in 0 1; do echo -n "bulk $v: "; KINFER_ATTN_BULK=$v J=$OUT/bulk$v.jsonl dec $row dense || tail -2 "$OUT/decode.err"; done
  done
  log "bulk done"
}

step_splits() {  # the dense kernel's split count: forced values against the rule (0), per shape
  copy_bw
  local rows
  IFS=';' read -ra rows <<< "${SPLIT_ROWS:-64 16384 16 8: 0 8 16 17 25 33;32 32768 16 8: 0 16 33;64 16384 64 8: 0 5 8 9 17;32 16384 32 8: 0 16 33}"
  for row in "${rows[@]}"; do
    for sp in ${row#*:}; do
      echo -n "splits $sp: "
      if ((sp == 0)); then J=$OUT/splits.jsonl att ${row%%:*} dense; else KINFER_DECODE_SPLITS=$sp J=$OUT/splits.jsonl att ${row%%:*} dense; fi
    done
  done
  log "splits done"
}

step_attn() {
  copy_bw
  for h in "16 8" "32 8" "64 8"; do
    set -- $h
    for a in dense blocktopk; do att 64 16384 $1 $2 $a; att 32 32768 $1 $2 $a; done
    # SDPA reads contiguous K/V: our dense kernel on consecutive pages too (the same bytes, no scatter).
    att 64 16384 $1 $2 dense --contiguous; att 32 32768 $1 $2 dense --contiguous
    python3 tools/bench_sdpa.py --shapes 64x16384,32x32768 --q-heads $1 --kv-heads $2 --head-dim 128 2>>"$OUT/attn.err" |
      tee -a "$J" | python3 -c "import json,sys
for l in sys.stdin:
  j=json.loads(l); print(f\"sdpa B{j['batch']}x{j['context']} Hq{j['q_heads']}/Hkv{j['kv_heads']}: {j['best_ms_per_step']} ms\")"
  done
  log "attn done"
}

step_demo() {  # the traces are large: everything comes back as one $OUT/demo.tar.xz
  [[ -s ${GGUF:-} ]] || { echo "demo: set GGUF to the SmolLM2 GGUF"; return; }
  rm -rf /tmp/demo
  KINFER_DEFAULT_MODEL=$GGUF bash scripts/demo_job.sh $K --out /tmp/demo ${DEMO_ARGS:-} > /tmp/demo.log 2>&1 ||
    tail -5 /tmp/demo.log
  mv /tmp/demo.log /tmp/demo/log.txt
  tar -C /tmp -cJf "$OUT/demo.tar.xz" demo
  tail -25 /tmp/demo/log.txt
  log "demo done"
}

step_sample() {  # SAMPLE_SUBS="0 1 2 ...": each row with KINFER_SAMPLE_SUB_CHUNKS at each (0: unset, the rule)
  local f sub
  local rows=("" "--batch 64" "--batch 1" "--temp 0" "--top-k 64" "--batch 1024 --vocab 49152" "--batch 256 --vocab 151936")
  for f in "${rows[@]}"; do
    for sub in ${SAMPLE_SUBS:-0}; do
      (if [[ $sub != 0 ]]; then export KINFER_SAMPLE_SUB_CHUNKS=$sub; fi; $K bench sample --json $f) 2>>"$OUT/sample.err" |
        tee -a "$J" | python3 -c "import json,sys
j=json.load(sys.stdin); print(f\"sample B{j['batch']} vocab {j['vocab']} temp {j['temp']} top-k {j['top_k']} top-p {j['top_p']} sub $sub: {j['us_per_step']:.1f} us/step\")" ||
        tail -2 "$OUT/sample.err"
    done
  done
  log "sample done"
}

step_mma_all() {
  copy_bw
  if ! { cmake -S . -B $B.mma -G Ninja -DKINFER_CUDA=ON -DKINFER_TESTS=OFF -DASIO_INCLUDE_DIR=$R/usr/include \
           -DCMAKE_CUDA_FLAGS=-DKINFER_ATTN_MMA_MIN_GROUP=1 > "$OUT/build_mma.log" 2>&1 &&
         ninja -C $B.mma -j16 kinfer >> "$OUT/build_mma.log" 2>&1; }; then
    tail -20 "$OUT/build_mma.log"; return
  fi
  local K0=$K
  for K in $K0 $B.mma/kinfer; do
    echo "== $K"
    for a in dense blocktopk; do att 64 16384 16 8 $a; att 32 32768 16 8 $a; att 64 16384 16 16 $a; done
    dec qwen3-0.6b 32 16384 dense
    dec qwen3-0.6b 32 16384 blocktopk
    dec qwen3-0.6b 64 16384 blocktopk
  done
  K=$K0
  log "mma_all done"
}

step_gemm_pdl() {  # can cuBLASLt's GEMMs start before their producer ends (dev/cuda/gemm_pdl.cu)
  local PB=$B.dev
  if ! { cmake -S dev/cuda -B $PB -G Ninja > "$OUT/build_dev.log" 2>&1 &&
         ninja -C $PB -j16 gemm_pdl >> "$OUT/build_dev.log" 2>&1; }; then
    grep -E 'error' "$OUT/build_dev.log" | head -20; return
  fi
  $PB/gemm_pdl 20 2>&1 | tee "$OUT/gemm_pdl.txt"
  log "gemm_pdl done"
}

step_cutlass() {  # CUTLASS's Hopper GEMMs that wait under programmatic launch vs cuBLASLt (dev/cuda/gemm_cutlass.cu)
  local PB=$B.dev
  [[ -n ${KINFER_CUTLASS_ROOT:-} ]] || { echo "cutlass: no build-devdeps/nvidia_cutlass-*.whl (pip download nvidia-cutlass --no-deps -d build-devdeps)"; return; }
  if ! { cmake -S dev/cuda -B $PB -G Ninja -DKINFER_CUTLASS_INCLUDE=$KINFER_CUTLASS_ROOT \
           > "$OUT/build_cutlass.log" 2>&1 && ninja -C $PB -j16 gemm_cutlass >> "$OUT/build_cutlass.log" 2>&1; }; then
    grep -E 'error' "$OUT/build_cutlass.log" | head -20; return
  fi
  $PB/gemm_cutlass ${CUTLASS_REPS:-20} ${CUTLASS_MODEL:-qwen3-0.6b} 2>&1 | tee "$OUT/gemm_cutlass.txt"
  log "cutlass done"
}

step_gemm_tune() {  # cuBLASLt's first candidate vs the fastest of 8 timed (KINFER_GEMM_TUNE=1)
  copy_bw
  for tune in 0 1; do
    echo "== KINFER_GEMM_TUNE=$tune"
    export KINFER_GEMM_TUNE=$tune
    dec qwen3-0.6b 32 16384 blocktopk
    dec qwen3-0.6b 32 16384 dense
    dec qwen3-32b 16 16384 dense
    dec qwen3-8b 32 16384 blocktopk
  done
  unset KINFER_GEMM_TUNE
  log "gemm_tune done"
}

gen() {  # extra flags
  $K bench generate --device cuda --model random:qwen3-0.6b --ignore-eos --profile --json "$@" 2>>"$OUT/gen.err" |
    python3 -c "import json,sys; j=json.load(sys.stdin); print(json.dumps(j))" | tee -a "$J" | python3 -c "import json,sys
j=json.loads(sys.stdin.read()); p=j.get('profile',{})
print(f\"generate n={j['n']}: {j['gen_tok_s']:.0f} tok/s overall, decode {j['decode_tok_s']:.0f}, steps {j['steps']}, running peak {j['running_peak']}, roofline {p.get('roofline_fraction',0):.2f} (device {p.get('device_roofline_fraction',0):.2f}), host {p.get('host_ms_per_step',{}).get('total',0):.3f} ms/step, device {p.get('device_ms_per_step',0):.3f} ms/step\")"
}

step_smol() {  # the SmolLM2 eval's step shape (random weights): per-op profile of dense and block top-k k2
  copy_bw
  local b ctx a
  for b in ${SMOL_BATCH:-512 1024}; do
    for a in "dense" "blocktopk --topk-pages 2 --local-pages 1"; do
      ctx=${SMOL_CONTEXT:-288}
      $K bench decode --device cuda --model random:smollm2-135m --batch $b --context $ctx --attn $a --page-size 16 \
        --tokens 20 --copy-gbps "$COPY" --profile --json 2>>"$OUT/decode.err" | tee -a "$J" | python3 -c "import json,sys
j=json.load(sys.stdin); a=j['attn']; p=j.get('profile',{})
print(f\"smol B{j['batch']}x{j['context']} {a['kind']} k{a.get('topk_pages')}: {j['step_ms']:.3f} ms/step (graphs), {j['roofline_fraction']:.2f} of roofline; ops (no graphs):\")
for k,v in sorted(p.items(), key=lambda kv: -kv[1]['ms'])[:12]: print(f'    {k}: {v[\"ms_per_step\"]:.3f} ms')" || tail -3 "$OUT/decode.err"
    done
  done
  for a in "dense" "blocktopk --topk-pages 2 --local-pages 1"; do
    $K bench generate --device cuda --model random:smollm2-135m -n 1024 --max-tokens 320 --ignore-eos --profile --json \
      --attn $a 2>>"$OUT/gen.err" | tee -a "$J" | python3 -c "import json,sys
j=json.load(sys.stdin); p=j.get('profile',{})
print(f\"smol generate n={j['n']}: {j['gen_tok_s']:.0f} tok/s, steps {j['steps']}, device {p.get('device_ms_per_step',0):.3f} ms/step ({p.get('device_roofline_fraction',0):.2f} of roofline), host {p.get('host_ms_per_step',{}).get('total',0):.3f}\")" || tail -3 "$OUT/gen.err"
  done
  log "smol done"
}

step_warp() {  # the sparse warp kernel (a warp per (sequence, KV head)) against the block kernel, by shape
  local rows row
  IFS=';' read -ra rows <<< "${WARP_ROWS:-9 3 64 1024 288 2 1;9 3 64 1024 288 6 1;9 3 64 256 288 2 1;9 3 64 32 288 2 1;9 3 64 1024 1024 2 1;9 3 64 32 1024 2 1;9 3 64 1024 4096 2 1;9 3 64 32 4096 2 1;9 3 64 32 4096 8 4;16 8 128 32 1024 2 1;16 8 128 32 4096 8 4;16 8 128 256 4096 8 4;16 8 128 32 4096 64 4;16 8 128 32 1024 64 4}"
  for row in "${rows[@]}"; do
    set -- $row
    local line="warp Hq$1/Hkv$2 D$3 B$4x$5 k$6 l$7:"
    for v in 0 1 auto; do
      local ms
      ms=$( (if [[ $v == auto ]]; then unset KINFER_SPARSE_WARP; else export KINFER_SPARSE_WARP=$v; fi
             $K bench attention --attn blocktopk --q-heads $1 --kv-heads $2 --head-dim $3 --batch $4 --context $5 \
               --topk-pages $6 --local-pages $7 --json) 2>>"$OUT/attn.err" |
           python3 -c "import json,sys
j=json.load(sys.stdin); j['sparse_warp']='$v'; open('$OUT/warp.jsonl','a').write(json.dumps(j)+'\n'); print(f\"{j['ms_per_step']*1e3:.1f}\")")
      line+=" ${v/auto/default} ${ms:-failed} us"
    done
    echo "$line"
  done
  log "warp done"
}

step_generate() {
  gen -n 256 --max-tokens 256
  gen -n 1024 --max-tokens 2048
  gen -n 1024 --max-tokens 2048 --attn blocktopk --topk-pages 64 --local-pages 4
  [[ ${GEN_HF:-1} == 1 ]] && { PYTHONUNBUFFERED=1 python3 tools/bench_hf_generate.py synthetic --preset qwen3-0.6b \
    --batch 256 --prompt 512 --new 256 2>"$OUT/hf_gen.err" | tee -a "$J" || tail -3 "$OUT/hf_gen.err"; }
  log "generate done"
}

step_eval() {
  [[ -s ${GGUF:-} ]] || { echo "eval: set GGUF to the SmolLM2 GGUF"; return; }
  for cfg in "dense 2" "blocktopk 2" "blocktopk 6"; do
    set -- $cfg
    $K eval --device cuda --model "$GGUF" --dataset gsm8k --limit 400 -n 16 --max-tokens 320 --seed 0 --attn $1 \
      --topk-pages $2 --local-pages 1 --profile --json --out "$OUT/eval_$1_k$2.jsonl" 2>>"$OUT/eval.err" | tee -a "$J" |
      python3 -c "import json,sys
j=json.load(sys.stdin); r=j['run']; e=r['engine']; s=j['summary']; p=e.get('profile',{})
print(f\"eval {j['attn']['policy']} k{j['attn']['topk_pages']}: {r['tok_s']:.0f} gen tok/s, wall {r['wall_s']:.1f} s, steps {e['steps']} ({e['graph_steps']} graphs), pass@16 {s['pass_at_k']['16']:.3f} acc {s['accuracy']:.4f}, {s['tera_efflops_per_problem']:.2f} TeFLOPs/problem, host {p.get('host_ms_per_step',{}).get('total',0):.3f} device {p.get('device_ms_per_step',0):.3f} ms/step\")"
  done
  if [[ ${HF_EVAL:-1} == 1 ]] && python3 -c "import gguf" 2>/dev/null; then
    PYTHONUNBUFFERED=1 python3 tools/bench_hf_generate.py eval --gguf "$(basename "$GGUF")" --gguf-dir "$(dirname "$GGUF")" \
      --data data/gsm8k.jsonl --problems 96 -n 16 2>"$OUT/hf_eval.err" | tee -a "$J" || tail -3 "$OUT/hf_eval.err"
  fi
  log "eval done"
}

step_serve_load() {
  [[ -s ${GGUF:-} ]] || { echo "serve_load: set GGUF to the SmolLM2 GGUF"; return; }
  KINFER=$K KINFER_DEFAULT_MODEL=$GGUF LOAD_SERVER_ARGS="--device cuda ${SERVE_ARGS:-}" PYTHONUNBUFFERED=1 \
    python3 tests/e2e/serve_load.py > "$OUT/serve_load${SERVE_TAG:-}.log" 2>&1
  echo "serve_load: rc $?"
  tail -8 "$OUT/serve_load${SERVE_TAG:-}.log"
  log "serve_load done"
}

step_serve() {  # SERVE_ARGS: more server flags (e.g. --no-prefix-cache); SERVE_BENCH: bench_serve.py's workload flags
  PYTHONUNBUFFERED=1 python3 tools/bench_serve.py --kinfer $K \
    --server-args "--device cuda --model random:qwen3-0.6b ${SERVE_ARGS:-}" \
    ${SERVE_BENCH:---concurrency 1,64,256,1024 --output-len 256 --compare-generate} \
    --out "$OUT/serve_cuda${SERVE_TAG:-}.json" 2>&1 | tail -12
  log "serve done"
}

dtp() {  # preset batch context attn tp [extra]: one bench decode row with its all-reduce time
  $K bench decode --device cuda --model random:$1 --batch $2 --context $3 --attn $4 --tp $5 --topk-pages 64 \
    --local-pages 4 --page-size 16 --tokens ${DECODE_TOKENS:-20} --copy-gbps "$COPY" --json "${@:6}" \
    2>>"$OUT/dist.err" | tee -a "$J" | python3 -c "import json,sys
for l in sys.stdin:
  j=json.loads(l); print(f\"decode {j['model']} B{j['batch']}x{j['context']} {j['attn']['kind']} tp {j['tp']}: {j['step_ms']:.2f} ms/step, all-reduce {j.get('allreduce_ms_per_step',0):.3f} ms/step, {j['roofline_fraction']:.2f} of the per-GPU roofline\")" ||
    tail -3 "$OUT/dist.err"
}

dist_eval() {  # label flags...: the eval throughput job on the SmolLM2 GGUF
  $K eval --model "$GGUF" --dataset ${DIST_DATASET:-aime24} -n ${DIST_N:-32} --max-tokens ${DIST_TOKENS:-2048} \
    --seed 0 --max-seqs ${DIST_SEQS:-256} --json --no-progress --out "$OUT/dist_eval_$1.jsonl" "${@:2}" \
    2>>"$OUT/dist.err" | tee -a "$J" | tee "$OUT/dist_eval_$1.json" | python3 -c "import json,sys
j=json.load(sys.stdin); r=j['run']; e=r['engine']
print(f\"eval $1: {r['tok_s']:.0f} gen tok/s, wall {r['wall_s']:.1f} s, replicas {[ (x['requests'], x['generated_tokens']) for x in e.get('replicas', [])]}\")"
}

step_dist() { step_dist_tests; step_dist_decode; step_dist_eval; }

step_dist_tests() {
  nvidia-smi -L | tee "$OUT/gpus.txt"
  echo "NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE" | tee -a "$OUT/gpus.txt"
  grep -E "^NCCL_LIBRARY" "$B/CMakeCache.txt" | tee -a "$OUT/gpus.txt"
  "$B/kernels_cuda_dist" > "$OUT/dist_tests.log" 2>&1
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|--tp 2 vs|vs HF|data parallel|Failure' "$OUT/dist_tests.log" | head -30
  log "dist tests done"
}

step_dist_decode() {
  copy_bw
  for a in dense blocktopk; do
    dtp qwen3-8b 32 16384 $a 1
    dtp qwen3-8b 32 16384 $a 2
    dtp qwen3-32b 16 16384 $a 1   # B32x16K of qwen3-32b does not fit one H200 (65 GB weights + 137 GB KV)
    dtp qwen3-32b 16 16384 $a 2
    dtp qwen3-32b 32 16384 $a 2
  done
  log "tp decode done"
}

step_dist_eval() {
  if [[ -s ${GGUF:-} ]]; then
    dist_eval 1gpu --device cuda
    dist_eval 2gpu --devices 0,1
    python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
a, b = ({r["id"]: r for r in map(json.loads, list(open(f"{o}/dist_eval_{k}.jsonl"))[1:])} for k in ("1gpu", "2gpu"))
same = sum(x["text"] == y["text"] for k in a for x, y in zip(a[k]["samples"], b[k]["samples"]))
r1, r2 = (json.load(open(f"{o}/dist_eval_{k}.json"))["run"] for k in ("1gpu", "2gpu"))
print(f"eval 2 GPUs vs 1: {r2['tok_s'] / r1['tok_s']:.2f}x tok/s, {r1['wall_s'] / r2['wall_s']:.2f}x wall (target >= 1.9); "
      f"{len(b)} of {len(a)} problems, {same} of {sum(len(r['samples']) for r in a.values())} samples identical "
      "(bf16 GEMMs differ by batch)")
PY
  else
    echo "dist: set GGUF to the SmolLM2 GGUF for the eval throughput job"
  fi
  log "dist eval done"
}

for s in "$@"; do "step_$s"; done
