#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "io/checkpoint.h"
#include "model/presets.h"

namespace kf {

Workspace::Workspace(const ModelConfig& cfg, Backend& be, int max_tokens_, int max_logit_rows_)
    : max_tokens(max_tokens_), max_logit_rows(max_logit_rows_) {
  KF_CHECK(max_tokens > 0 && max_logit_rows > 0 && max_logit_rows <= max_tokens,
           "workspace: need 0 < max_logit_rows ({}) <= max_tokens ({})", max_logit_rows, max_tokens);
  const DType dt = be.act_dtype();
  const Device dev = be.device();
  const int64_t T = max_tokens, d = cfg.hidden_size, q = int64_t(cfg.n_heads) * cfg.head_dim,
                kv = int64_t(cfg.n_kv_heads) * cfg.head_dim, ff = cfg.intermediate_size;
  x = Buffer(dt, {T, d}, dev);
  h = Buffer(dt, {T, d}, dev);
  qkv = Buffer(dt, {T, q + 2 * kv}, dev);
  this->q = Buffer(dt, {T, q}, dev);
  attn = Buffer(dt, {T, q}, dev);
  gate_up = Buffer(dt, {T, 2 * ff}, dev);
  ffn = Buffer(dt, {T, ff}, dev);
  last = Buffer(dt, {int64_t(max_logit_rows), d}, dev);
}

KvBuffers::KvBuffers(const ModelConfig& cfg, Backend& be, int n_pages_, int page_size_)
    : n_pages(n_pages_), page_size(page_size_) {
  KF_CHECK(n_pages > 0 && page_size > 0, "kv pool: n_pages {} and page_size {} must be positive",
           n_pages, page_size);
  const DType dt = be.act_dtype();
  for (int l = 0; l < cfg.n_layers; ++l) {
    k.emplace_back(dt, std::initializer_list<int64_t>{n_pages, cfg.n_kv_heads, page_size, cfg.head_dim},
                   be.device());
    v.emplace_back(dt, std::initializer_list<int64_t>{n_pages, cfg.n_kv_heads, page_size, cfg.head_dim},
                   be.device());
    summary.emplace_back(dt, std::initializer_list<int64_t>{n_pages, cfg.n_kv_heads, cfg.head_dim},
                         be.device());
  }
  for (int l = 0; l < cfg.n_layers; ++l) layers.push_back(KvLayer{k[l].view(), v[l].view(), summary[l].view()});
}

StepIndices::StepIndices(Backend& be, int max_rows, int max_seqs, int64_t table_cells) : be_(be) {
  const Device dev = be.device();
  ids_ = Buffer(DType::I32, {max_rows}, dev);
  pos_ = Buffer(DType::I32, {max_rows}, dev);
  slots_ = Buffer(DType::I32, {max_rows}, dev);
  rows_ = Buffer(DType::I32, {max_rows}, dev);
  q_start_ = Buffer(DType::I32, {int64_t(max_seqs) + 1}, dev);
  ctx_ = Buffer(DType::I32, {max_seqs}, dev);
  reserve_table(table_cells);
}

bool StepIndices::reserve_table(int64_t cells) {
  const int64_t have = table_.empty() ? 0 : table_.view().numel();
  if (have >= cells) return false;
  table_ = Buffer(DType::I32, {std::max<int64_t>(cells, 2 * have)}, be_.device());  // doubling: few moves
  return true;
}

StepInput StepIndices::upload(AttnBatch& batch, int stride) {
  const int64_t n = static_cast<int64_t>(ids.size()), m = static_cast<int64_t>(logit_rows.size()),
                ns = static_cast<int64_t>(ctx.size());
  KF_CHECK(n <= ids_.view().numel() && m <= rows_.view().numel() && ns < q_start_.view().numel() &&
               pos.size() == ids.size() && slots.size() == ids.size() && q_start.size() == ctx.size() + 1 &&
               static_cast<int64_t>(table.size()) == ns * stride && ns * stride <= table_.view().numel(),
           "step indices: {} rows, {} logit rows, {} sequences x {} pages do not fit", n, m, ns, stride);
  StepInput in;
  in.token_ids = ids_.view().rows(0, n);
  in.positions = pos_.view().rows(0, n);
  in.kv_slots = slots_.view().rows(0, n);
  in.logit_rows = rows_.view().rows(0, m);
  batch.n_seqs = static_cast<int>(ns);
  batch.max_pages = stride;
  batch.q_start = q_start_.view().rows(0, ns + 1);
  batch.ctx_len = ctx_.view().rows(0, ns);
  batch.page_table = Tensor(table_.view().data, DType::I32, {ns, stride}, be_.device());
  be_.upload(in.token_ids, ids.data());
  be_.upload(in.positions, pos.data());
  be_.upload(in.kv_slots, slots.data());
  if (m) be_.upload(in.logit_rows, logit_rows.data());
  be_.upload(batch.q_start, q_start.data());
  be_.upload(batch.ctx_len, ctx.data());
  be_.upload(batch.page_table, table.data());
  in.batch = &batch;
  return in;
}

Model::Model(ModelConfig cfg, Weights w) : cfg_(std::move(cfg)), w_(std::move(w)) {
  inv_freq_ = cfg_.rope_inv_freq();
  layer_dense_.assign(cfg_.n_layers, 0);
}

Model Model::load(const std::string& spec, Backend& be) {
  if (spec.rfind("random:", 0) == 0) {
    Model m = random(preset_config(spec.substr(7)), be, 1);
    m.source_ = spec;
    return m;
  }
  Checkpoint ckpt = open_checkpoint(spec);
  ModelConfig cfg = ckpt.config();
  cfg.validate(ckpt.path());
  Weights w = load_weights(ckpt, cfg, be);
  Model m(std::move(cfg), std::move(w));
  m.source_ = ckpt.path();
  return m;
}

Model Model::random(const ModelConfig& cfg, Backend& be, uint64_t seed) {
  cfg.validate("random model config");
  Model m(cfg, random_weights(cfg, be, seed));
  m.source_ = "random:" + cfg.name;
  return m;
}

void Model::set_dense_layers(const std::vector<int>& layers) {
  layer_dense_.assign(cfg_.n_layers, 0);
  for (int l : layers) {
    KF_CHECK(l >= 0 && l < cfg_.n_layers, "--dense-layers: layer {} is outside [0, {})", l,
             cfg_.n_layers);
    layer_dense_[l] = 1;
  }
  dense_layers_ = layers;
}

void Model::forward(Backend& be, Workspace& ws, const std::vector<KvLayer>& kv, const StepInput& in,
                    const Tensor& logits) const {
  const int64_t n = in.token_ids.numel(), m = in.logit_rows.numel();
  const int64_t hq = cfg_.n_heads, hd = cfg_.head_dim;
  KF_CHECK(n > 0 && n <= ws.max_tokens, "forward: {} tokens, the workspace holds {}", n, ws.max_tokens);
  KF_CHECK(m <= ws.max_logit_rows, "forward: {} logit rows, the workspace holds {}", m,
           ws.max_logit_rows);
  KF_CHECK(in.positions.numel() == n && in.kv_slots.numel() == n,
           "forward: positions {} and kv_slots {} must have {} entries", in.positions.shape_str(),
           in.kv_slots.shape_str(), n);
  KF_CHECK(in.batch != nullptr, "forward: no AttnBatch");
  KF_CHECK(static_cast<int>(kv.size()) == cfg_.n_layers, "forward: {} KV layers for {} model layers",
           kv.size(), cfg_.n_layers);
  KF_CHECK(in.selections.empty() || static_cast<int>(in.selections.size()) == cfg_.n_layers,
           "forward: {} page selections for {} layers", in.selections.size(), cfg_.n_layers);
  KF_CHECK(logits.numel() == m * cfg_.vocab_size, "forward: logits {} is not [{}, {}]",
           logits.shape_str(), m, cfg_.vocab_size);

  // Views of this step's rows.
  const Tensor x = ws.x.view().rows(0, n);              // [n, d]
  const Tensor h = ws.h.view().rows(0, n);              // [n, d]
  const Tensor qkv = ws.qkv.view().rows(0, n);          // [n, (Hq+2*Hkv)*D]
  const Tensor q = ws.q.view().rows(0, n);              // [n, Hq*D]
  const Tensor att = ws.attn.view().rows(0, n);         // [n, Hq*D]
  const Tensor gate_up = ws.gate_up.view().rows(0, n);  // [n, 2*I]
  const Tensor ffn = ws.ffn.view().rows(0, n);          // [n, I]
  const Tensor q_heads = q.reshape({n, hq, hd}), att_heads = att.reshape({n, hq, hd});

  RopeParams rope;
  rope.theta = cfg_.rope_theta;
  rope.rotary_dim = static_cast<int>(hd);
  rope.inv_freq = inv_freq_.data();
  AttnPolicy dense;
  dense.kind = AttnKind::Dense;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const float eps = cfg_.rms_eps;

  // Each residual add is fused with the norm after it: the attention block's
  // add with the MLP norm, the MLP's add with the next layer's input norm.
  be.embed(w_.embed, in.token_ids, x);
  be.rmsnorm(x, w_.layers[0].attn_norm, eps, h);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerWeights& lw = w_.layers[l];
    // Attention block: h holds the normed input.
    be.matmul(h, lw.wqkv, cfg_.qkv_bias ? &lw.bqkv.view() : nullptr, qkv);
    be.qkv_rope_write(qkv, cfg_.qk_norm ? &lw.q_norm.view() : nullptr, cfg_.qk_norm ? &lw.k_norm.view() : nullptr,
                      eps, in.positions, rope, kv[l], in.kv_slots, q_heads);
    const AttnPolicy& policy = layer_dense_[l] ? dense : in.policy;
    be.attention(q_heads, kv[l], *in.batch, policy, scale, att_heads,
                 in.selections.empty() ? nullptr : &in.selections[l]);
    be.matmul(att, lw.wo, nullptr, h);
    be.add_rmsnorm(x, h, lw.mlp_norm, eps, h);
    // MLP block.
    be.matmul(h, lw.w_gate_up, nullptr, gate_up);
    be.silu_mul(gate_up, ffn);
    be.matmul(ffn, lw.w_down, nullptr, h);
    if (l + 1 < cfg_.n_layers) be.add_rmsnorm(x, h, w_.layers[l + 1].attn_norm, eps, h);
    else be.add(x, h);
  }
  if (m == 0) return;
  // Only the rows that need logits go through the final norm and the lm_head.
  const Tensor last = ws.last.view().rows(0, m);  // [m, d]
  be.embed(x, in.logit_rows, last);               // row gather
  be.rmsnorm(last, w_.final_norm, eps, last);
  be.matmul(last, w_.lm_head(), nullptr, logits);
}

std::vector<int> parse_layer_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KF_CHECK(used == item.size() && v >= 0, "layer list '{}': '{}' is not a layer index", s, item);
    out.push_back(v);
  }
  return out;
}

}  // namespace kf
