// cuBLASLt for the decode-GEMM sandboxes (gemm_rows.cu, gemm_pdl.cu):
// y[n, m] = x[n, k] · w[m, k]ᵀ, bf16 operands and output, fp32 accumulation,
// the same descriptors as backend/cuda/gemm.cpp, and a list of algorithms to
// run by index: the heuristic's top 32, or every algorithm id x tile x
// stages that cublasLtMatmulAlgoCheck accepts (split-K 1, at most `cap`).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CL(x)                                                                           \
  do {                                                                                  \
    cublasStatus_t s_ = (x);                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      std::fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, int(s_));  \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

struct LtCandidates {
  cublasLtHandle_t h{};
  cublasLtMatmulDesc_t desc{};
  cublasLtMatrixLayout_t a{}, b{}, c{};
  void* ws = nullptr;
  size_t ws_bytes = 32 << 20;
  std::vector<cublasLtMatmulHeuristicResult_t> algos;

  LtCandidates(int n, int m, int k, bool all = false, int cap = 160) {
    CL(cublasLtCreate(&h));
    CL(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CL(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CL(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CL(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, k, m, k));
    CL(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, k, n, k));
    CL(cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, m, n, m));
    if (cudaMalloc(&ws, ws_bytes) != cudaSuccess) {
      std::fprintf(stderr, "cuBLASLt workspace: cudaMalloc of %zu bytes failed\n", ws_bytes);
      std::exit(1);
    }
    if (all) {
      enumerate(cap);
      return;
    }
    cublasLtMatmulPreference_t pref;
    CL(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t wsb = ws_bytes;
    CL(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    algos.resize(32);
    int found = 0;
    CL(cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, c, c, pref, 32, algos.data(), &found));
    algos.resize(found);
    cublasLtMatmulPreferenceDestroy(pref);
  }
  LtCandidates(const LtCandidates&) = delete;
  LtCandidates& operator=(const LtCandidates&) = delete;
  ~LtCandidates() {
    cudaFree(ws);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(h);
  }

  cublasStatus_t run(int i, const void* x, const void* w, void* y, cudaStream_t st) const {
    const float one = 1.f, zero = 0.f;
    return cublasLtMatmul(h, desc, &one, w, a, x, b, &zero, y, c, y, c, &algos[i].algo, ws, ws_bytes, st);
  }
  int config(int i, cublasLtMatmulAlgoConfigAttributes_t attr) const {
    int v = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&algos[i].algo, attr, &v, sizeof v, nullptr);
    return v;
  }

 private:
  void enumerate(int cap) {
    const cudaDataType_t bf = CUDA_R_16BF;
    int ids[256], n_ids = 0;
    CL(cublasLtMatmulAlgoGetIds(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, bf, bf, bf, bf, 256, ids, &n_ids));
    for (int i = 0; i < n_ids && int(algos.size()) < cap; ++i) {
      cublasLtMatmulAlgo_t algo;
      if (cublasLtMatmulAlgoInit(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, bf, bf, bf, bf, ids[i], &algo) !=
          CUBLAS_STATUS_SUCCESS)
        continue;
      uint32_t tiles[128], stages[128];
      size_t tb = 0, sb = 0;
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, tiles, sizeof tiles, &tb);
      cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_STAGES_IDS, stages, sizeof stages, &sb);
      const int nt = std::max<int>(1, int(tb / 4)), ns = int(sb / 4);
      if (tb == 0) tiles[0] = 0;
      for (int t = 0; t < nt && int(algos.size()) < cap; ++t)
        for (int si = -1; si < ns; ++si) {  // stages: the first the check accepts, the library's choice first
          cublasLtMatmulAlgo_t cfg = algo;
          const uint32_t stage_id = si < 0 ? 0u : stages[si];
          cublasLtMatmulAlgoConfigSetAttribute(&cfg, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[t], sizeof tiles[t]);
          cublasLtMatmulAlgoConfigSetAttribute(&cfg, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage_id, sizeof stage_id);
          cublasLtMatmulHeuristicResult_t r{};
          if (cublasLtMatmulAlgoCheck(h, desc, a, b, c, c, &cfg, &r) != CUBLAS_STATUS_SUCCESS ||
              r.workspaceSize > ws_bytes)
            continue;
          r.algo = cfg;
          algos.push_back(r);
          break;
        }
    }
  }
};
