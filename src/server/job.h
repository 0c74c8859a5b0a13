// Job: one completions / chat request being served. It is the reply's
// BodySource: the engine's events (tokens, logprobs, sample ends) arrive
// through one RequestStream per prompt, the finished results through
// finish() from the engine loop, and poll() turns them into OpenAI JSON: one
// body, or Server-Sent Events chunks ending with `data: [DONE]`.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/api.h"
#include "server/http.h"
#include "server/text.h"

namespace kf::server {

// What a job needs from the server to price and describe its work.
struct JobContext {
  const Tokenizer* tok = nullptr;
  const ModelConfig* model = nullptr;
  std::string model_name;
  AttnPolicy default_policy;
  int page_size = 16;
  bool i8_summaries = false;  // the engine's page summaries (priced by the cost model)
  double intensity = 0;  // eFLOPs pricing (hardware arithmetic intensity)
  std::string hardware;
};

// Totals of a finished job, for /metrics.
struct JobTotals {
  int status = 200;  // 200, or 499: the client went away first
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double efflops = 0;
  int64_t kv_bytes_read = 0;
};

class Job : public BodySource {
 public:
  // wake: the connection's notifier (finish() pulls it); cancel_engine(id)
  // cancels an engine request; on_done(totals) runs once when the job's
  // outcome is known (any thread).
  Job(GenParams params, const JobContext& ctx, Notifier wake, std::function<void(int64_t)> cancel_engine,
      std::function<void(const JobTotals&)> on_done);
  ~Job() override;

  // The engine requests to submit (one per prompt), each with its stream,
  // whose events call a callback made by make_on_push (it wakes the connection).
  std::vector<Request> requests(const std::function<std::function<void()>()>& make_on_push);
  void set_engine_ids(std::vector<int64_t> ids);
  const std::vector<int64_t>& engine_ids() const { return ids_; }
  int samples_per_request() const { return p_.n; }
  void finish(FinishedRequest f);  // from the engine loop

  bool poll(std::string& out, int& status) override;
  void cancel() override;

 private:
  struct Choice {
    SampleText text;
    std::vector<TokenLogprob> logprobs;
    std::vector<int> tokens;
    size_t lp_sent = 0;   // logprobs already streamed
    bool role_sent = false, ended = false;
    StopReason stop = StopReason::None;
  };
  void drain_events(std::string& out);
  void emit_chunk(std::string& out, int index, const TextDelta& d, const std::vector<TokenLogprob>& lps,
                  const char* finish_reason, bool first);
  nlohmann::json usage() const;
  std::string full_body() const;
  nlohmann::json logprobs_json(const std::vector<TokenLogprob>& lps, const std::vector<TokenLogprob>* prompt,
                               const std::vector<int>* prompt_ids, size_t text_offset) const;
  std::string token_text(int id) const;
  void done(int status);

  GenParams p_;
  const JobContext& ctx_;
  Notifier wake_;
  std::function<void(int64_t)> cancel_engine_;
  std::function<void(const JobTotals&)> on_done_;
  std::string id_;
  int64_t created_ = 0;
  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::vector<int64_t> ids_;

  std::mutex mu_;  // everything below (poll and cancel on the connection, finish on the engine loop)
  std::vector<std::optional<FinishedRequest>> results_;
  std::vector<Choice> choices_;  // prompt-major: choice i = prompt i / n, sample i % n
  bool echo_sent_ = false;
  bool reported_ = false;
};

}  // namespace kf::server
