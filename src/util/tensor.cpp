#include "util/tensor.h"

#include <cstdlib>
#include <cstring>
#include <fmt/format.h>


namespace kf {

namespace {
struct DTypeInfo {
  const char* name;
  int block;        // elements per block
  int block_bytes;  // bytes per block
};
// Block sizes from the GGUF format definition (ggml-common.h layout).
constexpr DTypeInfo kInfo[] = {
    {"F32", 1, 4},   {"F16", 1, 2},   {"BF16", 1, 2},  {"I32", 1, 4},
    {"I64", 1, 8},   {"U8", 1, 1},    {"Q8_0", 32, 34}, {"Q4_0", 32, 18},
    {"Q4_1", 32, 20}, {"Q4_K", 256, 144}, {"Q6_K", 256, 210},
    {"Q8_0x4", 32, 34}, {"Q4_0x4", 32, 18}, {"Q4_1x4", 32, 20},
};
const DTypeInfo& info(DType t) { return kInfo[static_cast<int>(t)]; }
}  // namespace

const char* dtype_name(DType t) { return info(t).name; }
int dtype_block(DType t) { return info(t).block; }

size_t dtype_bytes(DType t, int64_t n) {
  const DTypeInfo& i = info(t);
  KF_CHECK(n % i.block == 0, "{} elements is not a multiple of the {} block size {}", n, i.name,
           i.block);
  return static_cast<size_t>(n / i.block) * i.block_bytes;
}

Tensor::Tensor(void* p, DType t, std::initializer_list<int64_t> dims, Device dev)
    : data(p), dtype(t), device(dev), ndim(static_cast<int>(dims.size())) {
  KF_CHECK(ndim <= kMaxDims, "tensor rank {} exceeds {}", ndim, kMaxDims);
  int i = 0;
  for (int64_t d : dims) shape[i++] = d;
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    strides[k] = s;
    s *= shape[k];
  }
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    if (shape[k] != 1 && strides[k] != s) return false;
    s *= shape[k];
  }
  return true;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return s + "]";
}

Tensor Tensor::rows(int64_t r0, int64_t n) const {
  KF_CHECK(ndim >= 1 && r0 >= 0 && r0 + n <= shape[0], "rows [{}, {}) out of range for {}", r0,
           r0 + n, shape_str());
  Tensor t = *this;
  t.shape[0] = n;
  t.data = static_cast<char*>(data) + dtype_bytes(dtype, r0 * strides[0]);
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> dims) const {
  KF_CHECK(is_contiguous(), "reshape of a non-contiguous tensor {}", shape_str());
  Tensor t(data, dtype, dims, device);
  KF_CHECK(t.numel() == numel(), "reshape {} -> {} changes the element count", shape_str(),
           t.shape_str());
  return t;
}

Buffer::Buffer(DType t, std::initializer_list<int64_t> dims, Allocator& alloc) : alloc_(&alloc) {
  view_ = Tensor(nullptr, t, dims, alloc.device());
  const size_t bytes = view_.nbytes();
  view_.data = alloc.allocate(bytes == 0 ? 64 : bytes);
}

Buffer::~Buffer() {
  if (view_.data) alloc_->deallocate(view_.data);
}

Buffer::Buffer(Buffer&& o) noexcept : view_(o.view_), alloc_(o.alloc_) { o.view_.data = nullptr; }

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (view_.data) alloc_->deallocate(view_.data);
    view_ = o.view_;
    alloc_ = o.alloc_;
    o.view_.data = nullptr;
  }
  return *this;
}

namespace {
class HostAllocator final : public Allocator {
 public:
  Device device() const override { return Device::CPU; }
  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    KF_CHECK(p != nullptr, "out of host memory allocating {} bytes", bytes);
    return p;
  }
  void deallocate(void* p) noexcept override { std::free(p); }
};
}  // namespace

Allocator& host_allocator() {
  static HostAllocator host;  // stateless: the one allocator every backend's host memory comes from
  return host;
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffffu;
  if (((u >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (man ? 0x200u : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    man |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (man >> 13);
  uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;
  return static_cast<uint16_t>(half);
}

}  // namespace kf
