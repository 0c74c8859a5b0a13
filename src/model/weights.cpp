#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <set>
#include <string>

#include "io/checkpoint.h"
#include "util/error.h"

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

// The part of a [R, C] (or [R]) tensor a tensor-parallel shard holds: rows
// [row0, row0 + rows) and columns [col0, col0 + cols); -1 = all of them.
struct Slice {
  int64_t row0 = 0, rows = -1, col0 = 0, cols = -1;
  bool whole() const { return rows < 0 && cols < 0; }
};
int64_t rows_of(const WeightSpec& t, const Slice& s) { return s.rows >= 0 ? s.rows : t.shape[0]; }
int64_t cols_of(const WeightSpec& t, const Slice& s) {
  return t.shape.size() < 2 ? 0 : s.cols >= 0 ? s.cols : t.shape[1];
}

// Shard `sh` of `n` rows (or columns): [rank * n / size, (rank + 1) * n / size).
Slice row_slice(int64_t n, const TpShard& sh) { return sh.size == 1 ? Slice{} : Slice{sh.rank * (n / sh.size), n / sh.size}; }
Slice col_slice(int64_t n, const TpShard& sh) {
  return sh.size == 1 ? Slice{} : Slice{0, -1, sh.rank * (n / sh.size), n / sh.size};
}

// A shard's slice s of tensor t, read as `stored` (t's own dtype: raw bytes),
// F32 or BF16 into dst. The whole tensor is read, then the slice kept; column
// slices of a quantised dtype must keep its blocks whole (Loader::part).
void read_slice(const Checkpoint& c, const WeightSpec& t, const Slice& s, DType stored, DType dt, void* dst) {
  auto read = [&](void* out) {
    if (dt == stored) c.read_raw(t.name, out, t.shape);
    else if (dt == DType::F32) c.read_f32(t.name, static_cast<float*>(out), t.shape);
    else if (dt == DType::BF16) c.read_bf16(t.name, static_cast<uint16_t*>(out), t.shape);
    else fail("{}: tensor '{}' cannot be converted to {}", c.path(), t.name, dtype_name(dt));
  };
  if (s.whole()) {
    read(dst);
    return;
  }
  int64_t numel = 1;
  for (int64_t d : t.shape) numel *= d;
  std::vector<uint8_t> full(dtype_bytes(dt, numel));  // a shard reads the whole tensor, then keeps its part
  read(full.data());
  const int64_t width = t.shape.size() > 1 ? t.shape[1] : 1, rows = rows_of(t, s);
  const int64_t cols = std::max<int64_t>(cols_of(t, s), 1), col0 = t.shape.size() > 1 ? s.col0 : 0;
  const size_t row_bytes = t.shape.size() > 1 ? dtype_bytes(dt, width) : dtype_bytes(dt, 1);
  const size_t skip = t.shape.size() > 1 ? dtype_bytes(dt, col0) : 0, keep = dtype_bytes(dt, cols);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out + r * keep, full.data() + (s.row0 + r) * row_bytes + skip, keep);
}

