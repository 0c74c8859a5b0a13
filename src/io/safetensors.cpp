#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace kf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit on the JSON header

bool parse_dtype(const std::string& s, DType* t) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I32", DType::I32}, {"I64", DType::I64}, {"U8", DType::U8},
  };
  for (const auto& [name, d] : table) {
    if (s == name) {
      *t = d;
      return true;
    }
  }
  return false;
}

std::string read_text(const std::string& path) {
  std::optional<std::string> text = read_file(path);
  KF_CHECK(text, "{}: cannot open", path);
  return std::move(*text);
}

}  // namespace

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  *name_ = path;
  data_ = map_.data();
  size_ = map_.size();
  parse();
}

SafetensorsFile SafetensorsFile::from_bytes(const void* data, size_t size, const std::string& name) {
  SafetensorsFile f;
  *f.name_ = name;
  f.data_ = static_cast<const uint8_t*>(data);
  f.size_ = size;
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string& file = *name_;
  KF_CHECK(size_ >= 8, "{}: truncated file: {} bytes, need at least the 8-byte header size", file, size_);
  uint64_t hlen;
  std::memcpy(&hlen, data_, 8);
  KF_CHECK(hlen <= size_ - 8, "{}: header size {} exceeds the {} bytes after it (truncated file?)", file, hlen,
           size_ - 8);
  KF_CHECK(hlen <= kMaxHeader, "{}: header size {} exceeds the 100 MB limit", file, hlen);
  const char* hbegin = reinterpret_cast<const char*>(data_ + 8);
  const json header = json::parse(hbegin, hbegin + hlen, nullptr, /*allow_exceptions=*/false);
  KF_CHECK(!header.is_discarded(), "{}: header is not valid JSON", file);
  KF_CHECK(header.is_object(), "{}: header is not a JSON object", file);

  const uint8_t* base = data_ + 8 + hlen;
  const size_t data_size = size_ - 8 - hlen;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      KF_CHECK(v.is_object(), "{}: __metadata__ is not an object", file);
      for (const auto& [k, s] : v.items()) {
        KF_CHECK(s.is_string(), "{}: __metadata__ value of '{}' is not a string", file, k);
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    KF_CHECK(v.is_object(), "{}: tensor '{}': entry is not an object", file, name);
    SafeTensor t;
    t.name = name;
    t.file = name_.get();
    auto dt = v.find("dtype");
    KF_CHECK(dt != v.end() && dt->is_string(), "{}: tensor '{}': missing string field 'dtype'", file, name);
    KF_CHECK(parse_dtype(dt->get<std::string>(), &t.dtype),
             "{}: tensor '{}': unsupported dtype '{}' (kinfer reads F32, F16, BF16, I32, I64, U8)", file, name,
             dt->get<std::string>());
    auto sh = v.find("shape");
    KF_CHECK(sh != v.end() && sh->is_array(), "{}: tensor '{}': missing array field 'shape'", file, name);
    KF_CHECK(sh->size() <= 8, "{}: tensor '{}': rank {} is too large", file, name, sh->size());
    t.numel = 1;
    for (const json& d : *sh) {
      KF_CHECK(d.is_number_unsigned(), "{}: tensor '{}': shape entry {} is not a non-negative integer", file,
               name, d.dump());
      const uint64_t n = d.get<uint64_t>();
      KF_CHECK(n <= (uint64_t(1) << 40), "{}: tensor '{}': dimension {} is out of range", file, name, n);
      KF_CHECK(n == 0 || uint64_t(t.numel) <= (uint64_t(1) << 50) / n, "{}: tensor '{}': element count overflows",
               file, name);
      t.numel *= static_cast<int64_t>(n);
      t.shape.push_back(static_cast<int64_t>(n));
    }
    auto off = v.find("data_offsets");
    KF_CHECK(off != v.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                 (*off)[1].is_number_unsigned(),
             "{}: tensor '{}': 'data_offsets' must be two non-negative integers", file, name);
    const uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    KF_CHECK(b <= e && e <= data_size, "{}: tensor '{}': data_offsets [{}, {}) lie outside the {}-byte data section",
             file, name, b, e, data_size);
    t.nbytes = dtype_bytes(t.dtype, t.numel);
    KF_CHECK(e - b == t.nbytes, "{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets span {}", file, name,
             sh->dump(), dtype_name(t.dtype), t.nbytes, e - b);
    t.data = base + b;
    tensors_.push_back(std::move(t));
  }
  // Data order, then check that no two tensors share bytes.
  std::sort(tensors_.begin(), tensors_.end(), [](const SafeTensor& a, const SafeTensor& b) {
    return a.data != b.data ? a.data < b.data : a.nbytes < b.nbytes;
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const SafeTensor& a = tensors_[i - 1];
    const SafeTensor& b = tensors_[i];
    const size_t a_end = static_cast<const uint8_t*>(a.data) - base + a.nbytes;
    const size_t b_begin = static_cast<const uint8_t*>(b.data) - base;
    KF_CHECK(a_end <= b_begin || a.nbytes == 0 || b.nbytes == 0,
             "{}: tensors '{}' and '{}' overlap (bytes [{}, {}) and [{}, {}))", file, a.name, b.name,
             a_end - a.nbytes, a_end, b_begin, b_begin + b.nbytes);
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const SafeTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafeTensor& SafetensorsFile::tensor(const std::string& name) const {
  const SafeTensor* t = find(name);
  KF_CHECK(t, "{}: missing tensor '{}'", *name_, name);
  return *t;
}

// ---- single file or sharded directory ------------------------------------------

SafetensorsModel::SafetensorsModel(const std::string& path) : path_(path) {
  std::string index_path, single_path;
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json")) {
      index_path = (dir / "model.safetensors.index.json").string();
    } else if (fs::exists(dir / "model.safetensors")) {
      single_path = (dir / "model.safetensors").string();
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json in this directory", path);
    }
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index_path = path;
  } else {
    single_path = path;
  }

  auto add_file = [&](const std::string& p) -> const SafetensorsFile& {
    files_.push_back(std::make_unique<SafetensorsFile>(p));
    const SafetensorsFile& f = *files_.back();
    for (const SafeTensor& t : f.tensors()) {
      auto [it, fresh] = index_.emplace(t.name, &t);
      KF_CHECK(fresh, "{}: tensor '{}' appears in both {} and {}", path_, t.name, *it->second->file, f.path());
    }
    return f;
  };
  if (!single_path.empty()) {
    add_file(single_path);
    return;
  }

  const json idx = json::parse(read_text(index_path), nullptr, false);
  KF_CHECK(!idx.is_discarded() && idx.is_object(), "{}: not a valid JSON object", index_path);
  auto wm = idx.find("weight_map");
  KF_CHECK(wm != idx.end() && wm->is_object(), "{}: missing object field 'weight_map'", index_path);
  const fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, const SafetensorsFile*> shards;  // shard file name -> opened file
  for (const auto& [name, shard] : wm->items()) {
    KF_CHECK(shard.is_string(), "{}: weight_map entry '{}' is not a string", index_path, name);
    const std::string s = shard.get<std::string>();
    KF_CHECK(!s.empty() && s.find('/') == std::string::npos && s != "..",
             "{}: weight_map entry '{}' names an invalid shard '{}'", index_path, name, s);
    if (!shards.count(s)) shards[s] = &add_file((dir / s).string());
    KF_CHECK(shards[s]->find(name), "{}: weight_map says tensor '{}' is in {}, but that shard lacks it", index_path,
             name, shards[s]->path());
  }
}

const SafeTensor* SafetensorsModel::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const SafeTensor& SafetensorsModel::tensor(const std::string& name) const {
  const SafeTensor* t = find(name);
  KF_CHECK(t, "{}: missing tensor '{}'", path_, name);
  return *t;
}

std::vector<const SafeTensor*> SafetensorsModel::tensors() const {
  std::vector<const SafeTensor*> out;
  for (const auto& f : files_)
    for (const SafeTensor& t : f->tensors()) out.push_back(&t);
  return out;
}

}  // namespace kf
