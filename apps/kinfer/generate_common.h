// Shared by `kinfer generate` and `kinfer bench generate`: the engine options,
// model/backend setup, prompt encoding, text decoding and stats as JSON.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "dist/placement.h"
#include "dist/replicas.h"
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
  std::string summary_dtype = "auto";  // page summaries: auto (the KV dtype) | int8
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
  std::string devices;         // GPU ordinals, one replica each (or per --tp GPUs)
  int num_gpus = 0;            // GPUs 0..n-1
  int tp = 1;                  // tensor parallelism: GPUs per replica
  int replicas = 1;            // CPU engine replicas (tests)
  bool no_graphs = false;
  bool no_overlap = false;
  bool prefix_cache = false;  // share full prompt pages across requests (EngineConfig::prefix_cache)
  bool profile = false;  // per-step host/device times and the bandwidth roofline in the stats
  int thinking_budget = -1;  // Qwen3 budget forcing: </think> after this many generated tokens (-1 = off)
};

// The model, device and engine flags (what `kinfer serve` takes too).
void add_engine_options(CLI::App& app, GenerateOptions& o);
// Engine flags plus one request's samples and sampling (generate, eval, bench generate).
void add_generate_options(CLI::App& app, GenerateOptions& o);
// --cpu-weights auto|native|bf16|f32 into `value` (model/weights.h WeightFormat).
void add_cpu_weights_option(CLI::App& app, std::string& value);
// --summary-dtype auto|int8 (EngineConfig::i8_summaries).
void add_summary_dtype_option(CLI::App& app, std::string& summary_dtype);

// The devices (placement), the model loaded on each replica, the tokenizer.
struct GenerateSetup {
  dist::Placement placement;
  std::vector<dist::Replica> replicas;
  ModelConfig config;  // the whole model's (a --tp replica runs shards of it)
  struct Text;  // tokenizer, when the model has one
  std::shared_ptr<Text> text;
  const Tokenizer* tokenizer() const;  // null for random:PRESET models
  double copy_gbps = 0;                // measured with --profile on a GPU
  Backend& backend() const { return replicas.at(0).backend(); }  // the first replica's (rank 0)
  const Model& model() const { return replicas.at(0).model(); }
  std::string backend_name() const;  // the backend, and the placement when it has several devices
};
GenerateSetup setup_generate(const GenerateOptions& o);
// Placement flags only (bench decode shares them).
dist::PlacementFlags placement_flags(const GenerateOptions& o);

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
// Engine config for these requests (sizes each replica's KV pool when
// --kv-pages is 0: its share of the requests, in the free memory of its GPUs).
EngineConfig engine_config(const GenerateOptions& o, const GenerateSetup& g, const std::vector<Request>& reqs);

// Submits `reqs` to the replicas and runs them: on_finished(request index,
// result) as each one ends and on_tick() about every 20 ms, both on the
// calling thread, until every request has finished.
void run_requests(dist::ReplicaSet& set, std::vector<Request> reqs,
                  const std::function<void(size_t, FinishedRequest&)>& on_finished,
                  const std::function<void()>& on_tick = {});
// One request's samples shared out over the replicas (dist::split_samples):
// the same samples, in order, as one engine gives. requests > the replicas:
// that many separate requests (each prefills its own copy of the prompt, as
// that many clients of a server would), the samples still the same.
std::vector<SampleResult> run_split(dist::ReplicaSet& set, const Request& req,
                                    const std::function<void()>& on_tick = {}, int requests = 1);

// The run's price in the Kinetics cost model (eFLOPs at the default hardware
// intensity), from the samples' real lengths.
nlohmann::json efflops_json(const EngineConfig& c, const GenerateSetup& g, int prompt_tokens,
                            const std::vector<SampleResult>& samples);
// Engine stats (summed over replicas, with each replica's share when there
// are several); with --profile also the host time per step by phase, the
// device time, and the run's bandwidth roofline (bytes the policy reads plus
// the weights, every step, over the copy bandwidth) with the achieved fraction.
// `before`: a replica_stats() snapshot; the stats are then those accrued since
// (a benchmark's untimed warm-up left out).
nlohmann::json stats_json(const dist::ReplicaSet& set, const GenerateSetup& g, int prompt_tokens,
                          const GenerateOptions& o, const std::vector<dist::ReplicaStats>& before = {});
// Each replica's stats accrued since `before` (empty: all of them).
std::vector<dist::ReplicaStats> replica_stats_since(const dist::ReplicaSet& set,
                                                    const std::vector<dist::ReplicaStats>& before);

}  // namespace kf::cli
