// kinfer bench tokenize: encode tokens/s on the GSM8K and MATH500 texts,
// single thread; with --hf, HF tokenizers on the same texts in the same run
// (tools/bench_hf_tokenize.py) and the ratio.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cli {
namespace {

// The question/answer (GSM8K) and problem/solution (MATH500) texts.
std::vector<std::string> load_texts(const std::string& dir) {
  std::vector<std::string> texts;
  const std::pair<const char*, std::vector<const char*>> files[] = {{"gsm8k.jsonl", {"question", "answer"}},
                                                                    {"math500.jsonl", {"problem", "solution"}}};
  for (const auto& [file, keys] : files) {
    std::string path = dir + "/" + file;
    std::ifstream in(path);
    KF_CHECK(in, "cannot open {} (pass --data DIR with gsm8k.jsonl and math500.jsonl)", path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      KF_CHECK(!j.is_discarded(), "{}: a line is not JSON", path);
      for (const char* k : keys)
        if (j.contains(k) && j[k].is_string()) texts.push_back(j[k].get<std::string>());
    }
  }
  return texts;
}

std::string run_capture(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  KF_CHECK(p, "cannot run {}", cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

int bench_tokenize(int argc, char** argv) {
  CLI::App app{"Tokenizer encode throughput on GSM8K + MATH500 (single thread)", "kinfer bench tokenize"};
  std::string model = "default";
  std::string data = std::string(KINFER_SOURCE_DIR) + "/../shared/data";
  int repeat = 5;
  bool hf = false, json = false;
  app.add_option("--model,-m", model, "GGUF file, HF directory, tokenizer.json or 'default'");
  app.add_option("--data", data, "directory with gsm8k.jsonl and math500.jsonl");
  app.add_option("--repeat", repeat, "timed passes over all texts (best is reported)")->check(CLI::Range(1, 1000));
  app.add_flag("--hf", hf, "also time HF tokenizers (python3 tools/bench_hf_tokenize.py) on the same texts");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  Tokenizer tok = load_tokenizer(model);
  double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  std::vector<std::string> texts = load_texts(data);
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();

  // Pass 0 is the cold one (empty word cache); the timed passes follow it.
  std::vector<double> secs;
  size_t tokens = 0;
  for (int pass = 0; pass <= repeat; ++pass) {
    auto a = clock::now();
    size_t n = 0;
    for (const auto& t : texts) n += tok.encode(t).size();
    secs.push_back(std::chrono::duration<double>(clock::now() - a).count());
    tokens = n;
  }
  double cold = secs[0];
  double best = *std::min_element(secs.begin() + 1, secs.end());
  nlohmann::json j = {{"bench", "tokenize"},
                      {"model", model},
                      {"texts", texts.size()},
                      {"bytes", bytes},
                      {"tokens", tokens},
                      {"threads", 1},
                      {"load_s", load_s},
                      {"kinfer", {{"cold_s", cold}, {"best_s", best}, {"tokens_per_s", tokens / best},
                                  {"cold_tokens_per_s", tokens / cold}, {"mb_per_s", bytes / best / 1e6}}}};
  if (hf) {
    std::string script = std::string(KINFER_SOURCE_DIR) + "/tools/bench_hf_tokenize.py";
    std::string cmd = "python3 " + shell_quote(script) + " --model " + shell_quote(model) + " --data " +
                      shell_quote(data) + " --repeat " + std::to_string(repeat);
    auto r = nlohmann::json::parse(run_capture(cmd), nullptr, false);
    KF_CHECK(!r.is_discarded() && r.contains("tokens_per_s"), "{} gave no result (pip install tokenizers gguf?)",
             script);
    j["hf"] = r;
    j["speedup_vs_hf"] = (tokens / best) / r["tokens_per_s"].get<double>();
    if (r.value("tokens", size_t{0}) != tokens) j["warning"] = "HF counted a different number of tokens";
  }
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("tokenize %s: %zu texts, %.2f MB, %zu tokens (load %.2f s)\n", model.c_str(), texts.size(), bytes / 1e6,
              tokens, load_s);
  std::printf("  kinfer: %.0f tokens/s (best of %d), cold pass %.0f tokens/s, %.1f MB/s\n", tokens / best, repeat,
              tokens / cold, bytes / best / 1e6);
  if (hf)
    std::printf("  HF tokenizers %s: %.0f tokens/s -> kinfer is %.2fx\n", j["hf"].value("version", "?").c_str(),
                j["hf"]["tokens_per_s"].get<double>(), j["speedup_vs_hf"].get<double>());
  return 0;
}

}  // namespace kf::cli
