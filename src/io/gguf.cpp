#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace kf {

static_assert(std::endian::native == std::endian::little, "GGUF parsing assumes a little-endian host");

namespace {

constexpr int kMaxArrayDepth = 8;  // nested arrays deeper than this are rejected
constexpr uint32_t kGgmlMaxDims = 4;  // GGML_MAX_DIMS

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;  // STRING, ARRAY: variable
  }
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

bool is_int(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64: return true;
    default: return false;
  }
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// An integer value as (is_negative, magnitude-or-value) so u64 and i64 both fit.
struct IntValue {
  bool negative;
  uint64_t u;  // value when !negative
  int64_t i;   // value when negative
};

IntValue load_int(GgufType t, const uint8_t* p) {
  auto s = [](int64_t v) { return v < 0 ? IntValue{true, 0, v} : IntValue{false, uint64_t(v), v}; };
  auto u = [](uint64_t v) { return IntValue{false, v, 0}; };
  switch (t) {
    case GgufType::U8: return u(load<uint8_t>(p));
    case GgufType::I8: return s(load<int8_t>(p));
    case GgufType::U16: return u(load<uint16_t>(p));
    case GgufType::I16: return s(load<int16_t>(p));
    case GgufType::U32: return u(load<uint32_t>(p));
    case GgufType::I32: return s(load<int32_t>(p));
    case GgufType::U64: return u(load<uint64_t>(p));
    case GgufType::I64: return s(load<int64_t>(p));
    default: return u(0);
  }
}

// ggml type ids (ggml.h) -> kf::DType; names for the error message otherwise.
bool ggml_to_dtype(uint32_t t, DType* out) {
  switch (t) {
    case 0: *out = DType::F32; return true;
    case 1: *out = DType::F16; return true;
    case 2: *out = DType::Q4_0; return true;
    case 3: *out = DType::Q4_1; return true;
    case 8: *out = DType::Q8_0; return true;
    case 12: *out = DType::Q4_K; return true;
    case 14: *out = DType::Q6_K; return true;
    case 30: *out = DType::BF16; return true;
    default: return false;
  }
}

const char* ggml_type_name(uint32_t t) {
  static const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0",
                                "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
                                "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",
                                "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  return t < std::size(names) ? names[t] : "unknown";
}

