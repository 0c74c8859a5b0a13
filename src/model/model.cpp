#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "io/checkpoint.h"
#include "model/config_load.h"
#include "model/presets.h"

namespace kf {

Workspace::Workspace(const ModelConfig& cfg, Backend& be, int max_tokens_, int max_logit_rows_)
    : max_tokens(max_tokens_), max_logit_rows(max_logit_rows_) {
  KF_CHECK(max_tokens > 0 && max_logit_rows > 0 && max_logit_rows <= max_tokens,
           "workspace: need 0 < max_logit_rows ({}) <= max_tokens ({})", max_logit_rows, max_tokens);
  const DType dt = be.act_dtype();
  Backend& dev = be;
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

Model::Model(ModelConfig cfg, Weights w) : cfg_(std::move(cfg)), w_(std::move(w)) {
  inv_freq_ = cfg_.rope_inv_freq();
}

Model Model::load(const std::string& spec, Backend& be, TpShard shard, WeightFormat format) {
  auto shard_of = [&](const ModelConfig& c) { return shard.size > 1 ? c.sharded(shard.rank, shard.size) : c; };
  if (const std::optional<ModelConfig> preset = random_model_config(spec)) {
    Model m = random(shard_of(*preset), be, 1, format);
    m.source_ = spec;
    return m;
  }
  Checkpoint ckpt = open_checkpoint(spec);
  ModelConfig whole = load_config(ckpt);
  whole.validate(ckpt.path());
  const ModelConfig cfg = shard_of(whole);
  Weights w = load_weights(ckpt, cfg, be, format);
  Model m(std::move(cfg), std::move(w));
  m.source_ = ckpt.path();
  return m;
}

Model Model::random(const ModelConfig& cfg, Backend& be, uint64_t seed, WeightFormat format) {
  cfg.whole().validate("random model config");
  Model m(cfg, random_weights(cfg, be, seed, format));
  m.source_ = "random:" + cfg.name;
  return m;
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
  rope.rotary_dim = cfg_.rope_dim();  // < head_dim with partial_rotary_factor
  rope.inv_freq = inv_freq_.data();
  AttnPolicy dense;
  dense.kind = AttnKind::Dense;
  AttnBatch dense_batch = *in.batch;  // dense layers ignore per-sequence policies too
  dense_batch.seq_policy = Tensor();
  KF_CHECK(in.layer_dense.empty() || static_cast<int>(in.layer_dense.size()) == cfg_.n_layers,
           "forward: layer_dense has {} entries for {} layers", in.layer_dense.size(), cfg_.n_layers);
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const float eps = cfg_.rms_eps;
  KF_CHECK(be.tp_size() == cfg_.shard.size && be.tp_rank() == cfg_.shard.rank,
           "forward: shard {} of {} runs on {}, which is rank {} of a group of {} (make_tp_group)", cfg_.shard.rank,
           cfg_.shard.size, be.name(), be.tp_rank(), be.tp_size());

  // Each residual add is fused with the projection before it and the norm
  // after it: o_proj with the MLP norm, down_proj with the next layer's input
  // norm (under tensor parallelism the projections' partial sums are summed
  // over the group first: matmul_add_rmsnorm).
  be.embed(w_.embed, in.token_ids, x);
  be.rmsnorm(x, w_.layers[0].attn_norm, eps, h);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerWeights& lw = w_.layers[l];
    // Attention block: h holds the normed input.
    be.matmul(h, lw.wqkv, cfg_.qkv_bias ? &lw.bqkv.view() : nullptr, qkv);
    const bool dense_layer = !in.layer_dense.empty() && in.layer_dense[l];
    be.qkv_attention(qkv, cfg_.qk_norm ? &lw.q_norm.view() : nullptr, cfg_.qk_norm ? &lw.k_norm.view() : nullptr,
                     eps, in.positions, rope, kv[l], in.kv_slots, q_heads, dense_layer ? dense_batch : *in.batch,
                     dense_layer ? dense : in.policy, scale, att_heads,
                     in.selections.empty() ? nullptr : &in.selections[l]);
    be.matmul_add_rmsnorm(att, lw.wo, x, &lw.mlp_norm.view(), eps, h);
    // MLP block; then h holds the next layer's normed input.
    const Tensor* next_norm = l + 1 < cfg_.n_layers ? &w_.layers[l + 1].attn_norm.view() : nullptr;
    be.mlp(h, lw.w_gate_up, lw.w_down, gate_up, ffn, x, next_norm, eps, h);
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
