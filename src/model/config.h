// ModelConfig: one struct for the Llama, Qwen2 and Qwen3 families. Architecture
// quirks are data here (qk_norm, qkv_bias, tied embeddings, rope scaling), so
// the forward has no per-architecture branches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kf {

enum class RopeScalingType : uint8_t { None, Linear, Llama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  float factor = 1.f;
  float low_freq_factor = 1.f;    // llama3
  float high_freq_factor = 4.f;   // llama3
  int original_max_position = 8192;  // llama3
};

// Tensor parallelism: a model split over `size` GPUs; rank `rank` holds the
// query heads [rank * Hq / size, (rank + 1) * Hq / size), the KV heads they
// read, and the same slice of the MLP's intermediate dimension. When size
// divides the KV heads each rank holds Hkv / size of them; when size is a
// multiple of Hkv (more GPUs than KV heads) each rank holds the one KV head
// its query heads read, so tp / Hkv ranks hold a copy of each (as vLLM).
struct TpShard {
  int rank = 0, size = 1;
  int kv_heads = 0;  // the whole model's KV heads (0 when whole)
  // The first of the rank's KV heads in the whole model.
  int first_kv_head() const { return size == 1 ? 0 : rank * kv_heads / size; }
  // Each rank holds a copy of a KV head and only some of its query heads:
  // policies that select pages from the mean query of all of a KV head's
  // query heads (blocktopk, topk) would select otherwise than the whole model.
  bool kv_heads_copied() const { return size > 1 && size > kv_heads; }
};

struct ModelConfig {
  std::string arch;      // "llama", "qwen2", "qwen3" (as named by the checkpoint)
  std::string name;      // human-readable, e.g. "SmolLM2-135M-Instruct"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int max_position = 0;
  float rms_eps = 1e-6f;
  float rope_theta = 10000.f;
  RopeScaling rope_scaling;
  // RoPE rotates the first rotary_dim dims of each head (rotate_half within
  // them) and passes the rest: head_dim * partial_rotary_factor. 0 = head_dim.
  int rotary_dim = 0;
  bool qk_norm = false;          // Qwen3: RMSNorm over each head of q and k before RoPE
  bool qkv_bias = false;         // Qwen2: bias on q, k, v projections
  bool tied_embeddings = false;  // lm_head shares the embedding matrix
  int sliding_window = 0;        // 0 = none (recorded; not used by the families above by default)
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  // Fields the checkpoint's config did not give, which took the family's
  // documented default (HF names, e.g. "rope_theta"); `kinfer info` shows them.
  std::vector<std::string> defaulted;
  // A shard's config has n_heads, n_kv_heads and intermediate_size divided by
  // shard.size (see sharded()); the whole model's has size 1.
  TpShard shard;

  // Throws kf::Error naming the field if a value is missing or inconsistent.
  void validate(const std::string& source) const;
  int rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  // Inverse RoPE frequencies [rope_dim()/2] with scaling applied.
  std::vector<float> rope_inv_freq() const;
  bool was_defaulted(const std::string& field) const;
  // The config of rank `rank` of `size` tensor-parallel shards: heads and
  // intermediate size divided. Throws naming the flag (--tp) when the KV heads
  // or the intermediate size do not split evenly.
  ModelConfig sharded(int rank, int size) const;
  // The whole model a shard belongs to (itself when it is whole).
  ModelConfig whole() const;
  // Parameter count with the Kinetics convention (embedding and lm_head both
  // counted even when tied) and the plain count (tied counted once), of the
  // whole model (a shard counts the model it belongs to).
  int64_t params_kinetics() const;
  int64_t params_plain() const;
};

}  // namespace kf
