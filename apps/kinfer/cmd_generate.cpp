// `kinfer generate`: sample one prompt n times (Best-of-N) through the engine:
// paged KV cache shared by the samples, attention policy, sampling, stop rules.
// With several replicas (--devices) the samples are shared out over them.
// Streams text (n = 1) or prints each sample; --json prints one object
// {"samples":[{"text","tokens","stop_reason"}...],"stats":{...}}.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "dist/replicas.h"
#include "engine/engine.h"
#include "generate_common.h"
#include "util/progress.h"

namespace kf::cli {

int cmd_generate(int argc, char** argv) {
  CLI::App app{"Generate n samples of one prompt with the engine (paged KV, attention policies, sampling)",
               "kinfer generate"};
  GenerateOptions o;
  std::string prompt, chat, prompt_ids;
  bool json = false, progress = false, no_progress = false;
  add_generate_options(app, o);
  app.add_option("--prompt", prompt, "prompt text (raw, no chat template)");
  app.add_option("--chat", chat, "user message, wrapped in the model's chat template");
  app.add_option("--prompt-ids", prompt_ids, "prompt as token ids, e.g. 504,3575,282");
  app.add_flag("--progress", progress, "show the progress bar even when stderr is not a terminal");
  app.add_flag("--no-progress", no_progress, "never show the progress bar");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  const bool by_text = app.count("--prompt") > 0, by_chat = app.count("--chat") > 0,
             by_ids = app.count("--prompt-ids") > 0;
  KF_CHECK(by_text + by_chat + by_ids == 1, "give exactly one of --prompt, --chat or --prompt-ids");
  // An empty chat message still has its template's tokens; raw text or ids need one.
  KF_CHECK(!(by_text && prompt.empty()), "--prompt is empty: the model needs at least one token");
  KF_CHECK(!(by_ids && prompt_ids.empty()), "--prompt-ids is empty: give token ids, e.g. 504,3575");

  auto t_load = std::chrono::steady_clock::now();
  GenerateSetup g = setup_generate(o);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::vector<int> ids = by_ids ? parse_token_ids(prompt_ids, g.config.vocab_size)
                                : encode_prompt(g, by_chat ? chat : prompt, by_chat);

  Request req = make_request(o, g, ids);
  // One engine per replica; the samples are shared out over them.
  dist::ReplicaSet set(g.replicas, engine_config(o, g, {req}));
  // Stream text when one sample goes to stdout; otherwise show progress.
  const bool stream = !json && o.n == 1;
  TextStream streamer(g);
  Progress bar("generate", static_cast<int64_t>(o.n) * o.max_tokens, "tok", progress);
  const bool show_bar = bar.enabled() && !no_progress && !stream;
  if (stream) req.stream = std::make_shared<RequestStream>();
  std::shared_ptr<RequestStream> events = req.stream;
  auto drain = [&] {
    if (events)
      for (const StreamEvent& ev : events->wait(std::chrono::milliseconds(0)))
        for (int token : ev.tokens) {
          const std::string piece = streamer.push(token);
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        }
    if (show_bar) bar.update(set.generated_tokens());
  };
  const std::vector<SampleResult> samples = run_split(set, req, drain);
  drain();
  bar.finish();
  if (stream) {
    std::string rest = streamer.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
  }

  nlohmann::json stats = stats_json(set, g, static_cast<int>(ids.size()), o);
  stats["load_s"] = load_s;
  stats["efflops"] = efflops_json(set.config(), g, static_cast<int>(ids.size()), samples);
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const SampleResult& s : samples) {
      nlohmann::json js = {{"text", sample_text(g, s, o)}, {"tokens", s.tokens},
                           {"stop_reason", stop_reason_name(s.stop)}};
      if (!s.error.empty()) js["error"] = s.error;
      if (s.thinking_cut >= 0) js["thinking_cut"] = s.thinking_cut;
      arr.push_back(js);
    }
    nlohmann::json j = {{"prompt_tokens", ids.size()}, {"samples", arr}, {"stats", stats}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (size_t i = 0; i < samples.size(); ++i) {
      const SampleResult& s = samples[i];
      if (!stream) std::printf("--- sample %zu (%zu tokens, stop: %s) ---\n%s\n", i, s.tokens.size(),
                               stop_reason_name(s.stop), sample_text(g, s, o).c_str());
      if (!s.error.empty()) std::fprintf(stderr, "kinfer generate: sample %zu failed: %s\n", i, s.error.c_str());
    }
    if (stream) std::printf("\n");
    const EngineStats st = set.stats();
    std::fprintf(stderr, "[%lld tokens in %.2f s: prefill %.1f tok/s, decode %.1f tok/s, KV pages peak %d of %d]\n",
                 static_cast<long long>(st.generated_tokens), st.wall_seconds, st.prefill_tok_s(), st.decode_tok_s(),
                 st.kv_pages_peak, st.kv_pages);
  }
  for (const SampleResult& s : samples)
    if (s.stop == StopReason::Error) return 1;
  return 0;
}

}  // namespace kf::cli
