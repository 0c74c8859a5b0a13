// Model: config + weights + ONE generic decoder forward (Llama, Qwen2, Qwen3
// and anything else ModelConfig can describe), written only against Backend.
//
// A forward step runs any mix of sequences: prefill chunks (several rows of
// one sequence) and decode rows (one row each), as AttnBatch describes. The
// caller (engine/executor.h) owns the KV pool, the page tables and the
// slots; the Workspace holds every activation for up to max_tokens rows, so a
// step allocates nothing.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/weights.h"

namespace kf {

// Activations of one step, preallocated on the backend's device.
struct Workspace {
  Workspace(const ModelConfig& cfg, Backend& backend, int max_tokens, int max_logit_rows);
  int max_tokens = 0;
  int max_logit_rows = 0;
  Buffer x;        // [T, d]              residual stream
  Buffer h;        // [T, d]              normed input / projection output
  Buffer qkv;      // [T, (Hq+2*Hkv)*D]   merged q, k, v projection
  Buffer q;        // [T, Hq*D]           queries after norm and RoPE
  Buffer attn;     // [T, Hq*D]           attention output
  Buffer gate_up;  // [T, 2*I]            merged gate, up projection
  Buffer ffn;      // [T, I]              silu(gate) * up
  Buffer last;     // [M, d]              rows that need logits
};

// Everything a step needs besides the weights. All tensors are on the
// backend's device (I32), see backend.h for AttnBatch's meaning.
struct StepInput {
  Tensor token_ids;   // [n]
  Tensor positions;   // [n]  position of each row in its sequence
  Tensor kv_slots;    // [n]  where each row's K/V go: page * page_size + offset
  const AttnBatch* batch = nullptr;
  AttnPolicy policy;  // for decode rows without a per-sequence policy (prefill is always dense)
  Tensor logit_rows;  // [m]  rows whose logits are wanted, in output order
  // [n_layers] 1 = the layer stays dense whatever the policy (--dense-layers); empty = none.
  std::span<const uint8_t> layer_dense;
  // Optional: one PageSelection per layer, filled by attention (stats/tests).
  std::span<PageSelection> selections;
};

class Model {
 public:
  // spec: a GGUF file, an HF directory, "default", or "random:PRESET".
  // shard: load rank shard.rank of shard.size tensor-parallel shards (its
  // heads and MLP slice; see ModelConfig::sharded and load_weights);
  // `format` picks how matrices are stored (model/weights.h).
  static Model load(const std::string& spec, Backend& backend, TpShard shard = {},
                    WeightFormat format = WeightFormat::Auto);
  // Random weights for a config (benchmarks, property tests); a shard's
  // config gives the shard's slices of the whole random model.
  static Model random(const ModelConfig& cfg, Backend& backend, uint64_t seed = 1,
                      WeightFormat format = WeightFormat::Auto);
  Model(ModelConfig cfg, Weights w);

  const ModelConfig& config() const { return cfg_; }
  const Weights& weights() const { return w_; }
  const std::string& source() const { return source_; }

  // Runs one step and writes logits [m, vocab] (F32, or the backend's
  // activation dtype). A shard sums its attention and MLP outputs over the
  // group (Backend::all_reduce after o_proj and after down_proj), so every
  // rank holds the whole residual stream and the same logits.
  void forward(Backend& backend, Workspace& ws, const std::vector<KvLayer>& kv, const StepInput& in,
               const Tensor& logits) const;

 private:
  ModelConfig cfg_;
  Weights w_;
  std::string source_;
  std::vector<float> inv_freq_;  // [head_dim/2] host, scaling applied
};

// Parses "0,1,5" (empty string = none).
std::vector<int> parse_layer_list(const std::string& s);

}  // namespace kf