// Reads tensors as specified (check_weights has checked them all), each whole
// or the slice a shard holds, matrices in the format `format` picks.
struct Loader {
  const Checkpoint& ckpt;
  Backend& be;
  Source src;
  WeightFormat format;
  // Tensor t (its slice s) as a stacking part.
  Part part(const WeightSpec& t, const Slice& s) const {
    const Checkpoint* c = &ckpt;
    const DType stored = ckpt.info(t.name).dtype;
    // A column slice of a quantised matrix (o_proj, down_proj under --tp) that
    // would split its blocks cannot keep the stored format: such a shard's
    // matrix is converted to BF16 (F32 when the backend takes no BF16) instead.
    DType as = stored;
    const int block = dtype_block(stored);
    if (t.shape.size() > 1 && s.cols >= 0 && block > 1 && (s.col0 % block != 0 || s.cols % block != 0))
      as = be.takes_weight(DType::BF16) ? DType::BF16 : DType::F32;
    return Part{rows_of(t, s), as, [c, t, s, stored](DType dt, void* dst) { read_slice(*c, t, s, stored, dt, dst); }};
  }
  Buffer vector(const WeightSpec& t) const { return make_stacked(be, src, format, {part(t, {})}, 0); }
  // Matrices only the matmul reads, stacked by rows, in the backend's matmul layout.
  Buffer matrix(const WeightSpec& t, const Slice& s = {}) const { return stacked({t}, {s}); }
  // mlp_gate_up: an MLP's [gate; up], in the layout the backend's mlp() reads.
  Buffer stacked(const std::vector<WeightSpec>& ts, std::vector<Slice> slices = {}, bool mlp_gate_up = false) const {
    slices.resize(ts.size());
    std::vector<Part> parts;
    for (size_t i = 0; i < ts.size(); ++i) parts.push_back(part(ts[i], slices[i]));
    Buffer b = make_stacked(be, src, format, parts, cols_of(ts[0], slices[0]));
    return mlp_gate_up ? be.pack_mlp_gate_up(std::move(b)) : be.pack_weight(std::move(b));
  }
  // 1-D parts (biases), stacked.
  Buffer stacked_vectors(const std::vector<WeightSpec>& ts, const std::vector<Slice>& slices) const {
    std::vector<Part> parts;
    for (size_t i = 0; i < ts.size(); ++i) parts.push_back(part(ts[i], slices[i]));
    return make_stacked(be, src, format, parts, 0);
  }
  // The embedding: only gathered when it has its own lm_head, so kept plain then.
  Buffer embedding(const WeightSpec& t, bool tied) const {
    Buffer b = make_stacked(be, src, format, {part(t, {})}, t.shape[1]);
    if (!tied) return b;
    return be.pack_weight(std::move(b));
  }
};

