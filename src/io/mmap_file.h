// MappedFile: an RAII, read-only memory map of a whole file. Loaders parse the
// map in place, so tensors are read straight from the page cache.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace kf {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws kf::Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool empty() const { return data_ == nullptr; }

 private:
  void release();
  const uint8_t* data_ = nullptr;  // nullptr for an empty file (mmap of 0 bytes is invalid)
  size_t size_ = 0;
  std::string path_;
};

}  // namespace kf
