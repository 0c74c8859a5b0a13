#include "backend/cuda/switches.h"

#include <cstdlib>
#include <optional>

#include "backend/cuda/kernels.h"
#include "util/error.h"

namespace kf::cuda {

namespace {

// Reads variables, noting each one set.
struct EnvReader {
  std::string noted;

  const char* raw(const char* var) {
    const char* value = std::getenv(var);
    if (value) noted += fmt::format("{}{}={}", noted.empty() ? "" : " ", var, value);
    return value;
  }
  // An on/off switch: unset, or "0" / "1" (anything else is refused, with
  // what the two values mean).
  std::optional<bool> on_off(const char* var, const char* meaning) {
    const char* value = raw(var);
    if (!value) return std::nullopt;
    const std::string v = value;
    KF_CHECK(v == "0" || v == "1", "{}={}: {}", var, v, meaning);
    return v == "1";
  }
  // The same into a field, which keeps its default when the variable is unset.
  void on_off(bool& field, const char* var, const char* meaning) {
    if (const std::optional<bool> on = on_off(var, meaning)) field = *on;
  }
  // A count in [lo, hi] into a field, which keeps its default when unset.
  void count(int& field, const char* var, int lo, int hi, const char* meaning) {
    const char* value = raw(var);
    if (!value) return;
    const std::string v = value;
    const bool digits = !v.empty() && v.size() <= 3 && v.find_first_not_of("0123456789") == std::string::npos;
    const int n = digits ? std::stoi(v) : -1;
    KF_CHECK(n >= lo && n <= hi, "{}={}: {}, {} to {}", var, v, meaning, lo, hi);
    field = n;
  }
};

}  // namespace

Switches Switches::from_env() {
  Switches sw;
  EnvReader env;
  env.on_off(sw.gemm_tune, "KINFER_GEMM_TUNE", "0 (cuBLASLt's first heuristic candidate: the default) or 1 "
                                               "(the first call of a shape times the top 8 and keeps the fastest)");
  env.on_off(sw.gemm_cutlass, "KINFER_GEMM_CUTLASS", "0 (every GEMM is cuBLASLt's) or 1 (decode-sized GEMMs "
                                                     "are CUTLASS's, where built: the default)");
  if (const char* split = env.raw("KINFER_SPLIT_K")) {
    const std::string v = split;
    const bool ok = v.size() == 1 && (v == "0" || v == "1" || partial_slices_supported(v[0] - '0'));
    KF_CHECK(ok, "KINFER_SPLIT_K={}: the K slices of an output projection are 2, 3, 4, 6 or 8 (0: never split)", v);
    sw.split_k = v[0] - '0';
  }
  env.on_off(sw.silu_epilogue, "KINFER_SILU_EPILOGUE",
             "0 (gate|up weights as loaded: the GEMM, then silu_mul) or 1 (their rows interleaved so the decode GEMM "
             "ends in silu_mul: the default)");
  env.on_off(sw.fused_mlp, "KINFER_MLP_FUSED", "0 (the MLP as three ops: the default) or 1 (one cooperative "
                                               "kernel where its plan applies)");
  env.on_off(sw.stage_known, "KINFER_ATTN_STAGE", "0 (the sparse kernel reads its known pages from the pool) or 1 "
                                                  "(copies them to shared memory while it selects: the default)");
  if (auto on = env.on_off("KINFER_ATTN_BULK", "0 (the dense decode kernel always loads K/V into registers) or 1 "
                           "(always streams them through shared memory by bulk copies); unset: by shape"))
    sw.bulk_dense = *on ? 1 : 0;
  env.count(sw.decode_splits, "KINFER_DECODE_SPLITS", 1, 128, "the dense decode kernel's blocks per (row, KV head)");
  env.count(sw.sample_sub_chunks, "KINFER_SAMPLE_SUB_CHUNKS", 1, 128,
            "the sampling top-k kernel's sub-chunks of 4,096 logits a block (unset: by rows and vocabulary)");
  if (auto on = env.on_off("KINFER_SPARSE_WARP", "0 (block top-k and local decode always by the block kernel, a block "
                           "of 8 warps per (sequence, KV head)) or 1 (by the warp kernel, a warp per pair, wherever "
                           "contexts have at most 256 pages); unset: the warp kernel for short lists"))
    sw.sparse_warp = *on ? 1 : 0;
  env.on_off(sw.attn_summaries, "KINFER_ATTN_SUMMARIES", "0 (a summary kernel after qkv_rope_write) or 1 (the "
                                                         "fused sparse kernel writes the page summaries: the default)");
  env.on_off(sw.sync_checks, "KINFER_CUDA_SYNC",
             "0 (a fault surfaces at the next wait for the device: the default) or 1 (the backend waits after every "
             "op and names the op that faulted)");
  sw.noted = env.noted;
  return sw;
}

}  // namespace kf::cuda
