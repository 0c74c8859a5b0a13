#include "model/weights.h"

#include <cmath>
#include <fmt/format.h>
#include <functional>
#include <string>

#include "io/checkpoint.h"

namespace kf {

WeightFormat parse_weight_format(const std::string& s) {
  if (s == "auto") return WeightFormat::Auto;
  if (s == "native") return WeightFormat::Native;
  if (s == "bf16") return WeightFormat::BF16;
  if (s == "f32") return WeightFormat::F32;
  fail("weight format '{}': expected auto, native, bf16 or f32", s);
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Native: return "native";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::F32: return "f32";
    default: return "auto";
  }
}

namespace {

// Writes a tensor's values into dst in dtype dt: F32, BF16 or the stored dtype.
using Fill = std::function<void(DType dt, void* dst)>;

// A Buffer of `shape` in dtype dt on the backend, filled through `fill` (in
// place on the CPU, through a host copy elsewhere).
Buffer make_weight(Backend& be, DType dt, std::initializer_list<int64_t> shape, const Fill& fill) {
  Buffer buf(dt, shape, be);
  if (be.device() == Device::CPU) {
    fill(dt, buf.view().data);  // straight into place, no staging copy
  } else {
    std::vector<uint8_t> host(buf.view().nbytes());
    fill(dt, host.data());
    be.upload(buf.view(), host.data());
  }
  return buf;
}

// Where the weights come from, for WeightFormat::Auto.
enum class Source : uint8_t { Gguf, Safetensors, Random };

// The dtype a matrix stored as `stored` is kept in on this backend.
DType matrix_dtype(DType stored, Source src, WeightFormat f, const Backend& be) {
  DType want = stored;
  if (f == WeightFormat::F32) want = DType::F32;
  else if (f == WeightFormat::BF16) want = DType::BF16;
  else if (f == WeightFormat::Auto && src == Source::Safetensors && stored == DType::F32) want = DType::BF16;
  return be.takes_weight(want) ? want : be.act_dtype();
}

// Rows of a stacked weight: `rows` rows stored as `stored`, written by `fill`.
struct Part {
  int64_t rows = 0;
  DType stored = DType::F32;
  Fill fill;
};

// One weight [sum of rows, cols] (or [sum of rows] when cols is 0) holding the
// parts in order; matrices (cols > 0) in the format `f` picks for their parts.
Buffer make_stacked(Backend& be, Source src, WeightFormat f, const std::vector<Part>& parts, int64_t cols) {
  int64_t rows = 0;
  DType dt = be.act_dtype();
  for (size_t i = 0; i < parts.size(); ++i) {
    rows += parts[i].rows;
    if (cols == 0) continue;
    const DType part_dt = matrix_dtype(parts[i].stored, src, f, be);
    if (i == 0) dt = part_dt;
    else if (part_dt != dt) dt = be.takes_weight(DType::BF16) ? DType::BF16 : be.act_dtype();  // mixed formats
  }
  const size_t row_bytes = dtype_bytes(dt, std::max<int64_t>(cols, 1));
  auto fill = [&](DType d, void* dst) {
    auto* out = static_cast<uint8_t*>(dst);
    for (const Part& p : parts) {
      p.fill(d, out);
      out += p.rows * row_bytes;
    }
  };
  return cols > 0 ? make_weight(be, dt, {rows, cols}, fill) : make_weight(be, dt, {rows}, fill);
}

struct Loader {
  const Checkpoint& ckpt;
  Backend& be;
  Source src;
  WeightFormat format;
  // The tensor `name` of shape [rows, cols] ([rows] when cols is 0), as a stacking part.
  Part part(const std::string& name, int64_t rows, int64_t cols) const {
    const Checkpoint* c = &ckpt;
    const DType stored = ckpt.info(name).dtype;
    return Part{rows, stored, [=](DType dt, void* dst) {
                  const std::initializer_list<int64_t> matrix = {rows, cols}, vector = {rows};
                  const std::initializer_list<int64_t> shape = cols > 0 ? matrix : vector;
                  if (dt == stored) c->read_raw(name, dst, shape);
                  else if (dt == DType::F32) c->read_f32(name, static_cast<float*>(dst), shape);
                  else if (dt == DType::BF16) c->read_bf16(name, static_cast<uint16_t*>(dst), shape);
                  else fail("{}: tensor '{}' cannot be converted to {}", c->path(), name, dtype_name(dt));
                }};
  }
  // A matrix only the matmul reads, in the backend's matmul layout.
  Buffer matrix(const std::string& name, int64_t rows, int64_t cols) const { return stacked({part(name, rows, cols)}, cols); }
  // The embedding: only gathered when it has its own lm_head, so kept plain then.
  Buffer embedding(int64_t vocab, int64_t d, bool tied) const {
    Buffer b = make_stacked(be, src, format, {part("model.embed_tokens.weight", vocab, d)}, d);
    if (!tied) return b;
    return be.pack_weight(std::move(b));
  }
  Buffer vector(const std::string& name, int64_t n) const { return make_stacked(be, src, format, {part(name, n, 0)}, 0); }
  Buffer stacked(const std::vector<Part>& parts, int64_t cols) const {
    return be.pack_weight(make_stacked(be, src, format, parts, cols));
  }
};

// splitmix64: a tiny, fast, well-mixed generator; one stream per tensor.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.f / 16777216.f) * 2.f - 1.f; }  // [-1, 1)
};

