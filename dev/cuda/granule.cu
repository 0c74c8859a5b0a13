// Sandbox: how fast the H200 reads scattered chunks of S bytes (the question
// behind the sparse decode kernel's scoring phase, which reads one 256-byte
// page summary per (page, KV head) at 3.3 TB/s while its attention phase reads
// 4 KB pages at 4.7 TB/s). Every version reads the same bytes: chunks of S
// bytes at random S-aligned places of a 4 GiB buffer, 264 blocks of 256
// threads (the sparse kernel's 2 blocks per SM), consecutive lanes on
// consecutive 16 bytes of a chunk, U loads in flight per thread; the chunk's
// place comes from a table (a dependent load, as a page table lookup) or
// from a hash of its index (no load: what DRAM alone gives).
//   nvcc -O3 -arch=sm_90a -I src -o /tmp/granule dev/cuda/granule.cu && /tmp/granule [MB per launch]
// Versions 9-14 read the same chunks with the copy engine instead of loads:
// cp.async.bulk global -> shared (TMA, no tensor map), one thread of a
// 128-thread block issuing a stage of 8 KB (8192 / S chunks) per mbarrier,
// 4 or 8 stages in flight, 4 blocks per SM; the threads XOR each stage out
// of shared memory before its refill.
// Validates every version's XOR of the bytes read against the CPU's.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cuda/common.cuh"  // ld_stream (the kernels' K/V and summary loads), smem_addr
#include "check.cuh"

using kf::cuda::smem_addr;


// Word i of the buffer: any cheap hash, so the XOR checks which bytes were read.
__host__ __device__ inline uint32_t word_of(uint64_t i) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull;
  return static_cast<uint32_t>(x >> 32) ^ static_cast<uint32_t>(x);
}

__global__ void fill(uint32_t* buf, uint64_t n) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x)
    buf[i] = word_of(i);
}

// Where chunk c of a launch lies (slot of the buffer): a hash, so that the
// address needs no load (WHERE 1), or a table (WHERE 0, as a page table lookup).
__host__ __device__ inline uint32_t hashed_slot(uint64_t c, uint64_t slots) {  // slots: a power of 2
  return static_cast<uint32_t>((c * 0xD1B54A32D192ED03ull >> 17) & (slots - 1));
}

template <int WHERE>  // 0: table, 1: hashed, 2: in order (sequential)
__device__ __forceinline__ int64_t slot_of(int64_t c, const uint32_t* chunk_at, uint64_t slots) {
  if constexpr (WHERE == 0) return chunk_at[c];
  else if constexpr (WHERE == 1) return hashed_slot(c, slots);
  else return c;
}

// Item t = (chunk t / V, 16-byte vector t % V), V = S / 16 vectors per chunk
// (shifts and masks: 64-bit division would cost more than the loads).
template <int U, int WHERE>  // WHERE as slot_of
__global__ void __launch_bounds__(256, 2) read_chunks(const uint4* buf, const uint32_t* chunk_at, int log2_vecs,
                                                      uint64_t slots, int64_t n_items, uint32_t* xor_out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  uint32_t acc = 0;
  for (int64_t t0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t0 < n_items; t0 += stride * U) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t t = t0 + u * stride;
      v[u] = make_uint4(0, 0, 0, 0);
      if (t < n_items)
        v[u] = kf::cuda::ld_stream(buf + (slot_of<WHERE>(t >> log2_vecs, chunk_at, slots) << log2_vecs) +
                                   (t & ((1 << log2_vecs) - 1)));
    }
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  atomicXor(xor_out, acc);
}

constexpr int kStageBytes = 8192;

// Chunk group g = chunks [g * per_stage, (g + 1) * per_stage); block b reads
// groups b, b + grid, ...; stage s of the ring holds its it-th group when it % STAGES == s.
template <int WHERE, int STAGES>
__global__ void __launch_bounds__(128) read_chunks_bulk(const uint4* buf, const uint32_t* chunk_at, int log2_vecs,
                                                        uint64_t slots, int64_t n_chunks, uint32_t* xor_out) {
  extern __shared__ __align__(128) uint4 ring_flat[];  // [STAGES][kStageBytes / 16]
  auto ring = reinterpret_cast<uint4(*)[kStageBytes / 16]>(ring_flat);
  __shared__ __align__(8) uint64_t full[STAGES];
  const int vecs = 1 << log2_vecs, per_stage = kStageBytes / 16 / vecs;
  const uint32_t chunk_bytes = 16u * vecs;
  const int64_t n_groups = n_chunks / per_stage;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&full[s])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  auto issue = [&](int s, int64_t g) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(&full[s])),
                 "r"(uint32_t(kStageBytes))
                 : "memory");
    for (int c = 0; c < per_stage; ++c) {
      const uint4* src = buf + (slot_of<WHERE>(g * per_stage + c, chunk_at, slots) << log2_vecs);
      asm volatile(
          "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
              smem_addr(&ring[s][c * vecs])),
          "l"(src), "r"(chunk_bytes), "r"(smem_addr(&full[s]))
          : "memory");
    }
  };
  if (threadIdx.x == 0)
    for (int s = 0; s < STAGES; ++s)
      if (blockIdx.x + int64_t(s) * gridDim.x < n_groups) issue(s, blockIdx.x + int64_t(s) * gridDim.x);
  uint32_t acc = 0;
  int it = 0;
  for (int64_t g = blockIdx.x; g < n_groups; g += gridDim.x, ++it) {
    const int s = it % STAGES;
    const uint32_t parity = (it / STAGES) & 1;
    asm volatile(
        "{\n.reg .pred done;\nwait_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}" ::"r"(smem_addr(&full[s])),
        "r"(parity)
        : "memory");
    for (int v = threadIdx.x; v < kStageBytes / 16; v += blockDim.x) {
      const uint4 x = ring[s][v];
      acc ^= x.x ^ x.y ^ x.z ^ x.w;
    }
    __syncthreads();  // the stage is read: refill it
    const int64_t next = g + int64_t(STAGES) * gridDim.x;
    if (threadIdx.x == 0 && next < n_groups) issue(s, next);
  }
  atomicXor(xor_out, acc);
}

