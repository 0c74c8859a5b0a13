#include "model/config.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace kf {

void ModelConfig::validate(const std::string& source) const {
  // A defaulted value in an error would otherwise look like the file's own.
  auto note = [&](const char* field) { return was_defaulted(field) ? " (not in the config: the family default)" : ""; };
  auto need = [&](int v, const char* field) {
    KF_CHECK(v > 0, "{}: field '{}' must be positive (got {}{})", source, field, v, note(field));
  };
  need(vocab_size, "vocab_size");
  need(hidden_size, "hidden_size");
  need(intermediate_size, "intermediate_size");
  need(n_layers, "num_hidden_layers");
  need(n_heads, "num_attention_heads");
  need(n_kv_heads, "num_key_value_heads");
  need(head_dim, "head_dim");
  KF_CHECK(n_heads % n_kv_heads == 0,
           "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}{}", source, n_heads, n_kv_heads,
           note("num_key_value_heads"));
  KF_CHECK(head_dim % 2 == 0, "{}: head_dim {}{} must be even for RoPE", source, head_dim, note("head_dim"));
  KF_CHECK(rotary_dim == 0 || (rotary_dim >= 2 && rotary_dim % 2 == 0 && rotary_dim <= head_dim),
           "{}: {} rotary dims (head_dim {} x partial_rotary_factor) must be even, >= 2 and <= head_dim", source,
           rotary_dim, head_dim);
  KF_CHECK(rms_eps > 0 && std::isfinite(rms_eps), "{}: rms_norm_eps {} is invalid", source, rms_eps);
  KF_CHECK(rope_theta > 0 && std::isfinite(rope_theta), "{}: rope_theta {} is invalid", source,
           rope_theta);
}

bool ModelConfig::was_defaulted(const std::string& field) const {
  return std::find(defaulted.begin(), defaulted.end(), field) != defaulted.end();
}

ModelConfig ModelConfig::sharded(int rank, int size) const {
  KF_CHECK(shard.size == 1, "--tp: {} is already a shard ({} of {})", name, shard.rank, shard.size);
  KF_CHECK(size >= 1, "--tp must be >= 1 (got {})", size);
  KF_CHECK(rank >= 0 && rank < size, "tensor parallelism: rank {} outside [0, {})", rank, size);
  KF_CHECK(n_kv_heads % size == 0 || size % n_kv_heads == 0,
           "--tp {}: {} has {} KV heads, which do not split evenly over {} GPUs (--tp must divide {}, or be a "
           "multiple of it: then each GPU holds one KV head)", size, name, n_kv_heads, size, n_kv_heads);
  KF_CHECK(n_heads % size == 0, "--tp {}: {}'s {} attention heads do not split evenly over {} GPUs", size, name,
           n_heads, size);
  KF_CHECK(intermediate_size % size == 0,
           "--tp {}: {}'s MLP intermediate size {} does not split evenly over {} GPUs", size, name, intermediate_size,
           size);
  ModelConfig c = *this;
  c.n_heads /= size;
  c.n_kv_heads = std::max(1, n_kv_heads / size);
  c.intermediate_size /= size;
  c.shard = TpShard{rank, size, n_kv_heads};
  return c;
}

ModelConfig ModelConfig::whole() const {
  if (shard.size == 1) return *this;
  ModelConfig c = *this;
  c.n_heads *= shard.size;
  c.n_kv_heads = shard.kv_heads;
  c.intermediate_size *= shard.size;
  c.shard = TpShard{};
  return c;
}

std::vector<float> ModelConfig::rope_inv_freq() const {
  // As HF: the exponents are over the rotated dims only (dim = head_dim * partial_rotary_factor).
  const int dim = rope_dim(), half = dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    inv[i] = static_cast<float>(1.0 / std::pow(static_cast<double>(rope_theta), 2.0 * i / dim));
  }
  const RopeScaling& s = rope_scaling;
  if (s.type == RopeScalingType::Linear) {
    for (float& f : inv) f /= s.factor;
  } else if (s.type == RopeScalingType::Llama3) {
    // As in HF transformers' _compute_llama3_parameters.
    const double low_wavelen = s.original_max_position / s.low_freq_factor;
    const double high_wavelen = s.original_max_position / s.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / s.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / s.factor + smooth * f);
      }
    }
  }
  return inv;
}

int64_t ModelConfig::params_plain() const {
  if (shard.size > 1) return whole().params_plain();
  const int64_t d = hidden_size, q = int64_t(n_heads) * head_dim, kv = int64_t(n_kv_heads) * head_dim;
  int64_t layer = d * q + 2 * d * kv + q * d   // q, k, v, o
                  + 3 * d * intermediate_size  // gate, up, down
                  + 2 * d;                     // two norms
  if (qkv_bias) layer += q + 2 * kv;
  if (qk_norm) layer += 2 * head_dim;
  int64_t total = layer * n_layers + int64_t(vocab_size) * d + d;  // + final norm
  if (!tied_embeddings) total += int64_t(vocab_size) * d;
  return total;
}

int64_t ModelConfig::params_kinetics() const {
  return params_plain() + (tied_embeddings ? int64_t(vocab_size) * hidden_size : 0);
}

}  // namespace kf