struct RandomMaker {
  Backend& be;
  uint64_t seed;
  WeightFormat format;
  uint64_t counter = 0;
  // A stacking part of [rows, cols] (cols 0 = 1-D) with values center + half_width * U(-1, 1).
  Part part(int64_t rows, int64_t cols, float center, float half_width) {
    const uint64_t s = seed * 0x100000001b3ull + (++counter) * 0x9e3779b97f4a7c15ull;
    const int64_t n = rows * std::max<int64_t>(cols, 1);
    return Part{rows, DType::F32, [=](DType dt, void* dst) {
                  SplitMix rng{s};
                  if (dt == DType::F32) {
                    for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[i] = center + half_width * rng.uniform();
                  } else {
                    KF_CHECK(dt == DType::BF16, "random weights: cannot make {} values", dtype_name(dt));
                    for (int64_t i = 0; i < n; ++i)
                      static_cast<uint16_t*>(dst)[i] = f32_to_bf16(center + half_width * rng.uniform());
                  }
                }};
  }
  // Uniform with std 1/sqrt(fan_in): half width sqrt(3/fan_in).
  Part linear_part(int64_t out, int64_t in) { return part(out, in, 0.f, std::sqrt(3.f / in)); }
  Buffer operator()(std::initializer_list<int64_t> shape, float center, float half_width) {
    const int64_t rows = *shape.begin(), cols = shape.size() > 1 ? *(shape.begin() + 1) : 0;
    return stacked({part(rows, cols, center, half_width)}, cols);
  }
  Buffer linear(int64_t out, int64_t in) { return stacked({linear_part(out, in)}, in); }
  Buffer stacked(const std::vector<Part>& parts, int64_t cols) {
    return make_stacked(be, Source::Random, format, parts, cols);
  }
};

int64_t bytes_of(const Buffer& b) { return b.empty() ? 0 : static_cast<int64_t>(b.view().nbytes()); }

}  // namespace

int64_t Weights::bytes_per_step() const {
  int64_t total = bytes_of(final_norm) + static_cast<int64_t>(lm_head().nbytes());
  for (const LayerWeights& l : layers) {
    for (const Buffer* b : {&l.attn_norm, &l.wqkv, &l.bqkv, &l.q_norm, &l.k_norm, &l.wo, &l.mlp_norm,
                            &l.w_gate_up, &l.w_down})
      total += bytes_of(*b);
  }
  return total;
}

int64_t Weights::total_bytes() const {
  return bytes_per_step() + (tied() ? 0 : bytes_of(embed));  // tied: lm_head() is the embedding
}

