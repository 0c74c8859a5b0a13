// Shared by `kinfer generate` and `kinfer bench generate`: the engine options,
// model/backend setup, prompt encoding, text decoding and stats as JSON.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/engine.h"
#include "model/model.h"

namespace kf {
class StreamDecoder;
class Tokenizer;
}

namespace kf::cli {

struct GenerateOptions {
  std::string model = "default";
  int n = 1;
  int max_tokens = 256;
  std::string attn = "dense";
  int page_size = 16;
  int topk_pages = 64;
  int local_pages = 4;
  int kv_pages = 0;  // 0 = enough for every sample, capped by free memory
  std::string dense_layers;
  uint64_t seed = 0;
  float temp = 0.6f, top_p = 0.95f, min_p = 0.f, repetition_penalty = 1.f, presence_penalty = 0.f;
  int top_k = 20;  // DESIGN.md: Qwen3 thinking defaults (T 0.6, top-p 0.95, top-k 20)
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_repetition_stop = false;
  float frequency_penalty = 0.f;
  int max_step_tokens = 0;  // 0 = 512 on the CPU, 8192 on a GPU
  int max_seqs = 0;         // 0 = 256 on the CPU, 1024 on a GPU
  int max_model_len = 0;    // 0 = the model's max_position_embeddings
  double gpu_memory = 0.9;  // fraction of the GPU's free memory the KV pool may take
  int threads = 0;
  std::string cpu_weights = "auto";  // WeightFormat: auto | native | bf16 | f32
  std::string device = "cpu";  // cpu | cuda
  bool no_graphs = false;
  bool no_overlap = false;
  bool profile = false;  // per-step host/device times and the bandwidth roofline in the stats
};

void add_generate_options(CLI::App& app, GenerateOptions& o);
// --cpu-weights auto|native|bf16|f32 into `value` (model/weights.h WeightFormat).
void add_cpu_weights_option(CLI::App& app, std::string& value);

struct GenerateSetup {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  struct Text;  // tokenizer, when the model has one
  std::shared_ptr<Text> text;
  const Tokenizer* tokenizer() const;  // null for random:PRESET models
  double copy_gbps = 0;                // measured with --profile on a GPU
};
GenerateSetup setup_generate(const GenerateOptions& o);

std::vector<int> parse_token_ids(const std::string& s, int vocab);
// Tokenizes a prompt; chat = wrap as a user message in the chat template.
std::vector<int> encode_prompt(const GenerateSetup& g, const std::string& text, bool chat);
// The sample's text (cut at the first stop string), or "" without a tokenizer.
std::string sample_text(const GenerateSetup& g, const SampleResult& s, const GenerateOptions& o);

// Incremental detokenizer for streaming: returns complete UTF-8 text so far.
// Without a tokenizer it prints token ids.
class TextStream {
 public:
  explicit TextStream(const GenerateSetup& g);
  ~TextStream();
  std::string push(int token);
  std::string flush();

 private:
  std::unique_ptr<StreamDecoder> dec_;
};

Request make_request(const GenerateOptions& o, const GenerateSetup& g, const std::vector<int>& prompt);
// Engine config for these requests (sizes the KV pool when --kv-pages is 0).
EngineConfig engine_config(const GenerateOptions& o, const GenerateSetup& g, const std::vector<Request>& reqs);
// The run's price in the Kinetics cost model (eFLOPs at the default hardware
// intensity), from the samples' real lengths.
nlohmann::json efflops_json(const Engine& e, const GenerateSetup& g, int prompt_tokens,
                            const std::vector<SampleResult>& samples);
// Engine stats; with --profile also the host time per step by phase, the
// device time, and the run's bandwidth roofline (bytes the policy reads plus
// the weights, every step, over the copy bandwidth) with the achieved fraction.
nlohmann::json stats_json(const Engine& e, const GenerateSetup& g, int prompt_tokens, const GenerateOptions& o);

}  // namespace kf::cli
