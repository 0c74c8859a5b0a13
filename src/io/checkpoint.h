// Checkpoint: one model's weights and raw config (config.json or GGUF
// metadata: model/config_load.h gives it meaning), whatever the format. Tensors
// are addressed by their Hugging Face names (model.layers.3.mlp.up_proj.weight)
// and shaped in HF convention ([out, in] for linear weights); GGUF names,
// ggml's reversed dims and llama.cpp's Q/K row permutation are undone here.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/tensor.h"

namespace kf {

class GgufFile;
class SafetensorsModel;

struct TensorInfo {
  std::string name;            // HF name
  std::string stored_name;     // name in the file (GGUF name for GGUF)
  DType dtype = DType::F32;    // storage type
  std::vector<int64_t> shape;  // row-major, HF convention
  int64_t numel = 0;
};

class Checkpoint {
 public:
  Checkpoint();
  ~Checkpoint();
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;

  const std::string& path() const { return path_; }  // GGUF file or HF directory
  const std::string& format() const { return format_; }  // "gguf" or "safetensors"
  const GgufFile* gguf() const { return gguf_.get(); }    // nullptr unless GGUF

  bool has(const std::string& hf_name) const;
  TensorInfo info(const std::string& hf_name) const;  // throws naming tensor and file
  std::vector<TensorInfo> tensors() const;            // every tensor, HF names, file order
  const std::string& file(const std::string& hf_name) const;  // the file holding the tensor
  // Throws unless the tensor exists with exactly expected_shape and a dtype
  // that reads as floating point (errors name tensor, file, expected and found).
  void check(const std::string& hf_name, const std::vector<int64_t>& expected_shape) const;
  // Converts/dequantises the whole tensor to f32 after check().
  void read_f32(const std::string& hf_name, float* dst, const std::vector<int64_t>& expected_shape) const;
  // Same, to bf16 (for the GPU weights).
  void read_bf16(const std::string& hf_name, uint16_t* dst, const std::vector<int64_t>& expected_shape) const;
  // The stored bytes as they are (info().dtype's layout, HF row order: llama.cpp's
  // Q/K row permutation undone row by row, which keeps quantised blocks whole).
  // Checks the shape only (any stored dtype).
  void read_raw(const std::string& hf_name, void* dst, const std::vector<int64_t>& expected_shape) const;

 private:
  friend Checkpoint open_checkpoint(const std::string& spec);
  struct Entry;  // one tensor's location
  const Entry& entry(const std::string& hf_name) const;
  void check_shape(const std::string& hf_name, const std::vector<int64_t>& expected) const;
  template <typename Out>
  void read_as(const std::string& hf_name, Out* dst, const std::vector<int64_t>& expected) const;

  std::string path_;
  std::string format_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsModel> st_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;  // HF name -> entries_
};

// spec: a GGUF file, an HF directory (config.json + model.safetensors or the
// sharded index), or "default" (see resolve_default_model).
Checkpoint open_checkpoint(const std::string& spec);
// $KINFER_DEFAULT_MODEL, else $HOME/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf;
// throws with set-up instructions when neither exists.
std::string resolve_default_model();

// HF name for a GGUF tensor name ("blk.3.ffn_up.weight" -> "model.layers.3.mlp.up_proj.weight"),
// or "" when it has no HF equivalent.
std::string gguf_to_hf_name(const std::string& gguf_name);

struct ParamCounts {
  int64_t kinetics = 0;  // embedding and lm_head both counted, even when tied
  int64_t plain = 0;     // each stored tensor once
};
ParamCounts count_params(const Checkpoint& ckpt);

}  // namespace kf