int main(int argc, char** argv) {
  const int64_t mb = argc > 1 ? std::atoll(argv[1]) : 256;  // bytes read per launch
  const uint64_t buf_bytes = 4ull << 30, n_words = buf_bytes / 4;
  uint32_t* buf;
  CK(cudaMalloc(&buf, buf_bytes));
  fill<<<1024, 256>>>(buf, n_words);
  uint32_t *d_xor, *d_chunks;
  CK(cudaMalloc(&d_xor, 4));
  const int64_t read_bytes = mb << 20;
  CK(cudaMalloc(&d_chunks, (read_bytes / 128) * 4));  // the smallest chunk below
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (auto kernel : {read_chunks_bulk<0, 8>, read_chunks_bulk<1, 8>, read_chunks_bulk<2, 8>})
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 8 * kStageBytes));
  std::printf("{\"bench\": \"granule\", \"mb_per_launch\": %lld, \"rows\": [\n", (long long)mb);
  bool first = true;
  for (int S : {128, 256, 512, 1024, 2048, 4096, 8192}) {
    const int64_t n_chunks = read_bytes / S, slots = buf_bytes / S;
    std::mt19937_64 rng(S);
    std::vector<uint32_t> chunks(n_chunks);
    for (auto& c : chunks) c = static_cast<uint32_t>(rng() % slots);  // repeats are rare: 1 in slots/n_chunks
    CK(cudaMemcpy(d_chunks, chunks.data(), n_chunks * 4, cudaMemcpyHostToDevice));
    uint32_t want[3] = {0, 0, 0};  // table, hashed, in order
    for (int64_t c = 0; c < n_chunks; ++c)
      for (uint64_t w = 0; w < uint64_t(S) / 4; ++w) {
        want[0] ^= word_of(uint64_t(chunks[c]) * (S / 4) + w);
        want[1] ^= word_of(uint64_t(hashed_slot(c, slots)) * (S / 4) + w);
        want[2] ^= word_of(uint64_t(c) * (S / 4) + w);
      }
    const int V = S / 16, LV = __builtin_ctz(V);
    const int64_t n_items = n_chunks * V;
    static const char* where_name[3] = {"table", "hashed", "in order"};
    for (int version = 0; version < 15; ++version) {  // U = 4, 8, 16 loads in flight x where; then bulk
      const bool bulk = version >= 9;
      const int U = bulk ? 0 : 4 << (version % 3), where = bulk ? (version - 9) / 2 : version / 3;
      const int stages = bulk ? 4 << ((version - 9) % 2) : 0;
      auto launch = [&] {
        const uint4* b = reinterpret_cast<uint4*>(buf);
        auto bulk_launch = [&](void (*kernel)(const uint4*, const uint32_t*, int, uint64_t, int64_t, uint32_t*),
                               int n_stages) {
          kernel<<<4 * sms, 128, n_stages * kStageBytes>>>(b, d_chunks, LV, slots, n_chunks, d_xor);
        };
        const dim3 g(2 * sms), t(256);
        switch (version) {
          case 0: read_chunks<4, 0><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 1: read_chunks<8, 0><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 2: read_chunks<16, 0><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 3: read_chunks<4, 1><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 4: read_chunks<8, 1><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 5: read_chunks<16, 1><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 6: read_chunks<4, 2><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 7: read_chunks<8, 2><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 8: read_chunks<16, 2><<<g, t>>>(b, d_chunks, LV, slots, n_items, d_xor); break;
          case 9: bulk_launch(read_chunks_bulk<0, 4>, 4); break;
          case 10: bulk_launch(read_chunks_bulk<0, 8>, 8); break;
          case 11: bulk_launch(read_chunks_bulk<1, 4>, 4); break;
          case 12: bulk_launch(read_chunks_bulk<1, 8>, 8); break;
          case 13: bulk_launch(read_chunks_bulk<2, 4>, 4); break;
          default: bulk_launch(read_chunks_bulk<2, 8>, 8); break;
        }
      };
      CK(cudaMemset(d_xor, 0, 4));
      launch();
      uint32_t got = 0;
      CK(cudaMemcpy(&got, d_xor, 4, cudaMemcpyDeviceToHost));
      float best = 1e30f;
      for (int rep = 0; rep < 20; ++rep) {
        CK(cudaEventRecord(e0));
        launch();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        best = std::min(best, ms);
      }
      std::printf("%s  {\"chunk_bytes\": %d, \"where\": \"%s\", \"how\": \"%s\", \"in_flight\": %d, \"us\": %.2f, "
                  "\"gbps\": %.0f, \"valid\": %s}",
                  first ? "" : ",\n", S, where_name[where], bulk ? "bulk stages" : "loads", bulk ? stages : U,
                  best * 1e3, read_bytes / (best * 1e-3) / 1e9,
                  got == want[where] ? "true" : "false");
      first = false;
    }
  }
  std::printf("\n]}\n");
  return 0;
}
