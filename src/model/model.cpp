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
  if (spec.rfind("random:", 0) == 0) {
    Model m = random(shard_of(preset_config(spec.substr(7))), be, 1, format);
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

// One micro-batch of a step: views of its rows of the workspace and of the
// step's inputs, and the AttnBatch of its sequences.
struct Model::Rows {
  Tensor x, h, qkv, q_heads, att, att_heads, gate_up, ffn;  // [rows, ...] views of the Workspace
  Tensor positions, kv_slots;                               // [rows]
  AttnBatch batch;                                          // its sequences
  AttnBatch dense_batch;                                    // the same without per-sequence policies
  std::span<PageSelection> selections;                      // [n_layers] or empty
};

void Model::forward(Backend& be, Workspace& ws, const std::vector<KvLayer>& kv, const StepInput& in,
                    const Tensor& logits) const {
  const int64_t n = in.token_ids.numel(), m = in.logit_rows.numel();
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
  KF_CHECK(in.layer_dense.empty() || static_cast<int>(in.layer_dense.size()) == cfg_.n_layers,
           "forward: layer_dense has {} entries for {} layers", in.layer_dense.size(), cfg_.n_layers);
  KF_CHECK(be.tp_size() == cfg_.shard.size && be.tp_rank() == cfg_.shard.rank,
           "forward: shard {} of {} runs on {}, which is rank {} of a group of {} (make_tp_group)", cfg_.shard.rank,
           cfg_.shard.size, be.name(), be.tp_rank(), be.tp_size());
  const int64_t split = in.split_rows;
  KF_CHECK(split == 0 || (split > 0 && split < n && in.batch->n_seqs == n && cfg_.shard.size == 1),
           "forward: split_rows {} needs a pure decode step of more rows ({} rows, {} sequences) on one GPU "
           "(tensor parallel shards: {})",
           split, n, in.batch->n_seqs, cfg_.shard.size);

  // Rows [r0, r0 + count) of the step. A micro-batch of a pure decode step
  // keeps q_start's prefix 0..count: sequence s owns row s of its views.
  auto rows_of = [&](int64_t r0, int64_t count, std::vector<PageSelection>& sel_store) {
    const int64_t hq = cfg_.n_heads, hd = cfg_.head_dim;
    Rows r;
    r.x = ws.x.view().rows(r0, count);              // [count, d]
    r.h = ws.h.view().rows(r0, count);              // [count, d]
    r.qkv = ws.qkv.view().rows(r0, count);          // [count, (Hq+2*Hkv)*D]
    r.q_heads = ws.q.view().rows(r0, count).reshape({count, hq, hd});
    r.att = ws.attn.view().rows(r0, count);         // [count, Hq*D]
    r.att_heads = r.att.reshape({count, hq, hd});
    r.gate_up = ws.gate_up.view().rows(r0, count);  // [count, 2*I]
    r.ffn = ws.ffn.view().rows(r0, count);          // [count, I]
    r.positions = in.positions.rows(r0, count);
    r.kv_slots = in.kv_slots.rows(r0, count);
    r.batch = *in.batch;
    r.selections = in.selections;
    if (count != n) {
      const AttnBatch& b = *in.batch;
      r.batch.n_seqs = static_cast<int>(count);
      r.batch.q_start = b.q_start.rows(0, count + 1);
      r.batch.ctx_len = b.ctx_len.rows(r0, count);
      r.batch.page_table = b.page_table.rows(r0, count);
      if (b.seq_policy.data) r.batch.seq_policy = b.seq_policy.rows(r0, count);
      sel_store.clear();
      for (const PageSelection& s : in.selections) sel_store.push_back({s.pages.rows(r0, count), s.counts.rows(r0, count)});
      r.selections = sel_store;
    }
    r.dense_batch = r.batch;  // dense layers ignore per-sequence policies
    r.dense_batch.seq_policy = Tensor();
    return r;
  };

  // Each residual add is fused with the norm after it: the attention block's
  // add with the MLP norm, the MLP's add with the next layer's input norm.
  const Tensor x = ws.x.view().rows(0, n);  // [n, d]
  be.embed(w_.embed, in.token_ids, x);
  be.rmsnorm(x, w_.layers[0].attn_norm, cfg_.rms_eps, ws.h.view().rows(0, n));
  if (split == 0) {
    std::vector<PageSelection> unused;
    const Rows all = rows_of(0, n, unused);
    for (int l = 0; l < cfg_.n_layers; ++l) layer(be, l, kv[l], all, in);
  } else {
    // Selections of a micro-batch only when asked for (stats and tests).
    std::vector<PageSelection> sel0, sel1;
    const Rows half[2] = {rows_of(0, split, sel0), rows_of(split, n - split, sel1)};
    be.fork_lanes();
    try {
      // Issued layer by layer, alternating lanes, so that direct launches
      // (no graph) start both micro-batches early too.
      for (int l = 0; l < cfg_.n_layers; ++l)
        for (int i = 0; i < 2; ++i) {
          be.set_lane(i);
          layer(be, l, kv[l], half[i], in);
        }
    } catch (...) {
      be.join_lanes();
      throw;
    }
    be.join_lanes();
  }
  if (m == 0) return;
  // Only the rows that need logits go through the final norm and the lm_head.
  const Tensor last = ws.last.view().rows(0, m);  // [m, d]
  be.embed(x, in.logit_rows, last);               // row gather
  be.rmsnorm(last, w_.final_norm, cfg_.rms_eps, last);
  be.matmul(last, w_.lm_head(), nullptr, logits);
}

// Layer l of one micro-batch; r.h holds its rows' normed input.
void Model::layer(Backend& be, int l, const KvLayer& kv, const Rows& r, const StepInput& in) const {
  const LayerWeights& lw = w_.layers[l];
  const float eps = cfg_.rms_eps;
  const float scale = 1.f / std::sqrt(static_cast<float>(cfg_.head_dim));
  const bool shard = cfg_.shard.size > 1;  // the o_proj and down_proj outputs are partial sums
  RopeParams rope;
  rope.theta = cfg_.rope_theta;
  rope.rotary_dim = cfg_.rope_dim();  // < head_dim with partial_rotary_factor
  rope.inv_freq = inv_freq_.data();
  AttnPolicy dense;
  dense.kind = AttnKind::Dense;
  const bool dense_layer = !in.layer_dense.empty() && in.layer_dense[l];

  // Attention block.
  be.matmul(r.h, lw.wqkv, cfg_.qkv_bias ? &lw.bqkv.view() : nullptr, r.qkv);
  be.qkv_rope_write(r.qkv, cfg_.qk_norm ? &lw.q_norm.view() : nullptr, cfg_.qk_norm ? &lw.k_norm.view() : nullptr,
                    eps, r.positions, rope, kv, r.kv_slots, r.q_heads);
  be.attention(r.q_heads, kv, dense_layer ? r.dense_batch : r.batch, dense_layer ? dense : in.policy, scale,
               r.att_heads, r.selections.empty() ? nullptr : &r.selections[l]);
  be.matmul(r.att, lw.wo, nullptr, r.h);
  if (shard) be.all_reduce(r.h);
  be.add_rmsnorm(r.x, r.h, lw.mlp_norm, eps, r.h);
  // MLP block.
  be.matmul(r.h, lw.w_gate_up, nullptr, r.gate_up);
  be.silu_mul(r.gate_up, r.ffn);
  be.matmul(r.ffn, lw.w_down, nullptr, r.h);
  if (shard) be.all_reduce(r.h);
  if (l + 1 < cfg_.n_layers) be.add_rmsnorm(r.x, r.h, w_.layers[l + 1].attn_norm, eps, r.h);
  else be.add(r.x, r.h);
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
