// GgufFile: a parsed GGUF (v2/v3, little-endian) checkpoint. Metadata values
// are validated at open and decoded lazily from the map, so a 49k-entry
// tokenizer vocabulary costs one walk when a getter asks for it.
//
// File layout (GGUF spec): magic "GGUF", u32 version, u64 n_tensors,
// u64 n_kv, n_kv × (string key, u32 type, value), n_tensors × (string name,
// u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset), padding to
// general.alignment, then the tensor data (offsets relative to its start).
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/mmap_file.h"
#include "util/tensor.h"

namespace kf {

// GGUF metadata value types (numbering from the GGUF spec).
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata entry; the value stays in the file and is decoded on demand.
struct GgufKV {
  std::string key;
  GgufType type = GgufType::U8;
  GgufType elem_type = GgufType::U8;  // arrays only
  uint64_t count = 0;                 // arrays only: number of elements
  size_t offset = 0;                  // file offset of the value (arrays: of the first element)
};

struct GgufTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major [.., ne1, ne0] (GGUF's ne reversed)
  int64_t numel = 0;
  uint64_t offset = 0;         // absolute file offset of the data
  size_t nbytes = 0;
  const void* data = nullptr;  // into the map
};

class GgufFile {
 public:
  GgufFile() = default;
  // Maps and parses the file; throws kf::Error naming the file and the field.
  explicit GgufFile(const std::string& path);
  // Parses a caller-owned buffer (kept alive by the caller); `name` appears in errors.
  static GgufFile from_bytes(const void* data, size_t size, const std::string& name);

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }

  // ---- metadata -----------------------------------------------------------
  bool has(const std::string& key) const { return kv_index_.count(key) != 0; }
  const GgufKV& kv(const std::string& key) const;  // throws if missing
  const std::vector<GgufKV>& metadata() const { return kvs_; }
  // Integers convert between GGUF integer types when the value fits; floats
  // accept F32/F64. Each getter throws naming the key and the file when the
  // key is missing or holds another type.
  uint32_t get_u32(const std::string& key) const;
  int64_t get_i64(const std::string& key) const;
  float get_f32(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_str(const std::string& key) const;
  uint64_t get_array_size(const std::string& key) const;
  std::vector<std::string> get_str_array(const std::string& key) const;
  std::vector<int32_t> get_i32_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;
  // With defaults when the key is absent (a present key of the wrong type still throws).
  uint32_t get_u32_or(const std::string& key, uint32_t def) const { return has(key) ? get_u32(key) : def; }
  float get_f32_or(const std::string& key, float def) const { return has(key) ? get_f32(key) : def; }
  bool get_bool_or(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }
  std::string get_str_or(const std::string& key, const std::string& def) const {
    return has(key) ? get_str(key) : def;
  }
  // Any value (nested arrays included) as JSON; arrays longer than
  // max_array_items are cut short (0 = no limit).
  nlohmann::json get_json(const std::string& key, size_t max_array_items = 0) const;

  // ---- tensors ------------------------------------------------------------
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensor& tensor(const std::string& name) const;       // throws if absent

 private:
  void parse();
  std::string name_;
  MappedFile map_;  // empty for from_bytes
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::vector<GgufKV> kvs_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace kf
