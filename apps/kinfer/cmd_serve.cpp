// `kinfer serve`: the OpenAI-compatible server (src/server/). Loads the model
// once, runs the engine loop in one thread and HTTP on a few I/O threads.
// SIGINT/SIGTERM: stop accepting, let in-flight requests finish within
// --shutdown-timeout (then cancel them), exit 0. --json prints one line when
// listening ({"event": "listening", "host", "port", ...}) and one at shutdown.
#include <sys/resource.h>

#include <atomic>
#include <csignal>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "commands.h"
#include "engine/engine.h"
#include "generate_common.h"
#include "server/http_server.h"
#include "server/server.h"
#include "util/error.h"

namespace kf::cli {
namespace {
std::atomic<int> g_signal{0};  // the SIGINT/SIGTERM received (lock-free: safe in a handler)
}  // namespace

int cmd_serve(int argc, char** argv) {
  CLI::App app{"OpenAI-compatible HTTP server (completions, chat, streaming, Best-of-N) over one engine",
               "kinfer serve"};
  GenerateOptions o;
  server::HttpServerOptions http;
  server::ServerOptions so;
  std::string served_name;
  double shutdown_timeout = 30;
  bool json = false;
  o.prefix_cache = true;  // the server's default (--no-prefix-cache)
  add_engine_options(app, o);
  app.add_option("--host", http.host, "address to listen on")->capture_default_str();
  app.add_option("--port", http.port, "port to listen on (0 = a free one, printed)")->capture_default_str();
  app.add_option("--served-model-name", served_name, "the model's name in the API (default: --model)");
  app.add_option("--api-key", so.api_key, "require 'Authorization: Bearer KEY' on /v1 (default: $KINFER_API_KEY)");
  app.add_option("--max-waiting", so.max_waiting, "requests waiting for their first token at most (more get 429)")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", shutdown_timeout, "seconds in-flight requests may take after SIGINT/SIGTERM")
      ->capture_default_str();
  app.add_option("--http-threads", http.threads, "I/O threads (connections are coroutines, not threads)")
      ->capture_default_str();
  app.add_option("--hardware", so.hardware, "hardware preset pricing usage.efflops (b200|h200|h100)")
      ->capture_default_str();
  app.add_flag("--json", json, "print the listening address and the shutdown summary as JSON lines");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(shutdown_timeout >= 0, "--shutdown-timeout must be >= 0 (got {})", shutdown_timeout);
  KF_CHECK(http.threads >= 1 && http.threads <= 256, "--http-threads must be in [1, 256] (got {})", http.threads);
  if (so.api_key.empty())
    if (const char* k = std::getenv("KINFER_API_KEY")) so.api_key = k;
  so.model_name = served_name.empty() ? o.model : served_name;

  // SIGINT/SIGTERM only set a flag (any thread may take them: OpenBLAS starts
  // its threads before main); this thread polls it.
  struct sigaction sa {};
  sa.sa_handler = [](int sig) { g_signal.store(sig); };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  rlimit files{};  // one descriptor per open connection: take the hard limit
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  GenerateSetup g = setup_generate(o);
  if (o.kv_pages == 0 && g.backend().device() == Device::CPU) {  // a CPU server takes 2 GB of KV, not half the RAM
    const int64_t page = kv_page_bytes(g.config, o.page_size, 4, o.summary_dtype == "int8");
    o.kv_pages = static_cast<int>(std::max<int64_t>(64, (int64_t{2} << 30) / std::max<int64_t>(1, page)));
  }
  EngineConfig ec = engine_config(o, g, {});
  const int kv_pages = ec.kv_pages;
  server::Server srv(g.replicas, g.config, g.tokenizer(), std::move(ec), so);
  server::HttpServer http_server(http, [&srv](const server::HttpRequest& r, const server::Notifier& wake) {
    return srv.handle(r, wake);
  });
  srv.start();
  http_server.start();
  const int port = http_server.port();
  if (json) {
    std::printf("%s\n", nlohmann::json{{"event", "listening"}, {"host", http.host}, {"port", port},
                                       {"model", so.model_name}, {"backend", g.backend_name()},
                                       {"kv_pages", kv_pages}, {"page_size", o.page_size},
                                       {"prefix_cache", o.prefix_cache}}
                            .dump()
                            .c_str());
    std::fflush(stdout);
  }
  std::fprintf(stderr, "kinfer serve: %s on http://%s:%d/v1 (%s, %d KV pages of %d tokens)\n", so.model_name.c_str(),
               http.host.c_str(), port, g.backend_name().c_str(), kv_pages, o.page_size);

  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int sig = g_signal.load();
  std::fprintf(stderr, "kinfer serve: %s: finishing in-flight requests (at most %.0f s)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM", shutdown_timeout);
  const auto t0 = std::chrono::steady_clock::now();
  http_server.stop_accepting();
  const int cancelled = srv.drain(std::chrono::milliseconds(static_cast<int64_t>(shutdown_timeout * 1000)));
  const auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (http_server.busy_connections() > 0 && std::chrono::steady_clock::now() < flush_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the last replies reach their clients
  srv.stop();
  http_server.stop();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json)
    std::printf("%s\n", nlohmann::json{{"event", "shutdown"}, {"cancelled", cancelled}, {"seconds", took}}.dump().c_str());
  std::fprintf(stderr, "kinfer serve: stopped after %.2f s (%d requests cancelled)\n", took, cancelled);
  return 0;
}

}  // namespace kf::cli
