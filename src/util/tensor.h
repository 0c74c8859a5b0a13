// Tensor: a non-owning view (pointer, dtype, shape, strides, device).
// Buffer: an owning, RAII allocation on one device. Views never free memory.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "util/error.h"

namespace kf {

enum class Device : uint8_t { CPU, CUDA };

// Storage types. The GGUF block types (Q8_0 .. Q6_K, layouts in
// util/dequant.h) are weights the CPU backend multiplies as they are (CUDA
// converts them to BF16 at load). Q8_0x4, Q4_0x4 and Q4_1x4 hold the same
// blocks with four rows interleaved, the CPU's matmul layout (defined in
// backend/cpu/packed_weights.h); their sizes are those of the plain types.
enum class DType : uint8_t { F32, F16, BF16, I32, I64, U8, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, Q8_0x4, Q4_0x4, Q4_1x4 };

const char* dtype_name(DType t);
// Bytes of n elements (n must be a multiple of the block size for quantised types).
size_t dtype_bytes(DType t, int64_t n);
// Elements per quantisation block (1 for plain types).
int dtype_block(DType t);

constexpr int kMaxDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};    // elements per dim
  std::array<int64_t, kMaxDims> strides{};  // elements, row-major contiguous unless built otherwise

  Tensor() = default;
  Tensor(void* p, DType t, std::initializer_list<int64_t> dims, Device dev = Device::CPU);

  int64_t numel() const;
  size_t nbytes() const { return dtype_bytes(dtype, numel()); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  bool is_contiguous() const;
  std::string shape_str() const;  // "[2, 3]"

  template <typename T> T* ptr() const { return static_cast<T*>(data); }
  // Rows [r0, r0+n) along dim 0 (a view into the same memory).
  Tensor rows(int64_t r0, int64_t n) const;
  // Same memory, new shape with the same number of elements (contiguous only).
  Tensor reshape(std::initializer_list<int64_t> dims) const;
};

// Where a Buffer's memory comes from. host_allocator() gives 64-byte aligned
// host memory; every Backend is an Allocator for its own device (a CUDA
// backend allocates on its GPU whatever GPU is current), so device memory is
// always asked of the backend that will use it.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;
  virtual void* allocate(size_t bytes) = 0;  // throws kf::Error when out of memory
  virtual void deallocate(void* p) noexcept = 0;
};
Allocator& host_allocator();

// An owned allocation from an Allocator (host memory by default).
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType t, std::initializer_list<int64_t> dims, Allocator& alloc = host_allocator());
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  const Tensor& view() const { return view_; }
  Tensor& view() { return view_; }
  operator const Tensor&() const { return view_; }
  template <typename T> T* ptr() const { return view_.ptr<T>(); }
  bool empty() const { return view_.data == nullptr; }

 private:
  Tensor view_;
  Allocator* alloc_ = nullptr;
};

// bf16/f16 <-> f32 conversions (round to nearest even for f32 -> bf16).
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace kf