// Bounds-checked cursor over the file; every error names the file and what was being read.
class Reader {
 public:
  Reader(const uint8_t* d, size_t n, const std::string& file) : d_(d), n_(n), file_(file) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  void need(size_t k, const std::string& what) const {
    KF_CHECK(k <= left(), "{}: truncated file: {} needs {} bytes at offset {} but only {} remain", file_,
             what, k, pos_, left());
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v = load<T>(d_ + pos_);
    pos_ += sizeof(T);
    return v;
  }
  void skip(size_t k, const std::string& what) {
    need(k, what);
    pos_ += k;
  }
  std::string read_str(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " (string length)");
    KF_CHECK(len <= left(), "{}: {}: string length {} exceeds the {} bytes left in the file", file_, what,
             len, left());
    std::string s(reinterpret_cast<const char*>(d_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }
  // Validates and skips one value of type t (arrays recursively).
  void skip_value(GgufType t, const std::string& what, int depth) {
    if (t == GgufType::STRING) {
      const uint64_t len = read<uint64_t>(what + " (string length)");
      KF_CHECK(len <= left(), "{}: {}: string length {} exceeds the {} bytes left in the file", file_,
               what, len, left());
      pos_ += len;
    } else if (t == GgufType::ARRAY) {
      KF_CHECK(depth < kMaxArrayDepth, "{}: {}: arrays nested deeper than {}", file_, what, kMaxArrayDepth);
      const uint32_t et = read<uint32_t>(what + " (array element type)");
      KF_CHECK(valid_type(et), "{}: {}: unknown array element type {}", file_, what, et);
      const uint64_t count = read<uint64_t>(what + " (array length)");
      skip_array(static_cast<GgufType>(et), count, what, depth + 1);
    } else {
      skip(scalar_size(t), what);
    }
  }
  void skip_array(GgufType et, uint64_t count, const std::string& what, int depth) {
    if (const size_t es = scalar_size(et)) {
      KF_CHECK(count <= left() / es, "{}: {}: array of {} {} needs more than the {} bytes left", file_, what,
               count, gguf_type_name(et), left());
      pos_ += count * es;
      return;
    }
    // Strings take >= 8 bytes and arrays >= 12 each, so this loop is bounded by the file size.
    for (uint64_t i = 0; i < count; ++i) skip_value(et, what, depth);
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& file_;
};

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : "invalid";
}

GgufFile::GgufFile(const std::string& path) : name_(path), map_(path) {
  data_ = map_.data();
  size_ = map_.size();
  parse();
}

GgufFile GgufFile::from_bytes(const void* data, size_t size, const std::string& name) {
  GgufFile f;
  f.name_ = name;
  f.data_ = static_cast<const uint8_t*>(data);
  f.size_ = size;
  f.parse();
  return f;
}

void GgufFile::parse() {
  Reader r(data_, size_, name_);
  r.need(4, "magic");
  if (std::memcmp(data_, "GGUF", 4) != 0) fail("{}: not a GGUF file (bad magic)", name_);
  r.skip(4, "magic");
  version_ = r.read<uint32_t>("version");
  KF_CHECK(version_ != 0x03000000u && version_ != 0x02000000u, "{}: big-endian GGUF is not supported", name_);
  KF_CHECK(version_ == 2 || version_ == 3, "{}: unsupported GGUF version {} (need 2 or 3)", name_, version_);
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // Each entry takes at least 12 (kv) / 24 (tensor) bytes: reject lying counts before reserving.
  KF_CHECK(n_kv <= r.left() / 12, "{}: metadata count {} cannot fit in a {}-byte file", name_, n_kv, size_);
  KF_CHECK(n_tensors <= r.left() / 24, "{}: tensor count {} cannot fit in a {}-byte file", name_, n_tensors,
           size_);

  kvs_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV kv;
    kv.key = r.read_str(fmt::format("metadata key #{}", i));
    const std::string what = fmt::format("metadata key '{}'", kv.key);
    const uint32_t t = r.read<uint32_t>(what + " (type)");
    KF_CHECK(valid_type(t), "{}: {}: unknown value type {}", name_, what, t);
    kv.type = static_cast<GgufType>(t);
    if (kv.type == GgufType::ARRAY) {
      const uint32_t et = r.read<uint32_t>(what + " (array element type)");
      KF_CHECK(valid_type(et), "{}: {}: unknown array element type {}", name_, what, et);
      kv.elem_type = static_cast<GgufType>(et);
      kv.count = r.read<uint64_t>(what + " (array length)");
      kv.offset = r.pos();
      r.skip_array(kv.elem_type, kv.count, what, 1);
    } else {
      kv.offset = r.pos();
      r.skip_value(kv.type, what, 0);
    }
    KF_CHECK(kv_index_.emplace(kv.key, kvs_.size()).second, "{}: duplicate metadata key '{}'", name_, kv.key);
    kvs_.push_back(std::move(kv));
  }

  if (has("general.alignment")) {
    alignment_ = get_u32("general.alignment");
    KF_CHECK(alignment_ > 0 && (alignment_ & (alignment_ - 1)) == 0,
             "{}: metadata key 'general.alignment' = {} is not a power of two", name_, alignment_);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.read_str(fmt::format("tensor info #{} name", i));
    const std::string what = fmt::format("tensor '{}'", t.name);
    const uint32_t nd = r.read<uint32_t>(what + " (n_dims)");
    KF_CHECK(nd >= 1 && nd <= kGgmlMaxDims, "{}: {}: n_dims {} not in [1, {}]", name_, what, nd, kGgmlMaxDims);
    std::vector<int64_t> ne(nd);
    int64_t numel = 1;
    for (uint32_t k = 0; k < nd; ++k) {
      const uint64_t v = r.read<uint64_t>(what + " (dims)");
      KF_CHECK(v >= 1 && v <= (uint64_t(1) << 40), "{}: {}: dimension {} = {} is out of range", name_, what,
               k, v);
      ne[k] = static_cast<int64_t>(v);
      KF_CHECK(numel <= (int64_t(1) << 50) / ne[k], "{}: {}: element count overflows", name_, what);
      numel *= ne[k];
    }
    const uint32_t gt = r.read<uint32_t>(what + " (type)");
    KF_CHECK(ggml_to_dtype(gt, &t.dtype), "{}: {}: unsupported ggml type {} ({}); kinfer reads F32, F16, BF16, "
             "Q8_0, Q4_0, Q4_1, Q4_K, Q6_K", name_, what, gt, ggml_type_name(gt));
    KF_CHECK(ne[0] % dtype_block(t.dtype) == 0, "{}: {}: row length {} is not a multiple of the {} block size {}",
             name_, what, ne[0], dtype_name(t.dtype), dtype_block(t.dtype));
    t.offset = r.read<uint64_t>(what + " (offset)");
    KF_CHECK(t.offset % alignment_ == 0, "{}: {}: data offset {} is not a multiple of the alignment {}", name_,
             what, t.offset, alignment_);
    t.shape.assign(ne.rbegin(), ne.rend());
    t.numel = numel;
    t.nbytes = dtype_bytes(t.dtype, numel);
    KF_CHECK(tensor_index_.emplace(t.name, tensors_.size()).second, "{}: duplicate tensor name '{}'", name_,
             t.name);
    tensors_.push_back(std::move(t));
  }

