// safetensors: u64 header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the data (offsets relative to the end of the header).
// SafetensorsFile is one file; SafetensorsModel is a single file or a sharded
// directory (model.safetensors.index.json with a weight_map name -> shard).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/mmap_file.h"
#include "util/tensor.h"

namespace kf {

struct SafeTensor {
  std::string name;
  DType dtype = DType::F32;    // F32, F16, BF16, I32, I64 or U8
  std::vector<int64_t> shape;  // row-major, as stored
  int64_t numel = 0;
  const void* data = nullptr;  // into the map; NOT necessarily aligned (read with memcpy or dequantize)
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file holding it (for errors)
};

class SafetensorsFile {
 public:
  SafetensorsFile() = default;
  // Maps and parses; throws kf::Error naming the file and the tensor/field.
  explicit SafetensorsFile(const std::string& path);
  // Parses a caller-owned buffer (kept alive by the caller); `name` appears in errors.
  static SafetensorsFile from_bytes(const void* data, size_t size, const std::string& name);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::string& path() const { return *name_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafeTensor>& tensors() const { return tensors_; }  // in data order
  const SafeTensor* find(const std::string& name) const;  // nullptr if absent
  const SafeTensor& tensor(const std::string& name) const;  // throws if absent

 private:
  void parse();
  // On the heap so SafeTensor::file stays valid when the object moves.
  std::unique_ptr<std::string> name_ = std::make_unique<std::string>();
  MappedFile map_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafeTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

class SafetensorsModel {
 public:
  SafetensorsModel() = default;
  // `path`: a .safetensors file, a model.safetensors.index.json, or a
  // directory holding either (the index wins when both exist).
  explicit SafetensorsModel(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  const SafeTensor* find(const std::string& name) const;
  const SafeTensor& tensor(const std::string& name) const;  // throws naming the model path
  std::vector<const SafeTensor*> tensors() const;           // every tensor of every shard

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const SafeTensor*> index_;
};

}  // namespace kf