// Random weights drawn on the device by Backend::fill_uniform (a pure function
// of seed and element index, the same values on every backend up to the
// storage rounding), so a random 32B model takes seconds, not minutes of host
// generation. A shard fills its slices at their element indices in the full
// tensors (FillIndex), so it equals those slices of the full random model.
// Matrices come out in the activation dtype; on the CPU, WeightFormat bf16
// converts them to BF16 afterwards (the same values, rounded).
struct RandomMaker {
  Backend& be;
  uint64_t seed;
  WeightFormat format;
  uint64_t counter = 0;
  uint64_t next_seed() { return seed * 0x100000001b3ull + (++counter) * 0x9e3779b97f4a7c15ull; }
  // Values center + half_width * U(-1, 1), placed in the full tensor by `at`.
  Buffer operator()(std::initializer_list<int64_t> shape, float center, float half_width, const FillIndex& at = {}) {
    Buffer b(be.act_dtype(), shape, be);
    be.fill_uniform(b.view(), next_seed(), center - half_width, center + half_width, at);
    if (shape.size() < 2) return b;
    return as_matrix(std::move(b));
  }
  // Parts stacked by rows into one matrix [sum of rows, cols] (cols 0 = 1-D).
  struct Part {
    int64_t rows;
    float center, half_width;
    FillIndex at;
  };
  Buffer stacked(std::initializer_list<Part> parts, int64_t cols) {
    int64_t rows = 0;
    for (const Part& p : parts) rows += p.rows;
    Buffer b = cols > 0 ? Buffer(be.act_dtype(), {rows, cols}, be) : Buffer(be.act_dtype(), {rows}, be);
    int64_t at = 0;
    for (const Part& p : parts) {
      be.fill_uniform(b.view().rows(at, p.rows), next_seed(), p.center - p.half_width, p.center + p.half_width, p.at);
      at += p.rows;
    }
    if (cols == 0) return b;
    return as_matrix(std::move(b));
  }
  // A matrix in the dtype `format` picks for F32 values (the activation dtype
  // unless the CPU is asked for BF16).
  Buffer as_matrix(Buffer b) {
    const Tensor& t = b.view();
    const DType dt = matrix_dtype(DType::F32, Source::Random, format, be);
    if (dt == t.dtype) return b;
    KF_CHECK(be.device() == Device::CPU && t.dtype == DType::F32 && dt == DType::BF16,
             "random weights: cannot store {} values as {}", dtype_name(t.dtype), dtype_name(dt));
    Buffer out(dt, {t.dim(0), t.dim(1)}, be);
    const float* x = b.ptr<float>();
    auto* y = static_cast<uint16_t*>(out.view().data);
    for (int64_t i = 0, n = t.numel(); i < n; ++i) y[i] = f32_to_bf16(x[i]);
    return out;
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
  return weights_spec(cfg, ckpt.format() == "gguf" && !ckpt.has("lm_head.weight"));
}

ParamCounts spec_params(const WeightsSpec& spec) {
  ParamCounts p;
  for (const WeightSpec* t : spec.all()) {
    int64_t n = 1;
    for (int64_t e : t->shape) n *= e;
    p.plain += n;
  }
  p.kinetics = p.plain;
  if (spec.lm_head.name.empty()) p.kinetics += spec.embed.shape[0] * spec.embed.shape[1];
  return p;
}

WeightsSpec weights_spec(const ModelConfig& cfg, bool head_tied) {
  const int64_t d = cfg.hidden_size, q = int64_t(cfg.n_heads) * cfg.head_dim,
                kv = int64_t(cfg.n_kv_heads) * cfg.head_dim, ff = cfg.intermediate_size,
                vocab = cfg.vocab_size, hd = cfg.head_dim;
  WeightsSpec s;
  s.embed = {"model.embed_tokens.weight", {vocab, d}};
  s.final_norm = {"model.norm.weight", {d}};
  if (!cfg.tied_embeddings && !head_tied) s.lm_head = {"lm_head.weight", {vocab, d}};
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

Weights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& be, WeightFormat format) {
  const ModelConfig full = cfg.whole();  // a shard checks and reads the whole model's tensors, keeps its slices
  const TpShard sh = cfg.shard;
  check_weights(ckpt, full);
  const WeightsSpec s = weights_spec(ckpt, full);
  const int64_t q = int64_t(full.n_heads) * full.head_dim, ff = full.intermediate_size;
  // The K and V rows of the shard's KV heads (copies when --tp exceeds them).
  const Slice kv_rows = sh.size == 1 ? Slice{}
                                     : Slice{int64_t(sh.first_kv_head()) * full.head_dim,
                                             int64_t(cfg.n_kv_heads) * full.head_dim};
  const std::vector<Slice> qkv = {row_slice(q, sh), kv_rows, kv_rows};
  const Loader load{ckpt, be, ckpt.format() == "gguf" ? Source::Gguf : Source::Safetensors, format};
  Weights w;
  w.embed = load.embedding(s.embed, s.lm_head.name.empty());
  w.final_norm = load.vector(s.final_norm);
  if (!s.lm_head.name.empty()) w.lm_head_own = load.matrix(s.lm_head);
  w.layers.resize(cfg.n_layers);
  for (int i = 0; i < cfg.n_layers; ++i) {
    const LayerSpec& ls = s.layers[i];
    LayerWeights& l = w.layers[i];
    l.attn_norm = load.vector(ls.attn_norm);
    l.wqkv = load.stacked(ls.wqkv, qkv);  // q, k, v rows of the shard's heads
    if (!ls.bqkv.empty()) l.bqkv = load.stacked_vectors(ls.bqkv, qkv);
    if (!ls.q_norm.name.empty()) l.q_norm = load.vector(ls.q_norm);
    if (!ls.k_norm.name.empty()) l.k_norm = load.vector(ls.k_norm);
    l.wo = load.matrix(ls.wo, col_slice(q, sh));  // the columns its heads' outputs meet
    l.mlp_norm = load.vector(ls.mlp_norm);
    l.w_gate_up = load.stacked(ls.w_gate_up, {row_slice(ff, sh), row_slice(ff, sh)}, /*mlp_gate_up=*/true);
    l.w_down = load.matrix(ls.w_down, col_slice(ff, sh));
  }
  return w;
}

Weights random_weights(const ModelConfig& cfg, Backend& be, uint64_t seed, WeightFormat format) {
  const ModelConfig full = cfg.whole();  // shapes and scales of the whole model; a shard fills its slices
  const TpShard sh = cfg.shard;
  RandomMaker rnd{be, seed, format};
  const int64_t d = full.hidden_size, q = int64_t(full.n_heads) * full.head_dim, ff = full.intermediate_size,
                vocab = full.vocab_size, hd = full.head_dim;
  // The shard's rows or columns (its KV heads may be copies: see TpShard).
  const int64_t qs = q / sh.size, kvs = int64_t(cfg.n_kv_heads) * hd, ffs = ff / sh.size;
  const int64_t kv0 = int64_t(sh.first_kv_head()) * hd;  // its first K (and V) row
  // Where a shard's n rows from row r0 of a [*, cols] weight (cols 0: a
  // vector), or its n columns of a [*, full_cols] weight, sit in the full tensor.
  auto rows_from = [&](int64_t r0, int64_t cols) {
    if (sh.size == 1) return FillIndex{};
    return cols > 0 ? FillIndex{r0, 0, cols} : FillIndex{0, r0, 1};
  };
  auto rows_at = [&](int64_t n, int64_t cols) { return rows_from(sh.rank * n, cols); };
  auto cols_at = [&](int64_t n, int64_t full_cols) {
    return sh.size == 1 ? FillIndex{} : FillIndex{0, sh.rank * n, full_cols};
  };
  auto linear_part = [&](int64_t rows, int64_t in, FillIndex at) {
    return RandomMaker::Part{rows, 0.f, std::sqrt(3.f / in), at};
  };
  Weights w;
  w.embed = rnd({vocab, d}, 0.f, 1.f);
  w.final_norm = rnd({d}, 1.f, 0.1f);
  if (!full.tied_embeddings) w.lm_head_own = rnd({vocab, d}, 0.f, std::sqrt(3.f / d));
  w.layers.resize(full.n_layers);
  for (LayerWeights& l : w.layers) {
    l.attn_norm = rnd({d}, 1.f, 0.1f);
    l.wqkv = rnd.stacked({linear_part(qs, d, rows_at(qs, d)), linear_part(kvs, d, rows_from(kv0, d)),
                          linear_part(kvs, d, rows_from(kv0, d))}, d);
    if (full.qkv_bias)
      l.bqkv = rnd.stacked({{qs, 0.f, 0.1f, rows_at(qs, 0)}, {kvs, 0.f, 0.1f, rows_from(kv0, 0)},
                            {kvs, 0.f, 0.1f, rows_from(kv0, 0)}}, 0);
    if (full.qk_norm) {
      l.q_norm = rnd({hd}, 1.f, 0.1f);
      l.k_norm = rnd({hd}, 1.f, 0.1f);
    }
    // o_proj and down_proj scaled down by the depth so the residual stream stays O(1).
    l.wo = rnd({d, qs}, 0.f, std::sqrt(3.f / q) / std::sqrt(2.f * full.n_layers), cols_at(qs, q));
    l.mlp_norm = rnd({d}, 1.f, 0.1f);
    l.w_gate_up = be.pack_mlp_gate_up(
        rnd.stacked({linear_part(ffs, d, rows_at(ffs, d)), linear_part(ffs, d, rows_at(ffs, d))}, d));
    l.w_down = rnd({d, ffs}, 0.f, std::sqrt(3.f / ff) / std::sqrt(2.f * full.n_layers), cols_at(ffs, ff));
  }
  be.synchronize();
  return w;
}

}  // namespace kf
