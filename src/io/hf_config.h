// ModelConfig from a Hugging Face config.json or from GGUF metadata, for the
// Llama, Qwen2 and Qwen3 families. Both call ModelConfig::validate().
#pragma once
#include <string>

#include "model/config.h"

namespace kf {

class GgufFile;

// `path`: a config.json, or a directory containing one.
ModelConfig load_hf_config(const std::string& path);
// The JSON text of a config.json; `source` names it in errors.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);
// From `general.architecture` and the `<arch>.*` keys plus tensor presence
// (tied = no output.weight, qkv_bias = blk.0.attn_q.bias, qk_norm = blk.0.attn_q_norm.weight).
ModelConfig config_from_gguf(const GgufFile& f);

}  // namespace kf
