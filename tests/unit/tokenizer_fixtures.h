// Shared by the tokenizer tests: the gzipped fixtures of
// tools/make_tokenizer_fixtures.py and the two reference tokenizers (Qwen3's
// tokenizer.json, SmolLM2's GGUF), each loaded once per test binary.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace kf::test {

inline std::string fixture_dir() { return std::string(KINFER_SOURCE_DIR) + "/tests/fixtures/tokenizer"; }

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// gzip is in every Debian base system, so the fixtures stay small without a zlib dependency.
inline std::string read_gz(const std::string& path) {
  std::string cmd = "gzip -dc '" + path + "'";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  if (out.empty()) throw std::runtime_error("empty output from " + cmd);
  return out;
}

inline std::vector<nlohmann::json> read_jsonl_gz(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_gz(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// A corpus line's raw input bytes.
inline std::string corpus_input(const nlohmann::json& item) {
  return item.contains("t") ? item["t"].get<std::string>() : from_hex(item["b"].get<std::string>());
}

inline const Tokenizer& qwen3_tokenizer() {
  static const Tokenizer tok = Tokenizer::from_hf_json_text(
      read_gz(fixture_dir() + "/qwen3/tokenizer.json.gz"), read_text(fixture_dir() + "/qwen3/tokenizer_config.json"),
      "qwen3/tokenizer.json");
  return tok;
}

inline const Tokenizer& smollm2_tokenizer() {
  static const Tokenizer tok = [] {
    GgufFile g(resolve_default_model());
    return Tokenizer::from_gguf(g);
  }();
  return tok;
}

// A small BPE trained by the fixture script with Llama-3's pipeline (regex,
// ignore_merges, BOS post-processor), NFKC and lstrip/rstrip/normalized added tokens.
inline const Tokenizer& llama3tiny_tokenizer() {
  static const Tokenizer tok = Tokenizer::from_hf_json_text(
      read_gz(fixture_dir() + "/llama3tiny_tokenizer.json.gz"), "", "llama3tiny_tokenizer.json");
  return tok;
}

inline const Tokenizer& tokenizer_named(const std::string& name) {
  if (name == "smollm2") return smollm2_tokenizer();
  if (name == "llama3tiny") return llama3tiny_tokenizer();
  return qwen3_tokenizer();
}

inline std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

}  // namespace kf::test
