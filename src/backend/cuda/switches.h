// The CUDA backend's switches from the environment: experiments and
// debugging, read once when a backend is made. Each switch set is noted as
// VAR=VALUE in `noted`, which the backend appends to its name, so a run under
// a switch says so wherever the backend is named (bench JSON, eval and serve
// logs) and its rows cannot pass for the defaults'. docs/cuda.md lists them.
#pragma once
#include <string>

namespace kf::cuda {

struct Switches {
  bool gemm_tune = false;       // KINFER_GEMM_TUNE=1: time cuBLASLt's top candidates per shape
  bool gemm_cutlass = true;     // KINFER_GEMM_CUTLASS=0: every GEMM cuBLASLt's
  int split_k = -1;             // KINFER_SPLIT_K: output projections' K slices (0 or 1: never; -1: by size)
  bool silu_epilogue = true;    // KINFER_SILU_EPILOGUE=0: gate|up rows as loaded, silu_mul a kernel of its own
  bool fused_mlp = false;       // KINFER_MLP_FUSED=1: the MLP as one cooperative kernel where it applies
  bool stage_known = true;      // KINFER_ATTN_STAGE=0: the sparse kernel reads known pages from the pool
  int bulk_dense = -1;          // KINFER_ATTN_BULK=0 / 1: dense tiles by bulk copies never / always (-1: by shape)
  int decode_splits = 0;        // KINFER_DECODE_SPLITS: dense decode blocks per (row, KV head) (0: the rule)
  int sample_sub_chunks = 0;    // KINFER_SAMPLE_SUB_CHUNKS: sampling's top-k sub-chunks a block (0: the rule)
  int sparse_warp = -1;         // KINFER_SPARSE_WARP=0 / 1: the sparse warp kernel never / wherever it can (-1: by shape)
  bool attn_summaries = true;   // KINFER_ATTN_SUMMARIES=0: page summaries by a kernel of their own
  bool sync_checks = false;     // KINFER_CUDA_SYNC=1: wait after every op and name the one that faulted
  std::string noted;            // "VAR=VALUE VAR=VALUE" of those set, in reading order

  // Throws kf::Error naming the variable and its values for anything else.
  static Switches from_env();
};

}  // namespace kf::cuda