  // Tensor data starts at the next multiple of the alignment.
  const size_t data_start = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (!tensors_.empty()) {
    KF_CHECK(data_start <= size_, "{}: truncated file: tensor data would start at {} but the file has {} bytes",
             name_, data_start, size_);
  }
  const size_t data_size = size_ - std::min(data_start, size_);
  for (GgufTensor& t : tensors_) {
    KF_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset,
             "{}: tensor '{}': data [{}, {}) lies outside the {}-byte data section (truncated file?)", name_,
             t.name, t.offset, t.offset + t.nbytes, data_size);
    t.offset += data_start;
    t.data = data_ + t.offset;
  }
  // No two tensors may share bytes.
  std::vector<const GgufTensor*> order;
  for (const GgufTensor& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensor& a = *order[i - 1];
    const GgufTensor& b = *order[i];
    KF_CHECK(a.offset + a.nbytes <= b.offset, "{}: tensors '{}' and '{}' overlap (bytes [{}, {}) and [{}, {}))",
             name_, a.name, b.name, a.offset, a.offset + a.nbytes, b.offset, b.offset + b.nbytes);
  }
}

const GgufKV& GgufFile::kv(const std::string& key) const {
  auto it = kv_index_.find(key);
  KF_CHECK(it != kv_index_.end(), "{}: missing metadata key '{}'", name_, key);
  return kvs_[it->second];
}

namespace {
[[noreturn]] void wrong_type(const std::string& file, const GgufKV& kv, const char* want) {
  fail("{}: metadata key '{}' has type {}{}{}, expected {}", file, kv.key, gguf_type_name(kv.type),
       kv.type == GgufType::ARRAY ? " of " : "", kv.type == GgufType::ARRAY ? gguf_type_name(kv.elem_type) : "",
       want);
}
}  // namespace

int64_t GgufFile::get_i64(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (!is_int(e.type)) wrong_type(name_, e, "an integer");
  const IntValue v = load_int(e.type, data_ + e.offset);
  if (v.negative) return v.i;
  KF_CHECK(v.u <= uint64_t(std::numeric_limits<int64_t>::max()), "{}: metadata key '{}' = {} overflows int64",
           name_, key, v.u);
  return static_cast<int64_t>(v.u);
}

uint32_t GgufFile::get_u32(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (!is_int(e.type)) wrong_type(name_, e, "an unsigned integer");
  const IntValue v = load_int(e.type, data_ + e.offset);
  KF_CHECK(!v.negative, "{}: metadata key '{}' = {} is negative", name_, key, v.i);
  KF_CHECK(v.u <= std::numeric_limits<uint32_t>::max(), "{}: metadata key '{}' = {} does not fit in u32", name_,
           key, v.u);
  return static_cast<uint32_t>(v.u);
}

float GgufFile::get_f32(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type == GgufType::F32) return load<float>(data_ + e.offset);
  if (e.type == GgufType::F64) return static_cast<float>(load<double>(data_ + e.offset));
  wrong_type(name_, e, "f32");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type != GgufType::BOOL) wrong_type(name_, e, "bool");
  return data_[e.offset] != 0;
}

