// `kinfer bench generate`: Best-of-N generation throughput through the engine.
// Every sample runs to --max-tokens (EOS and the repetition stop are ignored),
// so dense and blocktopk do the same number of steps and compare directly.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_checks.h"
#include "bench.h"
#include "dist/replicas.h"
#include "generate_common.h"
#include "util/progress.h"

namespace kf::cli {

int bench_generate(int argc, char** argv) {
  CLI::App app{"Best-of-N generation throughput: tokens/s and KV bytes read per token", "kinfer bench generate"};
  GenerateOptions o;
  o.n = 8;
  o.max_tokens = 512;
  std::string chat = "Solve step by step: a train travels 120 km in 1.5 hours. What is its average speed?";
  bool json = false;
  int warmup = 1, requests = 1;
  add_generate_options(app, o);
  app.add_option("--requests", requests,
                 "the n samples as this many separate requests, each prefilling its own copy of the prompt (the "
                 "work of as many server clients; with --prefix-cache the first prefills it and the others wait a "
                 "step, then compute its last two rows); 1: one request whose samples share the prompt's pages")
      ->capture_default_str()
      ->check(kf::cli::kPositive);
  app.add_option("--warmup", warmup,
                 "untimed passes of the same request first, cut to 8 tokens a sample (graphs, kernel plans and "
                 "lazily loaded kernels are then ready; the stats leave them out)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--chat", chat, "user message (chat template applied)")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  o.ignore_eos = true;
  o.no_repetition_stop = true;
  KF_CHECK(requests <= o.n, "--requests {} is more than the {} samples (-n)", requests, o.n);

  GenerateSetup g = setup_generate(o);
  std::vector<int> ids;
  if (g.text) {
    ids = encode_prompt(g, chat, true);
  } else {  // random:PRESET: a fixed pseudo-prompt of 64 ids
    for (int i = 0; i < 64; ++i) ids.push_back((i * 7919 + 13) % g.config.vocab_size);
  }
  Request req = make_request(o, g, ids);
  dist::ReplicaSet set(g.replicas, engine_config(o, g, {req}));
  GenerateOptions warm_o = o;
  warm_o.max_tokens = std::min(o.max_tokens, 8);
  const Request warm_req = make_request(warm_o, g, ids);
  for (int i = 0; i < warmup; ++i) run_split(set, warm_req, {}, requests);
  const std::vector<dist::ReplicaStats> before = set.replica_stats();
  const int64_t warm_tokens = set.generated_tokens();
  Progress bar("bench generate", static_cast<int64_t>(o.n) * o.max_tokens, "tok");  // on a terminal only
  const std::vector<SampleResult> samples =  // the samples shared out over the replicas
      run_split(set, req, [&] { bar.update(set.generated_tokens() - warm_tokens); }, requests);
  bar.finish();

  nlohmann::json j = stats_json(set, g, static_cast<int>(ids.size()), o, before);
  const EngineStats s = dist::merge_stats(replica_stats_since(set, before));
  j["bench"] = "generate";
  j["max_tokens"] = o.max_tokens;
  j["threads"] = o.threads;
  j["warmup"] = warmup;
  j["requests"] = requests;
  j["kv_bytes_read_total"] = s.kv_bytes_read;
  j["efflops"] = efflops_json(set.config(), g, static_cast<int>(ids.size()), samples);
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("generate %s n=%d max_tokens=%d (%s): %.1f tok/s overall, decode %.1f tok/s, prefill %.1f tok/s\n",
                attn_kind_name(set.config().policy.kind), o.n, o.max_tokens, g.backend_name().c_str(),
                j["gen_tok_s"].get<double>(), s.decode_tok_s(), s.prefill_tok_s());
    std::printf("  KV read per decoded token %.0f bytes, pages per (row, layer, head) %.2f, KV pages peak %d\n",
                j["kv_bytes_read_per_token"].get<double>(), s.pages_read_per_step(), s.kv_pages_peak);
    if (o.prefix_cache)
      std::printf("  prefix cache: %lld prompt rows shared, %lld prefill rows computed\n",
                  static_cast<long long>(s.prefix_cached_rows), static_cast<long long>(s.prefill_tokens));
  }
  return 0;
}

}  // namespace kf::cli
