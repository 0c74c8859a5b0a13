#include "backend/cpu/cpu_backend.h"

#include <unistd.h>

#ifndef KINFER_NO_BLAS  // the standalone CUDA build (dev/cuda) has no OpenBLAS
#include <cblas.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <fmt/format.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/host_group.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/packed_weights.h"
#include "backend/cpu/vector_kernels.h"
#include "backend/sampler.h"
#include "util/dequant.h"
#include "util/thread_pool.h"

namespace kf {
namespace {

// ---- checks ------------------------------------------------------------------

void check_f32(const Tensor& t, const char* op, const char* what) {
  KF_CHECK(t.device == Device::CPU && t.dtype == DType::F32 && t.is_contiguous(),
           "cpu {}: {} must be a contiguous F32 CPU tensor (got {} {} on {})", op, what,
           dtype_name(t.dtype), t.shape_str(), t.device == Device::CPU ? "CPU" : "CUDA");
}

void check_i32(const Tensor& t, const char* op, const char* what, int64_t n) {
  KF_CHECK(t.device == Device::CPU && t.dtype == DType::I32 && t.is_contiguous() && t.numel() == n,
           "cpu {}: {} must be {} contiguous I32 values on the CPU (got {} {})", op, what, n,
           dtype_name(t.dtype), t.shape_str());
}

// [rows, last] view of a tensor's memory, last = the size of its last dim.
int64_t last_dim(const Tensor& t) { return t.ndim == 0 ? 1 : t.dim(-1); }

// ---- the backend -------------------------------------------------------------

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuOptions& opt)
      : pool_(opt.n_threads), use_blas_(opt.use_blas), matmul_(pool_, cpu::best_kernels()) {}

  Device device() const override { return Device::CPU; }
  Memory memory() const override {
    const int64_t page = sysconf(_SC_PAGESIZE);
    return {static_cast<int64_t>(sysconf(_SC_AVPHYS_PAGES)) * page, static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * page};
  }
  void* allocate(size_t bytes) override { return host_allocator().allocate(bytes); }
  void deallocate(void* p) noexcept override { host_allocator().deallocate(p); }
  std::string name() const override {
    return fmt::format("cpu ({} threads, {} kernels{})", pool_.size(), matmul_.kernels().isa,
                       use_blas_ ? ", OpenBLAS for F32 weights" : "");
  }
  bool takes_weight(DType t) const override { return cpu::has_matmul_kernel(t); }

  Buffer pack_weight(Buffer w) override {
    const Tensor& t = w.view();
    const DType packed = cpu::packed_dtype(t.dtype);
    if (t.ndim != 2 || !takes_weight(packed) || !cpu::can_pack(t.dtype, t.dim(0), t.dim(1), t.data)) return w;
    Buffer out(packed, {t.dim(0), t.dim(1)}, *this);
    cpu::pack_rows(t.dtype, t.dim(0), t.dim(1), t.data, out.view().data);
    return out;
  }

  void all_reduce(const Tensor& x) override {
    if (!group_) return;
    check_f32(x, "all_reduce", "x");
    group_->all_reduce(tp_rank_, x.ptr<float>(), x.numel());
  }
  void abort_tp_group(const std::string& why) override {
    if (group_) group_->abort(why);
  }

  void upload(const Tensor& dst, const void* host) override {
    KF_CHECK(dst.device == Device::CPU, "cpu upload: destination is not a CPU tensor");
    if (dst.data != host) std::memcpy(dst.data, host, dst.nbytes());
  }
  void download(void* host, const Tensor& src) override {
    KF_CHECK(src.device == Device::CPU, "cpu download: source is not a CPU tensor");
    if (src.data != host) std::memcpy(host, src.data, src.nbytes());
  }

