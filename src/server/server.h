// Server: the OpenAI-compatible API over the engine replicas of a
// dist::ReplicaSet (one engine, or one per GPU with --devices: the same
// continuous-batching Engine that generate and eval use, each stepped by its
// replica's thread). The server's loop thread routes finished requests to
// their jobs; HTTP threads validate, submit (ReplicaSet::submit is
// thread-safe) and poll their job, which the engine's streams wake. Routes:
//   GET  /health, /metrics (Prometheus text), /v1/models[/NAME]
//   POST /v1/completions, /v1/chat/completions
// Errors are OpenAI error objects: 400 bad JSON / field / range / context,
// 401 missing API key, 404 unknown model or path, 405 wrong method, 429 when
// more than --max-waiting requests wait for their first token, 503 while
// shutting down.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "dist/replicas.h"
#include "engine/engine.h"
#include "server/http.h"
#include "server/job.h"

namespace kf::server {

struct ServerOptions {
  std::string model_name = "default";  // what /v1/models lists and requests name
  std::string api_key;                 // "" = no authentication
  int max_waiting = 1024;              // requests waiting for their first token at most
  std::string hardware = "b200";       // prices usage.efflops
};

class Server {
 public:
  // One engine per replica (dist::load_replicas; a --tp replica's engine
  // spans its ranks); `replicas` must outlive the server. `whole` is the
  // whole model's config (what requests are checked and priced against).
  // tok may be null (random:PRESET models: token-id prompts only).
  Server(std::vector<dist::Replica>& replicas, const ModelConfig& whole, const Tokenizer* tok, EngineConfig cfg,
         ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void start();  // the loop thread
  Reply handle(const HttpRequest& req, const Notifier& wake);  // the HTTP handler (any I/O thread)

  // Graceful shutdown: new generation requests get 503; waits up to `timeout`
  // for the jobs in flight, then cancels what is left. Returns the jobs cancelled.
  int drain(std::chrono::milliseconds timeout);
  void stop();  // joins the loop
  int64_t jobs_in_flight() const;
  std::string metrics() const;

 private:
  Reply generate(Endpoint ep, const HttpRequest& req, const Notifier& wake);
  void loop();
  void job_done(const JobTotals& t);
  void count(int status);

  const Tokenizer* tok_;
  ServerOptions opt_;
  JobContext ctx_;
  ApiLimits limits_;
  std::atomic<int64_t> waiting_{0};  // engine requests without a first event (declared before set_)
  std::unique_ptr<dist::ReplicaSet> set_;
  std::thread thread_;
  std::atomic<bool> stop_{false}, draining_{false}, broken_{false};

  mutable std::mutex jobs_mu_;
  std::unordered_map<int64_t, std::shared_ptr<Job>> by_engine_id_;  // engine request -> job

  // /metrics: the engine's state as of its last step, and running totals.
  std::atomic<int64_t> running_{0}, waiting_seqs_{0}, kv_used_{0}, kv_cached_{0}, prefix_routed_{0};
  mutable std::mutex metrics_mu_;
  EngineStats engine_;  // the replicas' merged stats, read by loop() every 50 ms at most (under metrics_mu_)
  std::map<int, int64_t> requests_by_status_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0, kv_bytes_read_ = 0;
  double efflops_ = 0;
};

}  // namespace kf::server
