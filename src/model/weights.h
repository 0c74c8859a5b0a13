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

// Reads every tensor the config needs from the checkpoint (errors name the
// tensor and the file). A GGUF without output.weight ties lm_head to the
// embedding, as llama.cpp does.
Weights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& backend,
                     WeightFormat format = WeightFormat::Auto);

// Random weights with the config's shapes for benchmarks and property tests:
// uniform with unit-gain scaling (std 1/sqrt(fan_in)), norms near 1, small
// biases, from a fixed seed (same seed, same weights).
Weights random_weights(const ModelConfig& cfg, Backend& backend, uint64_t seed,
                       WeightFormat format = WeightFormat::Auto);

}  // namespace kf