  void fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi, const FillIndex& at) override {
    check_f32(t, "fill_uniform", "t");
    float* x = static_cast<float*>(t.data);
    const int64_t n = t.numel(), cols = last_dim(t);
    for (int64_t i = 0; i < n; ++i) {  // the CUDA fill's values, before rounding to bf16
      const int64_t index = at.full_cols > 0 ? (at.row0 + i / cols) * at.full_cols + at.col0 + i % cols : i;
      uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      x[i] = lo + (hi - lo) * (static_cast<float>(z >> 40) * (1.f / 16777216.f));
    }
  }

  // Rows of a table in any weight dtype: F32 rows are copied, others dequantised.
  void embed(const Tensor& table, const Tensor& ids, const Tensor& out) override {
    KF_CHECK(table.device == Device::CPU && table.ndim == 2 && table.is_contiguous() && takes_weight(table.dtype),
             "cpu embed: table must be a [vocab, d] CPU tensor of a weight dtype, got {} {}", dtype_name(table.dtype),
             table.shape_str());
    check_f32(out, "embed", "out");
    const int64_t vocab = table.dim(0), d = table.dim(1), n = ids.numel();
    check_i32(ids, "embed", "ids", n);
    KF_CHECK(out.numel() == n * d, "cpu embed: out {} does not hold {} rows of {}", out.shape_str(), n, d);
    const int32_t* id = ids.ptr<int32_t>();
    const size_t row_bytes = dtype_bytes(table.dtype, d);
    const auto* src = static_cast<const uint8_t*>(table.data);
    float* dst = out.ptr<float>();
    const DType plain = cpu::plain_dtype(table.dtype);
    if (plain != table.dtype) plain_row_.resize(row_bytes);
    for (int64_t i = 0; i < n; ++i) {
      KF_CHECK(id[i] >= 0 && id[i] < vocab, "cpu embed: id {} at row {} is outside [0, {})", id[i], i, vocab);
      if (plain == table.dtype) {
        dequantize(table.dtype, src + int64_t(id[i]) * row_bytes, dst + i * d, d);
      } else {  // interleaved rows: the row's plain blocks first
        cpu::unpack_row(table.dtype, d, src, id[i], plain_row_.data());
        dequantize(plain, plain_row_.data(), dst + i * d, d);
      }
    }
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    check_f32(x, "matmul", "x");
    check_f32(y, "matmul", "y");
    KF_CHECK(w.device == Device::CPU && w.ndim == 2 && w.is_contiguous() && takes_weight(w.dtype),
             "cpu matmul: w must be an [out, in] CPU tensor of a weight dtype, got {} {}", dtype_name(w.dtype),
             w.shape_str());
    const int64_t out = w.dim(0), in = w.dim(1);
    KF_CHECK(last_dim(x) == in && x.numel() % in == 0, "cpu matmul: x {} does not match w {}",
             x.shape_str(), w.shape_str());
    const int64_t n = x.numel() / in;
    KF_CHECK(y.numel() == n * out, "cpu matmul: y {} is not [{}, {}]", y.shape_str(), n, out);
    const float* b = nullptr;
    if (bias) {
      check_f32(*bias, "matmul", "bias");
      KF_CHECK(bias->numel() == out, "cpu matmul: bias {} is not [{}]", bias->shape_str(), out);
      b = bias->ptr<float>();
    }
    if (n == 0 || out == 0) return;
    if (use_blas_ && w.dtype == DType::F32) {
#ifdef KINFER_NO_BLAS
      fail("cpu matmul: this build has no OpenBLAS (KINFER_NO_BLAS)");
#else
      const float *xp = x.ptr<float>(), *wp = w.ptr<float>();
      float* yp = y.ptr<float>();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(out),
                  static_cast<int>(in), 1.f, xp, static_cast<int>(in), wp, static_cast<int>(in), 0.f,
                  yp, static_cast<int>(out));
      if (b)
        for (int64_t r = 0; r < n; ++r)
          for (int64_t c = 0; c < out; ++c) yp[r * out + c] += b[c];
      return;
#endif
    }
    matmul_.run(x, w, b, y);
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    check_f32(x, "rmsnorm", "x");
    check_f32(y, "rmsnorm", "y");
    check_f32(weight, "rmsnorm", "weight");
    const int64_t d = weight.numel();
    KF_CHECK(last_dim(x) == d && y.numel() == x.numel(), "cpu rmsnorm: x {}, weight {}, y {} differ",
             x.shape_str(), weight.shape_str(), y.shape_str());
    const int64_t rows = x.numel() / d;
    const float *xp = x.ptr<float>(), *wp = weight.ptr<float>();
    float* yp = y.ptr<float>();
    for_rows(rows, d, [&](int64_t r) {
      const float* xr = xp + r * d;
      float* yr = yp + r * d;
      double ss = 0;  // per-row sum in index order: independent of the batch
      for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
      const float inv = 1.f / std::sqrt(static_cast<float>(ss / d) + eps);
      for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * inv) * wp[i];
    });
  }

  void add(const Tensor& x, const Tensor& y) override {
    check_f32(x, "add", "x");
    check_f32(y, "add", "y");
    KF_CHECK(x.numel() == y.numel(), "cpu add: x {} and y {} differ", x.shape_str(), y.shape_str());
    float* xp = x.ptr<float>();
    const float* yp = y.ptr<float>();
    const int64_t n = x.numel();
    pool_.parallel_for(
        n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) xp[i] += yp[i]; }, 1 << 14);
  }

  void rope(const Tensor& x, const Tensor& positions, const RopeParams& p) override {
    check_f32(x, "rope", "x");
    KF_CHECK(x.ndim == 3, "cpu rope: x must be [n, heads, head_dim], got {}", x.shape_str());
    const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2);
    check_i32(positions, "rope", "positions", n);
    const int rot = p.rotary_dim > 0 ? p.rotary_dim : static_cast<int>(hd);
    KF_CHECK(rot % 2 == 0 && rot <= hd && rot <= kMaxRotary && p.inv_freq,
             "cpu rope: rotary_dim {} must be even, <= head_dim {} and <= {}, with inv_freq set", rot,
             hd, kMaxRotary);
    const int half = rot / 2;
    const int32_t* pos = positions.ptr<int32_t>();
    float* xp = x.ptr<float>();
    for_rows(n, heads * hd, [&](int64_t r) {
      float cs[kMaxRotary / 2], sn[kMaxRotary / 2];
      for (int i = 0; i < half; ++i) {
        // As HF: the angle is a float product, then cos/sin of it.
        const float angle = static_cast<float>(pos[r]) * p.inv_freq[i];
        cs[i] = static_cast<float>(std::cos(double(angle)));
        sn[i] = static_cast<float>(std::sin(double(angle)));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (r * heads + h) * hd;
        for (int i = 0; i < half; ++i) {  // rotate_half: pairs (i, i + half)
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    });
  }

  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps, const Tensor& out) override {
    KF_CHECK(x.data != out.data, "cpu add_rmsnorm: out must not alias x");
    add(x, y);
    rmsnorm(x, weight, eps, out);
  }

  void silu_mul(const Tensor& gate_up, const Tensor& out) override {
    check_f32(gate_up, "silu_mul", "gate_up");
    check_f32(out, "silu_mul", "out");
    const int64_t f = last_dim(out);
    KF_CHECK(gate_up.numel() == 2 * out.numel() && last_dim(gate_up) == 2 * f,
             "cpu silu_mul: gate_up {} is not [rows, 2 x {}] for out {}", gate_up.shape_str(), f, out.shape_str());
    const float* gu = gate_up.ptr<float>();
    float* o = out.ptr<float>();
    const auto silu_mul_row = vectors_.silu_mul;
    for_rows(out.numel() / f, f, [&](int64_t r) { silu_mul_row(gu + r * 2 * f, gu + r * 2 * f + f, o + r * f, f); });
  }

  // The reference composes the separate ops on copies of q, k and v, so its
  // bits are exactly those of rmsnorm + rope + kv_write.
  void qkv_rope_write(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                      const Tensor& positions, const RopeParams& rope_p, const KvLayer& kv, const Tensor& slots,
                      const Tensor& q_out) override {
    check_f32(qkv, "qkv_rope_write", "qkv");
    check_f32(q_out, "qkv_rope_write", "q_out");
    KF_CHECK(q_out.ndim == 3 && kv.k.ndim == 4, "cpu qkv_rope_write: q_out {} / pool {}", q_out.shape_str(),
             kv.k.shape_str());
    const int64_t n = q_out.dim(0), hq = q_out.dim(1), hd = q_out.dim(2), hkv = kv.k.dim(1);
    const int64_t width = (hq + 2 * hkv) * hd;
    KF_CHECK(qkv.numel() == n * width && last_dim(qkv) == width,
             "cpu qkv_rope_write: qkv {} is not [{}, {}]", qkv.shape_str(), n, width);
    k_tmp_.resize(static_cast<size_t>(n * hkv * hd));
    v_tmp_.resize(static_cast<size_t>(n * hkv * hd));
    const float* src = qkv.ptr<float>();
    float* q = q_out.ptr<float>();
    for (int64_t r = 0; r < n; ++r) {
      const float* row = src + r * width;
      std::memcpy(q + r * hq * hd, row, sizeof(float) * hq * hd);
      std::memcpy(k_tmp_.data() + r * hkv * hd, row + hq * hd, sizeof(float) * hkv * hd);
      std::memcpy(v_tmp_.data() + r * hkv * hd, row + (hq + hkv) * hd, sizeof(float) * hkv * hd);
    }
    const Tensor k(k_tmp_.data(), DType::F32, {n, hkv, hd}, Device::CPU);
    const Tensor v(v_tmp_.data(), DType::F32, {n, hkv, hd}, Device::CPU);
    if (q_norm) rmsnorm(q_out.reshape({n * hq, hd}), *q_norm, eps, q_out.reshape({n * hq, hd}));
    if (k_norm) rmsnorm(k.reshape({n * hkv, hd}), *k_norm, eps, k.reshape({n * hkv, hd}));
    rope(q_out, positions, rope_p);
    rope(k, positions, rope_p);
    kv_write(kv, k, v, slots);
  }

  void kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots) override {
    cpu_kv_write(kv, k, v, slots);
  }
  void kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst) override {
    cpu_kv_copy_pages(kv, src, dst);
  }
  void attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch, const AttnPolicy& policy,
                 float scale, const Tensor& out, PageSelection* sel) override {
    const ParallelFor pf = [this](int64_t n, const std::function<void(int64_t)>& fn) {
      pool_.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) fn(i);
      });
    };
    cpu_attention(q, kv, batch, policy, scale, out, sel, attn_ws_, pf);
  }

  // One row at a time through kf::Sampler, after its penalties (apply_penalties),
  // so the logits are only read. logits [rows, vocab] F32, a.* [m], tokens [m] I32.
  void sample(const Tensor& logits, const SampleArgs& a, const Tensor& tokens) override {
    check_f32(logits, "sample", "logits");
    KF_CHECK(logits.ndim == 2, "cpu sample: logits must be [rows, vocab], got {}", logits.shape_str());
    const int64_t rows = logits.dim(0), vocab = logits.dim(1), m = tokens.numel();
    check_i32(tokens, "sample", "tokens", m);
    check_i32(a.top_k, "sample", "top_k", m);
    check_i32(a.logit_row, "sample", "logit_row", m);
    check_i32(a.forced, "sample", "forced", m);
    for (const Tensor* t : {&a.temperature, &a.top_p, &a.min_p, &a.uniform}) {
      check_f32(*t, "sample", "a parameter");
      KF_CHECK(t->numel() == m, "cpu sample: parameter {} for {} rows", t->shape_str(), m);
    }
    const float *temp = a.temperature.ptr<float>(), *top_p = a.top_p.ptr<float>();
    const float *min_p = a.min_p.ptr<float>(), *u = a.uniform.ptr<float>();
    const int32_t *top_k = a.top_k.ptr<int32_t>(), *lrow = a.logit_row.ptr<int32_t>(), *forced = a.forced.ptr<int32_t>();
    int32_t* out = tokens.ptr<int32_t>();
    for (int64_t r = 0; r < m; ++r) {
      KF_CHECK(lrow[r] >= 0 && lrow[r] < rows, "cpu sample: row {} reads logits row {} of {}", r, lrow[r], rows);
      if (forced[r] >= 0) {
        out[r] = forced[r];
        continue;
      }
      SamplingParams p;
      p.temperature = temp[r];
      p.top_k = top_k[r];
      p.top_p = top_p[r];
      p.min_p = min_p[r];
      p.validate();
      row_.assign(logits.ptr<float>() + lrow[r] * vocab, logits.ptr<float>() + (lrow[r] + 1) * vocab);
      out[r] = sampler_.sample(row_, p, {}, {}, u[r]);
    }
  }

  void apply_penalties(const Tensor& logits, const PenaltyArgs& a, const AttnBatch& batch,
                       const Tensor& token_pool) override {
    check_f32(logits, "apply_penalties", "logits");
    const int64_t m = logits.dim(0), vocab = logits.dim(1);
    for (const Tensor* t : {&a.seq, &a.prompt_len}) check_i32(*t, "apply_penalties", "seq/prompt_len", m);
    for (const Tensor* t : {&a.repetition, &a.presence, &a.frequency}) {
      check_f32(*t, "apply_penalties", "a penalty");
      KF_CHECK(t->numel() == m, "cpu apply_penalties: penalty {} for {} rows", t->shape_str(), m);
    }
    const int64_t P = token_pool.dim(1);
    const int32_t* pool = token_pool.ptr<int32_t>();
    const int32_t* table = batch.page_table.ptr<int32_t>();
    const int32_t* ctx = batch.ctx_len.ptr<int32_t>();
    for (int64_t r = 0; r < m; ++r) {
      SamplingParams p;
      p.repetition_penalty = a.repetition.ptr<float>()[r];
      p.presence_penalty = a.presence.ptr<float>()[r];
      p.frequency_penalty = a.frequency.ptr<float>()[r];
      if (p.repetition_penalty == 1.f && p.presence_penalty == 0.f && p.frequency_penalty == 0.f) continue;
      const int s = a.seq.ptr<int32_t>()[r];
      KF_CHECK(s >= 0 && s < batch.n_seqs, "cpu apply_penalties: row {} names sequence {} of {}", r, s, batch.n_seqs);
      const int T = ctx[s], prompt_len = std::min(a.prompt_len.ptr<int32_t>()[r], T);
      history_.resize(T);
      for (int t = 0; t < T; ++t) history_[t] = pool[table[static_cast<int64_t>(s) * batch.max_pages + t / P] * P + t % P];
      std::span<float> row(logits.ptr<float>() + r * vocab, static_cast<size_t>(vocab));
      sampler_.apply_penalties(row, p, history_, std::span<const int>(history_).subspan(prompt_len));
    }
  }

  void resolve_tokens(const Tensor& ids, const Tensor& prev, const Tensor& slots, const Tensor& token_pool) override {
    const int64_t n = ids.numel(), slots_in_pool = token_pool.numel();
    check_i32(ids, "resolve_tokens", "ids", n);
    check_i32(slots, "resolve_tokens", "slots", n);
    int32_t* id = ids.ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      if (id[i] < 0) {
        const int64_t k = -static_cast<int64_t>(id[i]) - 1;
        KF_CHECK(k < prev.numel(), "resolve_tokens: row {} takes sampled row {} of {}", i, k, prev.numel());
        id[i] = prev.ptr<int32_t>()[k];
      }
      const int32_t slot = slots.ptr<int32_t>()[i];
      if (slot >= 0 && slot < slots_in_pool) token_pool.ptr<int32_t>()[slot] = id[i];
    }
  }

  // Per entry: log-sum-exp in double over the row, the target's value, and
  // the top k by (value desc, id asc) through a small insertion list.
  void token_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& targets, const Tensor& sampled, int k,
                      const Tensor& values, const Tensor& ids) override {
    check_f32(logits, "token_logprobs", "logits");
    KF_CHECK(logits.ndim == 2, "cpu token_logprobs: logits must be [rows, vocab], got {}", logits.shape_str());
    KF_CHECK(k >= 0 && k <= kMaxTopLogprobs, "token_logprobs: k {} outside [0, {}]", k, kMaxTopLogprobs);
    const int64_t n_rows = logits.dim(0), vocab = logits.dim(1), m = rows.numel();
    check_i32(rows, "token_logprobs", "rows", m);
    check_i32(targets, "token_logprobs", "targets", m);
    check_f32(values, "token_logprobs", "values");
    KF_CHECK(values.numel() == m * (k + 1) && ids.numel() == m * (k + 1),
             "cpu token_logprobs: values/ids must be [{}, {}]", m, k + 1);
    for (int64_t i = 0; i < m; ++i) {
      const int32_t row = rows.ptr<int32_t>()[i];
      int32_t target = targets.ptr<int32_t>()[i];
      KF_CHECK(row >= 0 && row < n_rows, "cpu token_logprobs: entry {} reads logits row {} of {}", i, row, n_rows);
      if (target < 0) {
        const int64_t j = -static_cast<int64_t>(target) - 1;
        KF_CHECK(j < sampled.numel(), "cpu token_logprobs: entry {} takes sampled row {} of {}", i, j, sampled.numel());
        target = sampled.ptr<int32_t>()[j];
      }
      KF_CHECK(target >= 0 && target < vocab, "cpu token_logprobs: target {} outside the vocabulary", target);
      const float* l = logits.ptr<float>() + row * vocab;
      float* val = values.ptr<float>() + i * (k + 1);
      int32_t* id = ids.ptr<int32_t>() + i * (k + 1);
      float mx = -INFINITY;
      for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, l[v]);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(l[v]) - mx);
      const double lse = mx + std::log(sum);
      val[0] = static_cast<float>(l[target] - lse);
      id[0] = target;
      float top_l[kMaxTopLogprobs];
      int32_t top_i[kMaxTopLogprobs];
      int have = 0;  // the best `have` logits so far, best first (equal values: lower id first)
      for (int64_t v = 0; v < vocab && k > 0; ++v) {
        const float x = l[v];
        if (have == k && !(x > top_l[k - 1])) continue;
        int at = have < k ? have++ : k - 1;
        for (; at > 0 && x > top_l[at - 1]; --at) {
          top_l[at] = top_l[at - 1];
          top_i[at] = top_i[at - 1];
        }
        top_l[at] = x;
        top_i[at] = static_cast<int32_t>(v);
      }
      for (int j = 0; j < k; ++j) {  // a vocabulary smaller than k leaves -inf / -1
        val[j + 1] = j < have ? static_cast<float>(top_l[j] - lse) : -INFINITY;
        id[j + 1] = j < have ? top_i[j] : -1;
      }
    }
  }

  void copy_rows(const Tensor& t, const Tensor& src, const Tensor& dst) override {
    KF_CHECK(t.device == Device::CPU && t.ndim == 2 && t.is_contiguous(), "cpu copy_rows: t must be a 2-D CPU tensor");
    const int64_t n = src.numel(), rows = t.dim(0);
    check_i32(src, "copy_rows", "src", n);
    check_i32(dst, "copy_rows", "dst", n);
    const size_t row_bytes = dtype_bytes(t.dtype, t.dim(1));
    char* base = static_cast<char*>(t.data);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t a = src.ptr<int32_t>()[i], b = dst.ptr<int32_t>()[i];
      KF_CHECK(a >= 0 && a < rows && b >= 0 && b < rows, "cpu copy_rows: {} -> {} outside [0, {})", a, b, rows);
      if (a != b) std::memcpy(base + b * row_bytes, base + a * row_bytes, row_bytes);
    }
  }

 protected:
  void form_tp_group(const std::vector<Backend*>& ranks) override {
    auto group = std::make_shared<HostGroup>(static_cast<int>(ranks.size()));
    for (size_t i = 0; i < ranks.size(); ++i) {
      auto* cpu = dynamic_cast<CpuBackend*>(ranks[i]);
      KF_CHECK(cpu != nullptr, "tensor parallelism: {} cannot join a group of CPU backends", ranks[i]->name());
      cpu->group_ = group;
      cpu->tp_rank_ = static_cast<int>(i);
      cpu->tp_size_ = static_cast<int>(ranks.size());
    }
  }

 private:
  static constexpr int kMaxRotary = 1024;

  // Runs fn(r) for rows [0, rows) of `width` floats each, threaded when large.
  template <typename Fn>
  void for_rows(int64_t rows, int64_t width, const Fn& fn) {
    const int64_t min_rows = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, width));
    pool_.parallel_for(
        rows, [&](int64_t b, int64_t e) { for (int64_t r = b; r < e; ++r) fn(r); }, min_rows);
  }

  ThreadPool pool_;
  bool use_blas_ = false;
  cpu::Matmul matmul_;
  const cpu::VectorKernels& vectors_ = cpu::best_vector_kernels();
  CpuAttnWorkspace attn_ws_;
  Sampler sampler_;
  std::vector<float> row_;       // one logits row for the sampler (grow-only)
  std::vector<uint8_t> plain_row_;  // embed: a row of an interleaved table as plain blocks (grow-only)
  std::vector<int> history_;     // a sequence's tokens for its penalties (grow-only)
  std::vector<float> k_tmp_, v_tmp_;  // qkv_rope_write's split k and v (grow-only)
  std::shared_ptr<HostGroup> group_;  // tensor parallelism (make_tp_group), shared by the ranks
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const CpuOptions& opt) {
  CpuOptions o = opt;
  if (!o.use_blas) {
    const char* env = std::getenv("KINFER_CPU_BLAS");
    o.use_blas = env && std::string(env) == "1";
  }
  return std::make_unique<CpuBackend>(o);
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  CpuOptions o;
  o.n_threads = n_threads;
  return make_cpu_backend(o);
}

}  // namespace kf
