// Engine helpers shared by the engine, tensor-parallel and GPU tests.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "model/config.h"

namespace kf::test {

// Submits the requests, runs the engine until idle and returns each request's
// samples, in submission order.
inline std::vector<std::vector<SampleResult>> run_to_end(Engine& e, const std::vector<Request>& reqs) {
  std::vector<int64_t> ids;
  for (const Request& r : reqs) ids.push_back(e.submit(r));
  e.run();
  std::vector<std::vector<SampleResult>> out;
  for (int64_t id : ids) out.push_back(e.result(id));
  return out;
}

// The tiny model of the CPU engine tests: llama, 4 query heads over 2 KV
// heads of 8 dims, no EOS (samples stop by length or repetition).
inline ModelConfig tiny_llama_config() {
  ModelConfig c;
  c.arch = "llama";
  c.name = "tiny";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.max_position = 4096;
  c.rms_eps = 1e-5f;
  return c;
}

// The small GQA model of the GPU tests: Qwen3 with qk-norm, 8 query heads
// over 2 KV heads (group 4), head_dim 64 (a size the CUDA kernels take).
inline ModelConfig small_gqa_config() {
  ModelConfig c;
  c.arch = "qwen3";
  c.name = "small";
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.qk_norm = true;
  c.max_position = 4096;
  c.rms_eps = 1e-6f;
  c.rope_theta = 1e6f;
  c.tied_embeddings = true;
  return c;
}

}  // namespace kf::test