std::string Weights::matrix_dtypes() const {
  std::vector<const Buffer*> mats;
  for (const LayerWeights& l : layers)
    for (const Buffer* b : {&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down}) mats.push_back(b);
  mats.push_back(&embed);
  mats.push_back(&lm_head_own);
  std::string out;
  for (const Buffer* b : mats) {
    if (b->empty()) continue;
    const std::string name = dtype_name(b->view().dtype);
    if ((", " + out + ", ").find(", " + name + ", ") == std::string::npos) out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

Weights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& be, WeightFormat format) {
  const Loader load{ckpt, be, ckpt.format() == "gguf" ? Source::Gguf : Source::Safetensors, format};
  const int64_t d = cfg.hidden_size, q = int64_t(cfg.n_heads) * cfg.head_dim,
                kv = int64_t(cfg.n_kv_heads) * cfg.head_dim, ff = cfg.intermediate_size,
                vocab = cfg.vocab_size, hd = cfg.head_dim;
  Weights w;
  const bool gguf_without_head = ckpt.format() == "gguf" && !ckpt.has("lm_head.weight");
  const bool own_head = !cfg.tied_embeddings && !gguf_without_head;
  w.embed = load.embedding(vocab, d, !own_head);
  w.final_norm = load.vector("model.norm.weight", d);
  if (own_head) w.lm_head_own = load.matrix("lm_head.weight", vocab, d);
  w.layers.resize(cfg.n_layers);
  for (int i = 0; i < cfg.n_layers; ++i) {
    LayerWeights& l = w.layers[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    l.attn_norm = load.vector(p + "input_layernorm.weight", d);
    l.wqkv = load.stacked({load.part(p + "self_attn.q_proj.weight", q, d), load.part(p + "self_attn.k_proj.weight", kv, d),
                           load.part(p + "self_attn.v_proj.weight", kv, d)},
                          d);
    if (cfg.qkv_bias) {
      l.bqkv = load.stacked({load.part(p + "self_attn.q_proj.bias", q, 0), load.part(p + "self_attn.k_proj.bias", kv, 0),
                             load.part(p + "self_attn.v_proj.bias", kv, 0)},
                            0);
    }
    if (cfg.qk_norm) {
      l.q_norm = load.vector(p + "self_attn.q_norm.weight", hd);
      l.k_norm = load.vector(p + "self_attn.k_norm.weight", hd);
    }
    l.wo = load.matrix(p + "self_attn.o_proj.weight", d, q);
    l.mlp_norm = load.vector(p + "post_attention_layernorm.weight", d);
    l.w_gate_up = load.stacked({load.part(p + "mlp.gate_proj.weight", ff, d), load.part(p + "mlp.up_proj.weight", ff, d)}, d);
    l.w_down = load.matrix(p + "mlp.down_proj.weight", d, ff);
  }
  return w;
}

Weights random_weights(const ModelConfig& cfg, Backend& be, uint64_t seed, WeightFormat format) {
  RandomMaker rnd{be, seed, format};
  const int64_t d = cfg.hidden_size, q = int64_t(cfg.n_heads) * cfg.head_dim,
                kv = int64_t(cfg.n_kv_heads) * cfg.head_dim, ff = cfg.intermediate_size,
                vocab = cfg.vocab_size, hd = cfg.head_dim;
  Weights w;
  w.embed = rnd({vocab, d}, 0.f, 1.f);
  w.final_norm = rnd({d}, 1.f, 0.1f);
  if (!cfg.tied_embeddings) w.lm_head_own = rnd.linear(vocab, d);
  w.layers.resize(cfg.n_layers);
  for (LayerWeights& l : w.layers) {
    l.attn_norm = rnd({d}, 1.f, 0.1f);
    l.wqkv = rnd.stacked({rnd.linear_part(q, d), rnd.linear_part(kv, d), rnd.linear_part(kv, d)}, d);
    if (cfg.qkv_bias)
      l.bqkv = rnd.stacked({rnd.part(q, 0, 0.f, 0.1f), rnd.part(kv, 0, 0.f, 0.1f), rnd.part(kv, 0, 0.f, 0.1f)}, 0);
    if (cfg.qk_norm) {
      l.q_norm = rnd({hd}, 1.f, 0.1f);
      l.k_norm = rnd({hd}, 1.f, 0.1f);
    }
    // o_proj and down_proj scaled down by the depth so the residual stream stays O(1).
    l.wo = rnd({d, q}, 0.f, std::sqrt(3.f / q) / std::sqrt(2.f * cfg.n_layers));
    l.mlp_norm = rnd({d}, 1.f, 0.1f);
    l.w_gate_up = rnd.stacked({rnd.linear_part(ff, d), rnd.linear_part(ff, d)}, d);
    l.w_down = rnd({d, ff}, 0.f, std::sqrt(3.f / ff) / std::sqrt(2.f * cfg.n_layers));
  }
  return w;
}

}  // namespace kf
