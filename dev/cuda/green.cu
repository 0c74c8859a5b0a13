// Sandbox: can a decode step overlap its DRAM-bound attention with its
// latency-bound chain of small per-layer kernels by running two half-batches
// on disjoint SM partitions (green contexts)? The question behind the
// non-attention target of issue 13 (docs/cuda-experiments.md): at Qwen3-0.6B
// block top-k B32x16K a layer is ~63 us of attention (212 MB) and ~29 us of
// ~7 dependent kernels whose weights (42 MB) need 7 us. Split into two
// half-batches, the attention bytes stay the same, the weights are read twice
// (+42 MB a layer), but one half's chain could run while the other half's
// attention keeps DRAM busy. Synthetic stand-ins, same bytes as the real step:
//   attention: read A bytes (one launch; a half reads A / 2)
//   chain:     K dependent launches, each reading W / K bytes of weights and a
//              64 KB activation the previous one wrote, writing the next
// Variants, each over L layers with its own buffers per layer (no L2 reuse):
//   serial      full batch, one stream: attn(A), chain            (today's step)
//   halves      two half-batches, one stream: attn(A/2), chain, twice
//   streams     the two halves on two plain streams, concurrently
//   split S     the two halves each on its own green context of S and 132-S SMs
//   roles S     attention launches on a green context of S SMs, chains on the
//               rest; the halves pipeline: half 1's chain while half 2 attends
// Checks: every variant's sum of the words its kernels read equals serial's.
//   nvcc -O3 -arch=sm_90a -o /tmp/green dev/cuda/green.cu -lcuda && /tmp/green [L A_MB W_MB K]
// (gpu.sh green). Prints one JSON object.
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include "check.cuh"

#define CU(x)                                                                        \
  do {                                                                               \
    CUresult r = (x);                                                                \
    if (r != CUDA_SUCCESS) {                                                         \
      const char* s = nullptr;                                                       \
      cuGetErrorString(r, &s);                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, s ? s : "?"); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

namespace {

constexpr int kThreads = 256;
constexpr uint64_t kActBytes = 64 << 10;  // a half-batch's activation rows, about (16 rows x 1024 x bf16 x 2)

__global__ void fill(uint4* p, uint64_t n16, uint32_t seed) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n16; i += uint64_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + seed) * 0x9E3779B97F4A7C15ull;
    p[i] = make_uint4(uint32_t(x), uint32_t(x >> 32), uint32_t(x >> 17), uint32_t(x >> 41));
  }
}

__device__ __forceinline__ unsigned long long sum4(uint4 v) {
  return (unsigned long long)v.x + v.y + v.z + v.w;
}

// Sum (mod 2^64) of n16 16-byte words as 32-bit words, four loads in flight a
// thread, one atomic a warp. A sum, not an XOR: bytes read twice count twice.
__device__ __forceinline__ void read_sum(const uint4* __restrict__ p, uint64_t n16, unsigned long long* out) {
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x;
  unsigned long long acc = 0;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
                d = __ldcs(p + i + 3 * stride);
    acc += sum4(a) + sum4(b) + sum4(c) + sum4(d);
  }
  for (; i < n16; i += stride) acc += sum4(__ldcs(p + i));
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0 && acc) atomicAdd(out, acc);
}

__global__ void attention_like(const uint4* kv, uint64_t n16, unsigned long long* out) { read_sum(kv, n16, out); }

// One link of the chain: its weights, and the activation the link before wrote.
// Grids: 4 blocks of 256 threads an SM for the attention (many loads in
// flight), one block an SM for a chain link (as the persistent decode GEMMs).
__global__ void chain_link(const uint4* w, uint64_t n16, const uint4* act_in, uint4* act_out,
                           unsigned long long* out) {
  constexpr uint64_t a16 = kActBytes / 16;
  uint32_t a = 0;
  for (uint64_t i = threadIdx.x; i < a16; i += blockDim.x) a ^= act_in[i].x ^ act_in[i].y;  // every block reads x
  read_sum(w, n16, out);
  if (blockIdx.x == 0)
    for (uint64_t i = threadIdx.x; i < a16; i += blockDim.x) {
      const uint4 v = act_in[i];
      act_out[i] = make_uint4(v.y ^ a, v.z, v.w, v.x);
    }
}

