// `kinfer bench attention`: one decode attention step over a paged bf16 KV
// cache (B sequences of L tokens each, random data, pages scattered through
// the pool) on the CUDA backend. Reports time per step and effective GB/s:
// the bytes the policy must read (K and V of the pages it visits, the page
// summaries blocktopk scores, q) and write (out), over the step time.
// --q-rows N gives each sequence N query rows at the end of its context (a
// prefill chunk, dense causal on tensor cores) and adds TFLOP/s counting the
// causal FLOPs, 4 * D * Hq * (sum over rows of the keys each row sees).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "bench.h"
#ifdef KINFER_ATTN_PHASES
#include "backend/cuda/kernels.h"
#endif
#include "util/error.h"
#ifdef KINFER_HAVE_CUDA
#include "backend/cuda/cuda_util.h"
#endif

namespace kf::cli {

int bench_attention(int argc, char** argv) {
  CLI::App app{"Paged decode attention on the GPU: time per step and effective GB/s", "kinfer bench attention"};
  std::string attn = "dense", summary = "bf16";
  int batch = 64, context = 16384, q_heads = 16, kv_heads = 8, head_dim = 128, page_size = 16;
  int topk_pages = 64, local_pages = 4, iters = 20, reps = 7, warmup = 3, q_rows = 1;
  double copy_gbps = 0;
  bool json = false, contiguous = false;
  app.add_option("--attn", attn, "dense, blocktopk, local or topk")->capture_default_str();
  app.add_option("--batch", batch, "sequences (one decode row each)")->capture_default_str();
  app.add_option("--context", context, "tokens in each sequence's cache")->capture_default_str();
  app.add_option("--q-rows", q_rows, "query rows per sequence, the last of its context (>1: prefill chunk)")
      ->capture_default_str();
  app.add_option("--q-heads", q_heads, "query heads")->capture_default_str();
  app.add_option("--kv-heads", kv_heads, "KV heads")->capture_default_str();
  app.add_option("--head-dim", head_dim, "head dimension")->capture_default_str();
  app.add_option("--page-size", page_size, "tokens per page")->capture_default_str();
  app.add_option("--topk-pages", topk_pages, "blocktopk: pages chosen")->capture_default_str();
  app.add_option("--local-pages", local_pages, "last pages always read")->capture_default_str();
  app.add_option("--summary", summary, "page summary dtype: bf16 or f32")->capture_default_str();
  app.add_option("--iters", iters, "steps per timed repetition")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions (median reported)")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--copy-gbps", copy_gbps, "copy bandwidth to report the ratio against (kinfer bench copy)");
  app.add_flag("--contiguous", contiguous, "give each sequence consecutive pages (default: scattered)");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  const AttnKind kind = parse_attn_kind(attn);
  KF_CHECK(batch >= 1 && context >= 1 && q_heads >= 1 && kv_heads >= 1 && page_size >= 1 && iters >= 1 &&
               reps >= 1 && q_heads % kv_heads == 0 && q_rows >= 1 && q_rows <= context,
           "bad shape: batch {}, context {}, heads {}/{}", batch, context, q_heads, kv_heads);
  KF_CHECK(summary == "bf16" || summary == "f32", "--summary must be bf16 or f32");
#ifdef KINFER_HAVE_CUDA
  auto be = make_cuda_backend(0);
  const int pps = (context + page_size - 1) / page_size;  // pages per sequence
  const int n_pages = batch * pps;
  Buffer k(DType::BF16, {n_pages, kv_heads, page_size, head_dim}, *be);
  Buffer v(DType::BF16, {n_pages, kv_heads, page_size, head_dim}, *be);
  Buffer sum(summary == "bf16" ? DType::BF16 : DType::F32, {n_pages, kv_heads, head_dim}, *be);
  cuda_fill_uniform(k, 1, -1.f, 1.f);
  cuda_fill_uniform(v, 2, -1.f, 1.f);
  std::mt19937 rng(3);
  if (summary == "bf16") {
    cuda_fill_uniform(sum, 4, -1.f, 1.f);
  } else {
    std::vector<float> h(sum.view().numel());
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& x : h) x = u(rng);
    be->upload(sum, h.data());
  }
  const int n_rows = batch * q_rows;
  Buffer q(DType::BF16, {n_rows, q_heads, head_dim}, *be), out(DType::BF16, {n_rows, q_heads, head_dim}, *be);
  cuda_fill_uniform(q, 5, -2.f, 2.f);
  std::vector<int32_t> perm(n_pages), q_start(batch + 1), ctx(batch, context);
  std::iota(perm.begin(), perm.end(), 0);
  if (!contiguous) std::shuffle(perm.begin(), perm.end(), rng);  // scattered, as a long-running pool
  for (int s = 0; s <= batch; ++s) q_start[s] = s * q_rows;
  Buffer dq_start(DType::I32, {batch + 1}, *be), dctx(DType::I32, {batch}, *be);
  Buffer dtable(DType::I32, {batch, pps}, *be);
  be->upload(dq_start, q_start.data());
  be->upload(dctx, ctx.data());
  be->upload(dtable, perm.data());
  AttnBatch ab{batch, pps, dq_start, dctx, dtable, {}};
  AttnPolicy pol;
  pol.kind = kind;
  pol.topk_pages = topk_pages;
  pol.local_pages = local_pages;
  const float scale = 1.f / std::sqrt(float(head_dim));
  const KvLayer kv{k, v, sum};

  const std::vector<double> ms =
      time_step_ms(*be, [&] { be->attention(q, kv, ab, pol, scale, out, nullptr); }, warmup, reps, iters);
  const double med = ms[ms.size() / 2];

  // Bytes a step must move for this policy (DESIGN.md: blocktopk reads page 0,
  // the local pages, topk pages, and scores every candidate's summary).
  const double kv_page = 2.0 * kv_heads * page_size * head_dim * 2;  // K + V of one page, all heads
  const int cand = std::max(0, std::max(1, pps - local_pages) - 1);
  double pages_read = pps, summary_bytes = 0;
  if (kind == AttnKind::BlockTopK || kind == AttnKind::Local) {
    const int k_sel = kind == AttnKind::Local ? 0 : topk_pages;
    if (cand > k_sel) {
      pages_read = pps - cand + k_sel;
      if (k_sel > 0) summary_bytes = double(cand) * kv_heads * head_dim * (summary == "bf16" ? 2 : 4);
    }
  }
  const double io = 2.0 * n_rows * q_heads * head_dim * 2;  // q in, out
  const double bytes = batch * (pages_read * kv_page + summary_bytes) + io;
  const double gbps = bytes / (med * 1e-3) / 1e9;
  // Causal FLOPs: row i of a chunk sees context - q_rows + i + 1 keys (QK^T and PV, 2 FLOPs a MAC).
  const double keys = double(q_rows) * (context - q_rows) + 0.5 * double(q_rows) * (q_rows + 1);
  const double tflops = 4.0 * head_dim * q_heads * batch * keys / (med * 1e-3) / 1e12;
  if (json) {
    std::string extra = copy_gbps > 0 ? fmt::format(R"(, "copy_gbps": {:.1f}, "fraction_of_copy": {:.3f})", copy_gbps,
                                                    gbps / copy_gbps)
                                       : "";
#ifdef KINFER_ATTN_PHASES  // dev builds with phase probes (backend/cuda/phases.cuh)
    if (q_rows == 1 && kind != AttnKind::Dense) extra += ", \"phases\": " + cuda::attention_phases_json(batch * kv_heads);
#endif
    std::printf("%s\n",
                fmt::format(R"({{"bench": "attention", "device": "{}", "attn": "{}", "batch": {}, "context": {}, )"
                            R"("q_heads": {}, "kv_heads": {}, "head_dim": {}, "page_size": {}, "topk_pages": {}, )"
                            R"("local_pages": {}, "summary": "{}", "pages": "{}", "q_rows": {}, "ms_per_step": {:.4f}, "ms_min": {:.4f}, )"
                            R"("ms_max": {:.4f}, "bytes_per_step": {:.0f}, "effective_gbps": {:.1f}, "tflops": {:.2f}{}}})",
                            cuda_device_name(), attn, batch, context, q_heads, kv_heads, head_dim, page_size,
                            topk_pages, local_pages, summary, contiguous ? "contiguous" : "scattered", q_rows, med,
                            ms.front(), ms.back(), bytes, gbps, tflops, extra)
                    .c_str());
  } else {
    std::printf("%s  B%d x L%d  rows %d  Hq%d Hkv%d D%d P%d  %.4f ms/step  %.1f GB/s  %.2f TFLOP/s", attn.c_str(),
                batch, context, q_rows, q_heads, kv_heads, head_dim, page_size, med, gbps, tflops);
    if (copy_gbps > 0) std::printf("  (%.3f of copy)", gbps / copy_gbps);
    std::printf("\n");
  }
  return 0;
#else
  (void)kind;
  (void)json;
  fail("kinfer bench attention needs a CUDA build (configure with -DKINFER_CUDA=ON)");
#endif
}

}  // namespace kf::cli
