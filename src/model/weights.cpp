#include "model/weights.h"

#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <set>
#include <string>

#include "io/checkpoint.h"
#include "util/error.h"

namespace kf {
namespace {

// Makes a device Buffer of `shape` in the backend's dtype, filling it through
// `fill_f32` (host F32) or `fill_bf16` (host BF16) as the dtype requires.
using FillF32 = std::function<void(float*)>;
using FillBf16 = std::function<void(uint16_t*)>;

Buffer make_weight(Backend& be, std::initializer_list<int64_t> shape, const FillF32& fill_f32,
                   const FillBf16& fill_bf16) {
  const DType dt = be.act_dtype();
  Buffer buf(dt, shape, be);
  const int64_t n = buf.view().numel();
  if (be.device() == Device::CPU && dt == DType::F32) {
    fill_f32(buf.ptr<float>());  // straight into place, no staging copy
  } else if (dt == DType::BF16) {
    std::vector<uint16_t> host(n);
    fill_bf16(host.data());
    be.upload(buf.view(), host.data());
  } else {
    std::vector<float> host(n);
    fill_f32(host.data());
    be.upload(buf.view(), host.data());
  }
  return buf;
}

// Rows of a stacked weight: `rows` rows written by one of the fills.
struct Part {
  int64_t rows = 0;
  FillF32 f32;
  FillBf16 bf16;
};

// One weight [sum of rows, cols] (or [sum of rows] when cols is 0) holding the parts in order.
Buffer make_stacked(Backend& be, const std::vector<Part>& parts, int64_t cols) {
  int64_t rows = 0;
  for (const Part& p : parts) rows += p.rows;
  const int64_t width = std::max<int64_t>(cols, 1);
  auto f32 = [&](float* dst) {
    for (const Part& p : parts) {
      p.f32(dst);
      dst += p.rows * width;
    }
  };
  auto bf16 = [&](uint16_t* dst) {
    for (const Part& p : parts) {
      p.bf16(dst);
      dst += p.rows * width;
    }
  };
  return cols > 0 ? make_weight(be, {rows, cols}, f32, bf16) : make_weight(be, {rows}, f32, bf16);
}

// Reads tensors as specified (check_weights has checked them all).
struct Loader {
  const Checkpoint& ckpt;
  Backend& be;
  Buffer operator()(const WeightSpec& t) const { return stacked({t}); }
  // The tensors (1-D or 2-D) stacked by rows into one weight.
  Buffer stacked(const std::vector<WeightSpec>& ts) const {
    std::vector<Part> parts;
    const Checkpoint* c = &ckpt;
    for (const WeightSpec& t : ts) {
      parts.push_back(Part{t.shape[0], [c, t](float* dst) { c->read_f32(t.name, dst, t.shape); },
                           [c, t](uint16_t* dst) { c->read_bf16(t.name, dst, t.shape); }});
    }
    return make_stacked(be, parts, ts[0].shape.size() > 1 ? ts[0].shape[1] : 0);
  }
};

// Random weights drawn on the device by Backend::fill_uniform (a pure function
// of seed and element index, the same values on every backend up to the
// storage rounding), so a random 32B model takes seconds, not minutes of host
// generation.
struct RandomMaker {
  Backend& be;
  uint64_t seed;
  uint64_t counter = 0;
  uint64_t next_seed() { return seed * 0x100000001b3ull + (++counter) * 0x9e3779b97f4a7c15ull; }
  // Values center + half_width * U(-1, 1).
  Buffer operator()(std::initializer_list<int64_t> shape, float center, float half_width) {
    Buffer b(be.act_dtype(), shape, be);
    be.fill_uniform(b.view(), next_seed(), center - half_width, center + half_width);
    return b;
  }
  // Uniform with std 1/sqrt(fan_in): half width sqrt(3/fan_in).
  Buffer linear(int64_t out, int64_t in) { return (*this)({out, in}, 0.f, std::sqrt(3.f / in)); }
  // Parts stacked by rows into one matrix [sum of rows, cols] (cols 0 = 1-D).
  struct Part {
    int64_t rows;
    float center, half_width;
  };
  Buffer stacked(std::initializer_list<Part> parts, int64_t cols) {
    int64_t rows = 0;
    for (const Part& p : parts) rows += p.rows;
    Buffer b = cols > 0 ? Buffer(be.act_dtype(), {rows, cols}, be) : Buffer(be.act_dtype(), {rows}, be);
    int64_t at = 0;
    for (const Part& p : parts) {
      be.fill_uniform(b.view().rows(at, p.rows), next_seed(), p.center - p.half_width, p.center + p.half_width);
      at += p.rows;
    }
    return b;
  }
  static Part linear_part(int64_t out, int64_t in) { return Part{out, 0.f, std::sqrt(3.f / in)}; }
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

std::vector<const WeightSpec*> WeightsSpec::all() const {
  std::vector<const WeightSpec*> out = {&embed, &final_norm, &lm_head};
  for (const LayerSpec& l : layers) {
    for (const WeightSpec* t : {&l.attn_norm, &l.q_norm, &l.k_norm, &l.wo, &l.mlp_norm, &l.w_down}) out.push_back(t);
    for (const std::vector<WeightSpec>* v : {&l.wqkv, &l.bqkv, &l.w_gate_up})
      for (const WeightSpec& t : *v) out.push_back(&t);
  }
  std::erase_if(out, [](const WeightSpec* t) { return t->name.empty(); });
  return out;
}

WeightsSpec weights_spec(const Checkpoint& ckpt, const ModelConfig& cfg) {
  const int64_t d = cfg.hidden_size, q = int64_t(cfg.n_heads) * cfg.head_dim,
                kv = int64_t(cfg.n_kv_heads) * cfg.head_dim, ff = cfg.intermediate_size,
                vocab = cfg.vocab_size, hd = cfg.head_dim;
  WeightsSpec s;
  s.embed = {"model.embed_tokens.weight", {vocab, d}};
  s.final_norm = {"model.norm.weight", {d}};
  const bool gguf_without_head = ckpt.format() == "gguf" && !ckpt.has("lm_head.weight");
  if (!cfg.tied_embeddings && !gguf_without_head) s.lm_head = {"lm_head.weight", {vocab, d}};
  s.layers.resize(cfg.n_layers);
  for (int i = 0; i < cfg.n_layers; ++i) {
    LayerSpec& l = s.layers[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    l.attn_norm = {p + "input_layernorm.weight", {d}};
    l.wqkv = {{p + "self_attn.q_proj.weight", {q, d}},
              {p + "self_attn.k_proj.weight", {kv, d}},
              {p + "self_attn.v_proj.weight", {kv, d}}};
    if (cfg.qkv_bias) {
      l.bqkv = {{p + "self_attn.q_proj.bias", {q}}, {p + "self_attn.k_proj.bias", {kv}}, {p + "self_attn.v_proj.bias", {kv}}};
    }
    if (cfg.qk_norm) {
      l.q_norm = {p + "self_attn.q_norm.weight", {hd}};
      l.k_norm = {p + "self_attn.k_norm.weight", {hd}};
    }
    l.wo = {p + "self_attn.o_proj.weight", {d, q}};
    l.mlp_norm = {p + "post_attention_layernorm.weight", {d}};
    l.w_gate_up = {{p + "mlp.gate_proj.weight", {ff, d}}, {p + "mlp.up_proj.weight", {ff, d}}};
    l.w_down = {p + "mlp.down_proj.weight", {d, ff}};
  }
  return s;
}

void check_weights(const Checkpoint& ckpt, const ModelConfig& cfg) {
  const WeightsSpec spec = weights_spec(ckpt, cfg);
  std::set<std::string> used;
  for (const WeightSpec* t : spec.all()) {
    if (t->name == "lm_head.weight" && !ckpt.has(t->name) && cfg.was_defaulted("tie_word_embeddings")) {
      fail("{}: missing tensor 'lm_head.weight' (config.json has no 'tie_word_embeddings', which defaults to false; "
           "set it to true if the model shares its embedding)", ckpt.path());
    }
    ckpt.check(t->name, t->shape);
    used.insert(t->name);
  }
  for (const TensorInfo& t : ckpt.tensors()) {
    if (used.count(t.name)) continue;
    // Ignored as transformers ignores them: a tied model's stored lm_head, old rotary buffers.
    if ((t.name == "lm_head.weight" && cfg.tied_embeddings) || t.name.ends_with(".rotary_emb.inv_freq")) continue;
    fail("{}: tensor '{}' [{}] is not used by a {} model with this config (kinfer does not implement it and would "
         "compute something else)", ckpt.file(t.name), t.name, fmt::join(t.shape, ", "), cfg.arch);
  }
}

Weights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& be) {
  check_weights(ckpt, cfg);
  const WeightsSpec s = weights_spec(ckpt, cfg);
  const Loader load{ckpt, be};
  Weights w;
  w.embed = load(s.embed);
  w.final_norm = load(s.final_norm);
  if (!s.lm_head.name.empty()) w.lm_head_own = load(s.lm_head);
  w.layers.resize(cfg.n_layers);
  for (int i = 0; i < cfg.n_layers; ++i) {
    const LayerSpec& ls = s.layers[i];
    LayerWeights& l = w.layers[i];
    l.attn_norm = load(ls.attn_norm);
    l.wqkv = load.stacked(ls.wqkv);
    if (!ls.bqkv.empty()) l.bqkv = load.stacked(ls.bqkv);
    if (!ls.q_norm.name.empty()) l.q_norm = load(ls.q_norm);
    if (!ls.k_norm.name.empty()) l.k_norm = load(ls.k_norm);
    l.wo = load(ls.wo);
    l.mlp_norm = load(ls.mlp_norm);
    l.w_gate_up = load.stacked(ls.w_gate_up);
    l.w_down = load(ls.w_down);
  }
  return w;
}

Weights random_weights(const ModelConfig& cfg, Backend& be, uint64_t seed) {
  RandomMaker rnd{be, seed};
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
    l.wqkv = rnd.stacked({RandomMaker::linear_part(q, d), RandomMaker::linear_part(kv, d), RandomMaker::linear_part(kv, d)}, d);
    if (cfg.qkv_bias) l.bqkv = rnd.stacked({{q, 0.f, 0.1f}, {kv, 0.f, 0.1f}, {kv, 0.f, 0.1f}}, 0);
    if (cfg.qk_norm) {
      l.q_norm = rnd({hd}, 1.f, 0.1f);
      l.k_norm = rnd({hd}, 1.f, 0.1f);
    }
    // o_proj and down_proj scaled down by the depth so the residual stream stays O(1).
    l.wo = rnd({d, q}, 0.f, std::sqrt(3.f / q) / std::sqrt(2.f * cfg.n_layers));
    l.mlp_norm = rnd({d}, 1.f, 0.1f);
    l.w_gate_up = rnd.stacked({RandomMaker::linear_part(ff, d), RandomMaker::linear_part(ff, d)}, d);
    l.w_down = rnd({d, ff}, 0.f, std::sqrt(3.f / ff) / std::sqrt(2.f * cfg.n_layers));
  }
  be.synchronize();
  return w;
}

}  // namespace kf