struct Layer {
  uint4* kv[2];       // the two halves' attention bytes (A / 2 each)
  uint4* w;           // the layer's weights (W)
  uint4* act[2][2];   // per half: ping-pong activations
};

struct Sizes {
  int layers, links;
  uint64_t attn_bytes, weight_bytes;
};

// The launches of one half-batch layer (or the full batch: both halves' kv in one launch).
struct Lanes {
  cudaStream_t attn, chain;  // equal unless roles are split
  int attn_blocks, chain_blocks;
};

void launch_attention(const Layer& L, int half, bool full, const Sizes& z, const Lanes& ln,
                      unsigned long long* out) {
  if (full) {  // the two halves' buffers are one allocation: kv[0] then kv[1]
    attention_like<<<ln.attn_blocks, kThreads, 0, ln.attn>>>(L.kv[0], z.attn_bytes / 16, out);
  } else {
    attention_like<<<ln.attn_blocks, kThreads, 0, ln.attn>>>(L.kv[half], z.attn_bytes / 32, out);
  }
  CK(cudaGetLastError());
}

void launch_chain(const Layer& L, int half, const Sizes& z, const Lanes& ln, unsigned long long* out) {
  const uint64_t per = z.weight_bytes / z.links / 16;
  for (int k = 0; k < z.links; ++k) {
    chain_link<<<ln.chain_blocks, kThreads, 0, ln.chain>>>(L.w + per * k, per, L.act[half][k & 1],
                                                          L.act[half][(k + 1) & 1], out);
    CK(cudaGetLastError());
  }
}

struct Green {
  CUgreenCtx ctx[2] = {nullptr, nullptr};
  cudaStream_t stream[2] = {nullptr, nullptr};
  int sms[2] = {0, 0};
};