std::string GgufFile::get_str(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type != GgufType::STRING) wrong_type(name_, e, "string");
  const uint64_t len = load<uint64_t>(data_ + e.offset);
  return std::string(reinterpret_cast<const char*>(data_ + e.offset + 8), len);
}

uint64_t GgufFile::get_array_size(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type != GgufType::ARRAY) wrong_type(name_, e, "array");
  return e.count;
}

std::vector<std::string> GgufFile::get_str_array(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type != GgufType::ARRAY || e.elem_type != GgufType::STRING) wrong_type(name_, e, "array of string");
  std::vector<std::string> out(e.count);
  const uint8_t* p = data_ + e.offset;  // validated at open: every string lies within the file
  for (std::string& s : out) {
    const uint64_t len = load<uint64_t>(p);
    s.assign(reinterpret_cast<const char*>(p + 8), len);
    p += 8 + len;
  }
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(const std::string& key) const {
  const GgufKV& e = kv(key);
  if (e.type != GgufType::ARRAY || !is_int(e.elem_type)) wrong_type(name_, e, "array of integers");
  std::vector<int32_t> out(e.count);
  const size_t es = scalar_size(e.elem_type);
  for (uint64_t i = 0; i < e.count; ++i) {
    const IntValue v = load_int(e.elem_type, data_ + e.offset + i * es);
    const bool fits = v.negative ? v.i >= std::numeric_limits<int32_t>::min()
                                 : v.u <= uint64_t(std::numeric_limits<int32_t>::max());
    KF_CHECK(fits, "{}: metadata key '{}'[{}] does not fit in i32", name_, key, i);
    out[i] = v.negative ? static_cast<int32_t>(v.i) : static_cast<int32_t>(v.u);
  }
  return out;
}

std::vector<float> GgufFile::get_f32_array(const std::string& key) const {
  const GgufKV& e = kv(key);
  const bool ok = e.type == GgufType::ARRAY && (e.elem_type == GgufType::F32 || e.elem_type == GgufType::F64);
  if (!ok) wrong_type(name_, e, "array of f32");
  std::vector<float> out(e.count);
  for (uint64_t i = 0; i < e.count; ++i) {
    out[i] = e.elem_type == GgufType::F32 ? load<float>(data_ + e.offset + i * 4)
                                          : static_cast<float>(load<double>(data_ + e.offset + i * 8));
  }
  return out;
}

namespace {
// Decodes one validated value at p (advancing p) as JSON.
nlohmann::json value_json(GgufType t, const uint8_t*& p, size_t max_items) {
  if (is_int(t)) {
    const IntValue v = load_int(t, p);
    p += scalar_size(t);
    return v.negative ? nlohmann::json(v.i) : nlohmann::json(v.u);
  }
  switch (t) {
    case GgufType::F32: { float f = load<float>(p); p += 4; return f; }
    case GgufType::F64: { double f = load<double>(p); p += 8; return f; }
    case GgufType::BOOL: { bool b = *p != 0; p += 1; return b; }
    case GgufType::STRING: {
      const uint64_t len = load<uint64_t>(p);
      std::string s(reinterpret_cast<const char*>(p + 8), len);
      p += 8 + len;
      return s;
    }
    default: {  // ARRAY
      const auto et = static_cast<GgufType>(load<uint32_t>(p));
      const uint64_t count = load<uint64_t>(p + 4);
      p += 12;
      nlohmann::json a = nlohmann::json::array();
      for (uint64_t i = 0; i < count; ++i) {
        nlohmann::json v = value_json(et, p, max_items);  // always decode to advance p
        if (max_items == 0 || i < max_items) a.push_back(std::move(v));
      }
      return a;
    }
  }
}
}  // namespace

nlohmann::json GgufFile::get_json(const std::string& key, size_t max_array_items) const {
  const GgufKV& e = kv(key);
  const uint8_t* p = data_ + e.offset;
  if (e.type != GgufType::ARRAY) return value_json(e.type, p, max_array_items);
  nlohmann::json a = nlohmann::json::array();
  const uint64_t n = max_array_items ? std::min<uint64_t>(e.count, max_array_items) : e.count;
  for (uint64_t i = 0; i < n; ++i) a.push_back(value_json(e.elem_type, p, max_array_items));
  return a;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  KF_CHECK(t, "{}: missing tensor '{}'", name_, name);
  return *t;
}

}  // namespace kf
