// Helpers for the CUDA kernel tests: random bf16-exact data, host <-> device
// copies through the backend, and error norms.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "util/tensor.h"

#define KF_REQUIRE_CUDA()                                                   \
  do {                                                                      \
    if (::kf::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: CUDA kernel tests skipped"; \
  } while (0)

namespace kf::test {

// A CUDA backend made with switches of the environment set (read at construction).
inline std::unique_ptr<Backend> cuda_backend_with(std::initializer_list<std::pair<const char*, std::string>> vars) {
  struct Unset {  // also when the backend refuses a value
    std::vector<const char*> vars;
    ~Unset() {
      for (const char* v : vars) unsetenv(v);
    }
  } unset;
  for (const auto& [var, value] : vars) {
    unset.vars.push_back(var);
    setenv(var, value.c_str(), 1);
  }
  return make_cuda_backend(0);
}
inline std::unique_ptr<Backend> cuda_backend_with(const char* var, const std::string& value) {
  return cuda_backend_with({{var, value}});
}

// Uniform values in [lo, hi), rounded to bf16 so both backends see the same numbers.
inline std::vector<float> rand_bf16(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(u(rng)));
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  return h;
}

inline Buffer dev_bf16(Backend& b, const std::vector<float>& v, std::initializer_list<int64_t> shape) {
  Buffer buf(DType::BF16, shape, b);
  EXPECT_EQ(static_cast<size_t>(buf.view().numel()), v.size());
  std::vector<uint16_t> h = to_bf16(v);
  b.upload(buf, h.data());
  return buf;
}

inline Buffer dev_f32(Backend& b, const std::vector<float>& v, std::initializer_list<int64_t> shape) {
  Buffer buf(DType::F32, shape, b);
  b.upload(buf, v.data());
  return buf;
}

inline Buffer dev_i32(Backend& b, const std::vector<int32_t>& v, std::initializer_list<int64_t> shape) {
  Buffer buf(DType::I32, shape, b);
  if (!v.empty()) b.upload(buf, v.data());
  return buf;
}

// Fills a device bf16 tensor with NaN so unwritten outputs show.
inline void poison(Backend& b, const Tensor& t) {
  std::vector<uint16_t> h(t.numel(), 0xffff);
  b.upload(t, h.data());
}

inline std::vector<float> host_bf16(Backend& b, const Tensor& t) {
  std::vector<uint16_t> h(t.numel());
  b.download(h.data(), t);
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = bf16_to_f32(h[i]);
  return v;
}

inline std::vector<float> host_f32(Backend& b, const Tensor& t) {
  std::vector<float> v(t.numel());
  b.download(v.data(), t);
  return v;
}

inline std::vector<int32_t> host_i32(Backend& b, const Tensor& t) {
  std::vector<int32_t> v(t.numel());
  b.download(v.data(), t);
  return v;
}

// ||a - ref|| / ||ref|| (NaN anywhere -> +inf).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(ref[i])) return INFINITY;
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& ref) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - ref[i]));
  return m;
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

}  // namespace kf::test