// Two green contexts of about s and (all - s) SMs, a stream on each.
Green make_green(int s) {
  CUdevice dev;
  CU(cuDeviceGet(&dev, 0));
  CUdevResource all;
  CU(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
  CUdevResource group, rest;
  unsigned int n = 1;
  CU(cuDevSmResourceSplitByCount(&group, &n, &all, &rest, 0, static_cast<unsigned>(s)));
  Green g;
  CUdevResource* parts[2] = {&group, &rest};
  for (int i = 0; i < 2; ++i) {
    CUdevResourceDesc desc;
    CU(cuDevResourceGenerateDesc(&desc, parts[i], 1));
    CU(cuGreenCtxCreate(&g.ctx[i], desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    CUstream st;
    CU(cuGreenCtxStreamCreate(&st, g.ctx[i], CU_STREAM_NON_BLOCKING, 0));
    g.stream[i] = reinterpret_cast<cudaStream_t>(st);
    g.sms[i] = static_cast<int>(parts[i]->sm.smCount);
  }
  return g;
}

void destroy_green(Green& g) {
  for (int i = 0; i < 2; ++i) {
    if (g.stream[i]) CU(cuStreamDestroy(reinterpret_cast<CUstream>(g.stream[i])));
    if (g.ctx[i]) CU(cuGreenCtxDestroy(g.ctx[i]));
  }
}

// Median ms of `reps` runs of `body` between events on `main` (body joins its streams back to main).
template <class F>
float time_ms(cudaStream_t main, int reps, F body) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = 0; r <= reps; ++r) {  // run 0 warms up
    CK(cudaEventRecord(a, main));
    body();
    CK(cudaEventRecord(b, main));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    if (r > 0) ms.push_back(t);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Events for ordering streams, made once.
struct Events {
  std::vector<cudaEvent_t> e;
  size_t next = 0;
  cudaEvent_t get() {
    if (next == e.size()) {
      e.emplace_back();
      CK(cudaEventCreateWithFlags(&e.back(), cudaEventDisableTiming));
    }
    return e[next++];
  }
  void reset() { next = 0; }
};

// `after` waits for everything recorded so far on `before`.
void join(Events& ev, cudaStream_t after, cudaStream_t before) {
  if (after == before) return;
  cudaEvent_t e = ev.get();
  CK(cudaEventRecord(e, before));
  CK(cudaStreamWaitEvent(after, e, 0));
}

}  // namespace

int main(int argc, char** argv) {
  Sizes z;
  z.layers = argc > 1 ? std::atoi(argv[1]) : 28;
  z.attn_bytes = (argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 212) << 20;
  z.weight_bytes = (argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 42) << 20;
  z.links = argc > 4 ? std::atoi(argv[4]) : 7;
  const int reps = 7;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaFree(nullptr));  // the primary context first (green contexts retain it)
  const int sms = prop.multiProcessorCount;
  z.attn_bytes -= z.attn_bytes % (32 * 64);
  z.weight_bytes -= z.weight_bytes % (16 * 64 * z.links);

  std::vector<Layer> layers(z.layers);
  for (int l = 0; l < z.layers; ++l) {
    Layer& L = layers[l];
    CK(cudaMalloc(&L.kv[0], z.attn_bytes));
    L.kv[1] = L.kv[0] + z.attn_bytes / 32;
    CK(cudaMalloc(&L.w, z.weight_bytes));
    for (auto& h : L.act)
      for (auto& a : h) CK(cudaMalloc(&a, kActBytes));
    fill<<<1024, kThreads>>>(L.kv[0], z.attn_bytes / 16, 3 * l);
    fill<<<1024, kThreads>>>(L.w, z.weight_bytes / 16, 3 * l + 1);
    for (int h = 0; h < 2; ++h) fill<<<16, kThreads>>>(L.act[h][0], kActBytes / 16, 3 * l + 2 + h);
  }
  unsigned long long* sums;  // one checksum per variant
  CK(cudaMalloc(&sums, 64 * sizeof(unsigned long long)));
  CK(cudaMemset(sums, 0, 64 * sizeof(unsigned long long)));
  CK(cudaDeviceSynchronize());

  cudaStream_t main_s, side_s;
  CK(cudaStreamCreateWithFlags(&main_s, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&side_s, cudaStreamNonBlocking));
  std::string rows;
  int variant = 0;
  auto row = [&](const std::string& name, float ms, int a_sms, int c_sms) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s\n  {\"variant\": \"%s\", \"attn_sms\": %d, \"chain_sms\": %d, \"ms\": %.4f, \"us_per_layer\": %.2f}",
                  rows.empty() ? "" : ",", name.c_str(), a_sms, c_sms, ms, 1000.f * ms / z.layers);
    rows += buf;
    ++variant;
  };
  // Timed passes add into a scratch slot; one more pass of each variant adds into its
  // own slot, so the variants can be compared (the same words read as often).
  auto checksum = [&](auto body) {
    CK(cudaMemsetAsync(sums + variant, 0, sizeof(unsigned long long), main_s));
    body();
    CK(cudaStreamSynchronize(main_s));
    unsigned long long v = 0;
    CK(cudaMemcpy(&v, sums + variant, sizeof v, cudaMemcpyDeviceToHost));
    return v;
  };
  std::vector<unsigned long long> checks;  // each variant's checksum pass

  const Lanes all{main_s, main_s, 4 * sms, sms};
  // The parts alone, for scale.
  {
    unsigned long long* out = sums + 63;
    const float a = time_ms(main_s, reps, [&] {
      for (auto& L : layers) launch_attention(L, 0, true, z, all, out);
    });
    const float c = time_ms(main_s, reps, [&] {
      for (auto& L : layers) launch_chain(L, 0, z, all, out);
    });
    row("attention alone (full batch)", a, sms, 0);
    row("chain alone", c, 0, sms);
  }
  auto serial = [&](unsigned long long* out) {
    for (auto& L : layers) {
      launch_attention(L, 0, true, z, all, out);
      launch_chain(L, 0, z, all, out);
      launch_chain(L, 1, z, all, out);  // the other half's activations too (same weights: L2)
    }
  };
  // serial's checksum pass reads the weights twice, as the halves do; its timed pass once
  // (the full batch's chain reads its weights once).
  auto serial_timed = [&](unsigned long long* out) {
    for (auto& L : layers) {
      launch_attention(L, 0, true, z, all, out);
      launch_chain(L, 0, z, all, out);
    }
  };
  row("serial (today)", time_ms(main_s, reps, [&] { serial_timed(sums + 62); }), sms, sms);
  checks.push_back(checksum([&] { serial(sums + variant); }));

  auto halves_one_stream = [&](unsigned long long* out) {
    for (auto& L : layers)
      for (int h = 0; h < 2; ++h) {
        launch_attention(L, h, false, z, all, out);
        launch_chain(L, h, z, all, out);
      }
  };
  row("halves, one stream", time_ms(main_s, reps, [&] { halves_one_stream(sums + 62); }), sms, sms);
  checks.push_back(checksum([&] { halves_one_stream(sums + variant); }));

  // Each half in order (its attention, then its chain, layer by layer); the
  // halves only share streams. A stream that waits on an event delays only the
  // work queued after the wait, so with shared attention and chain streams half
  // 1 attends while half 0's chain runs.
  Events ev;
  auto two_lanes = [&](const Lanes ln[2], unsigned long long* out) {
    ev.reset();
    for (int h = 0; h < 2; ++h) join(ev, ln[h].attn, main_s);
    cudaEvent_t chain_done[2] = {nullptr, nullptr};  // each half's last chain
    for (auto& L : layers)
      for (int h = 0; h < 2; ++h) {
        // Its attention waits for its own previous chain, queued right before it (a wait
        // queued earlier would hold the other half's attention too).
        if (chain_done[h] && ln[h].chain != ln[h].attn) CK(cudaStreamWaitEvent(ln[h].attn, chain_done[h], 0));
        launch_attention(L, h, false, z, ln[h], out);
        join(ev, ln[h].chain, ln[h].attn);
        launch_chain(L, h, z, ln[h], out);
        chain_done[h] = ev.get();
        CK(cudaEventRecord(chain_done[h], ln[h].chain));
      }
    for (int h = 0; h < 2; ++h) {
      join(ev, main_s, ln[h].chain);
      join(ev, main_s, ln[h].attn);
    }
  };
  {
    const Lanes ln[2] = {{main_s, main_s, 4 * sms, sms}, {side_s, side_s, 4 * sms, sms}};
    row("halves, two plain streams", time_ms(main_s, reps, [&] { two_lanes(ln, sums + 62); }), sms, sms);
    checks.push_back(checksum([&] { two_lanes(ln, sums + variant); }));
  }
  // On two green contexts of ~s and the rest of the SMs, with the lanes `lanes(g)` makes.
  auto on_partitions = [&](const char* name, int s, auto lanes) {
    Green g = make_green(s);
    Lanes ln[2];
    lanes(g, ln);
    row(name, time_ms(main_s, reps, [&] { two_lanes(ln, sums + 62); }), g.sms[0], g.sms[1]);
    checks.push_back(checksum([&] { two_lanes(ln, sums + variant); }));
    destroy_green(g);
  };
  for (int s : {44, 66, 88})  // each half on its own partition
    on_partitions("halves, split partitions", s, [](const Green& g, Lanes ln[2]) {
      for (int h = 0; h < 2; ++h) ln[h] = {g.stream[h], g.stream[h], 4 * g.sms[h], g.sms[h]};
    });
  // Attention on s SMs, chains on the rest, halves pipelined: both halves share the two
  // streams (the attention stream runs half 0's then half 1's attention of a layer, the
  // chain stream their chains) and events order each half.
  for (int s : {66, 88, 100, 110})
    on_partitions("halves, roles on partitions", s, [](const Green& g, Lanes ln[2]) {
      for (int h = 0; h < 2; ++h) ln[h] = {g.stream[0], g.stream[1], 4 * g.sms[0], g.sms[1]};
    });
  // Every variant read the same bytes: the checksums agree.
  bool valid = true;
  for (unsigned long long x : checks) valid &= x == checks[0];
  std::printf("{\"bench\": \"green\", \"device\": \"%s\", \"sms\": %d, \"layers\": %d, \"attn_mb\": %llu, "
              "\"weight_mb\": %llu, \"links\": %d, \"valid\": %s, \"rows\": [%s\n]}\n",
              prop.name, sms, z.layers, (unsigned long long)(z.attn_bytes >> 20),
              (unsigned long long)(z.weight_bytes >> 20), z.links, valid ? "true" : "false", rows.c_str());
  return valid ? 0 : 1;
}
