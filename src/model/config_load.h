// ModelConfig from a checkpoint's raw config (a Hugging Face config.json or
// GGUF metadata), for the Llama, Qwen2 and Qwen3 families. All call
// ModelConfig::validate(). io/ reads the files; this layer gives them meaning.
#pragma once
#include <string>

#include "model/config.h"

namespace kf {

class Checkpoint;
class GgufFile;

// The config of an opened checkpoint (config.json or GGUF metadata).
ModelConfig load_config(const Checkpoint& ckpt);

// `path`: a config.json, or a directory containing one.
ModelConfig load_hf_config(const std::string& path);
// The JSON text of a config.json; `source` names it in errors.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);
// From `general.architecture` and the `<arch>.*` keys plus tensor presence
// (tied = no output.weight, qkv_bias = blk.0.attn_q.bias, qk_norm = blk.0.attn_q_norm.weight).
ModelConfig config_from_gguf(const GgufFile& f);

}  // namespace kf
