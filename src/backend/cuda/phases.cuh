// Phase probes of the fused sparse decode kernel, for finding where its time
// goes. Configure with -DKINFER_ATTN_PHASES=ON (the main CMakeLists.txt:
// `kinfer bench decode --profile --json` adds "sparse_kernel_phases" of a real
// step; dev/cuda: `kinfer_cuda_bench attention --json` adds "phases"), both
// through attention_phases_json (attention.cu). Compiled out in every other build:
// KF_PHASE(i) is then empty. With KINFER_ATTN_PHASES, thread 0 of each block
// stamps the SM clock at each KF_PHASE(i) and the global timer at phases 0
// and kPhases - 1 (the block's first and last), overwriting the last launch's.
// Phases 2-4 (q̄, scoring, radix select) are stamped only by blocks that rank
// candidates (block top-k with more candidate pages than k); read them there.
// The sparse warp kernel stamps the same phases for the warp 0 of each block
// (4 once its k best are known, by shuffles or the bitwise search; 7 its
// output written); block 0 of either kernel notes which kernel ran and its
// grid (KF_PHASE_GRID), so the report reads only that launch's blocks.
#pragma once

namespace kf::cuda {

constexpr int kPhases = 8, kPhaseBlocks = 4096;

#ifdef KINFER_ATTN_PHASES
struct PhaseStamps {
  long long clk[kPhaseBlocks][kPhases];
  unsigned long long wall[kPhaseBlocks][2];  // global timer (ns) at phase 0 and at the last phase
  int grid_blocks;  // the last launch's blocks
  int warp_kernel;  // 1: the sparse warp kernel stamped, 0: the block kernel
};
static __device__ PhaseStamps g_phase_stamps;

__device__ __forceinline__ void phase_grid(int warp_kernel) {
  if (threadIdx.x != 0 || blockIdx.x != 0 || blockIdx.y != 0) return;
  g_phase_stamps.grid_blocks = static_cast<int>(gridDim.x * gridDim.y);
  g_phase_stamps.warp_kernel = warp_kernel;
}

__device__ __forceinline__ void phase_stamp(int i) {
  const int b = blockIdx.y * gridDim.x + blockIdx.x;
  if (threadIdx.x != 0 || b >= kPhaseBlocks) return;
  g_phase_stamps.clk[b][i] = clock64();
  if (i == 0 || i == kPhases - 1) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_phase_stamps.wall[b][i == 0 ? 0 : 1] = t;
  }
}
#define KF_PHASE(i) ::kf::cuda::phase_stamp(i)
#define KF_PHASE_GRID(warp_kernel) ::kf::cuda::phase_grid(warp_kernel)
#else
#define KF_PHASE(i) \
  do {              \
  } while (0)
#define KF_PHASE_GRID(warp_kernel) \
  do {                             \
  } while (0)
#endif

}  // namespace kf::cuda
