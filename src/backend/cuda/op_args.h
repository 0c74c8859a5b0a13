// Checks of the CUDA backend's op arguments (each error names the tensor,
// its shape and what fits) and the launch arguments they become. Shared by
// CudaBackend's ops that launch the same kernels (qkv_rope_write, attention,
// qkv_attention).
#pragma once
#include "backend/backend.h"
#include "backend/cuda/kernels.h"

namespace kf::cuda {

// t is a contiguous CUDA tensor of dtype dt (what: its name in the error).
void need(const Tensor& t, DType dt, const char* what);
inline bf16_t* bptr(const Tensor& t) { return static_cast<bf16_t*>(t.data); }
inline int32_t* iptr(const Tensor& t) { return static_cast<int32_t*>(t.data); }
// The KV pool of a layer: bf16 K and V [pages, kv_heads, page_size, head_dim],
// F32 or BF16 summaries [pages, kv_heads, head_dim].
KvPool pool_of(const KvLayer& kv);
// Backend::qkv_rope_write's arguments.
QkvArgs qkv_args(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps, const Tensor& positions,
                 const RopeParams& rope, const KvLayer& kv, const Tensor& slots, const Tensor& q_out);
// Backend::attention's arguments.
AttnArgs attn_args(const Tensor& q, const KvLayer& kv, const AttnBatch& batch, const AttnPolicy& policy, float scale,
                   const Tensor& out, PageSelection* sel);

}  // namespace kf::cuda
