// Model weights on the backend's device, named after the HF tensors they come
// from. Matrices (the projections, the embedding and lm_head) are stored in a
// dtype the backend's matmul takes, chosen by WeightFormat; norms and biases
// are in the activation dtype.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "util/tensor.h"

namespace kf {

class Checkpoint;
struct ParamCounts;

// How matrices are stored on a backend that takes several formats (the CPU:
// `--cpu-weights`); a backend that takes one (CUDA: BF16) converts to it.
//   auto    GGUF tensors keep their own format (Q4_1 stays Q4_1, as llama.cpp
//           runs it); safetensors F32 becomes BF16, F16/BF16 stay; random:
//           models stay F32. The default.
//   native  every tensor keeps its stored format, F32 included.
//   bf16    everything converted to BF16 (GGUF blocks dequantised).
//   f32     everything converted to F32: the exact reference, 2x the memory
//           traffic of bf16 and ~6x that of Q4.
// A stacked matrix (q|k|v, gate|up) whose parts differ in format is stored as
// BF16 (GGUF Q4_K_M mixes Q4_K and Q6_K there).
enum class WeightFormat : uint8_t { Auto, Native, BF16, F32 };
WeightFormat parse_weight_format(const std::string& s);  // throws naming the choices
const char* weight_format_name(WeightFormat f);

// Projections that read the same input are stacked by rows into one matrix,
// so a step runs one GEMM for q, k, v and one for gate, up. Quantised rows
// stack as whole rows of blocks.
struct LayerWeights {
  Buffer attn_norm;       // [d]                          input_layernorm
  Buffer wqkv;            // [(Hq + 2*Hkv)*D, d]          self_attn.{q,k,v}_proj stacked
  Buffer bqkv;            // [(Hq + 2*Hkv)*D]             their biases, only when cfg.qkv_bias
  Buffer q_norm, k_norm;  // [D]                          only when cfg.qk_norm
  Buffer wo;              // [d, Hq*D]                    self_attn.o_proj
  Buffer mlp_norm;        // [d]                          post_attention_layernorm
  Buffer w_gate_up;       // [2*I, d]                     mlp.{gate,up}_proj stacked
  Buffer w_down;          // [d, I]                       mlp.down_proj
};

struct Weights {
  Buffer embed;       // [vocab, d]
  Buffer final_norm;  // [d]
  Buffer lm_head_own; // [vocab, d]; empty when the embedding is tied
  std::vector<LayerWeights> layers;

  const Tensor& lm_head() const { return lm_head_own.empty() ? embed.view() : lm_head_own.view(); }
  bool tied() const { return lm_head_own.empty(); }
  // Bytes one decode step reads: every layer matrix, the norms and the
  // lm_head (the embedding contributes one row per token, not counted).
  int64_t bytes_per_step() const;
  int64_t total_bytes() const;  // everything held (tied lm_head counted once)
  // The matrices' storage dtypes, distinct, layers first: "Q4_1, Q8_0".
  std::string matrix_dtypes() const;
};

// A tensor the model reads: its HF name and the shape the config implies.
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a config reads, field by field as in LayerWeights and
// Weights; stacked parts in stacking order; an optional tensor the config
// does not use has an empty name (an empty vector for stacked ones).
struct LayerSpec {
  WeightSpec attn_norm, q_norm, k_norm, wo, mlp_norm, w_down;
  std::vector<WeightSpec> wqkv, bqkv, w_gate_up;
};
struct WeightsSpec {
  WeightSpec embed, final_norm, lm_head;
  std::vector<LayerSpec> layers;
  std::vector<const WeightSpec*> all() const;  // every tensor read
};

// What `cfg` reads from `ckpt`. A GGUF without output.weight ties lm_head to
// the embedding, as llama.cpp does.
WeightsSpec weights_spec(const Checkpoint& ckpt, const ModelConfig& cfg);
// What `cfg` reads, without a file (random: models); head_tied: lm_head is the
// embedding whatever the config says.
WeightsSpec weights_spec(const ModelConfig& cfg, bool head_tied = false);
// Parameters of a spec, counted as count_params (io/checkpoint.h) counts a
// checkpoint's: each tensor once, and the Kinetics count with a tied lm_head
// counted again.
ParamCounts spec_params(const WeightsSpec& spec);

// Checks, before anything is read, that the checkpoint has every tensor the
// config needs with exactly its shape and a float-readable dtype, and no
// tensor the model would silently ignore (an o_proj or MLP bias, say).
// Errors name the tensor and the file. load_weights runs it; so does `kinfer info`.
void check_weights(const Checkpoint& ckpt, const ModelConfig& cfg);

// Reads every tensor the config needs from the checkpoint after check_weights.
// A shard's config (ModelConfig::sharded) checks the whole model's tensors and
// keeps its slices: the q, k, v rows (and biases) of its heads, the o_proj
// columns they feed, its gate and up rows and down_proj columns; embeddings,
// norms and the lm_head stay whole (replicated). Matrices are stored as
// `format` picks; on the CPU, a shard's column slices (o_proj, down_proj) of a
// quantised matrix are converted to BF16/F32, since a slice may split blocks.
Weights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& backend,
                     WeightFormat format = WeightFormat::Auto);

// Random weights with the config's shapes for benchmarks and property tests:
// uniform with unit-gain scaling (std 1/sqrt(fan_in)), norms near 1, small
// biases, from a fixed seed (same seed, same weights). A shard's config gives
// exactly the slices load_weights would keep of the whole random model.
// Values are drawn by Backend::fill_uniform in the activation dtype; on the
// CPU, `format` bf16 then converts the matrices to BF16.
Weights random_weights(const ModelConfig& cfg, Backend& backend, uint64_t seed,
                       WeightFormat format = WeightFormat::Auto);

}  // namespace kf
