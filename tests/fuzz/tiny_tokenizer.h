// The small tokenizer of the fuzz targets: a byte-level BPE with the Qwen2
// regex, digit splitting, a few merges and added tokens with every flag, so
// the fuzzer reaches each code path fast.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace kf::fuzz {

inline std::string tiny_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& table = kf::utf8::byte_level_table();
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    kf::utf8::append(s, table.byte_to_cp[b]);
    vocab[s] = id++;
  }
  const char* merges[][2] = {{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "Ġ"}, {"ĠĠ", "ĠĠ"},
                             {"Ċ", "Ċ"}, {"Ã", "©"}, {"1", "2"}, {"<", "|"}};
  nlohmann::json mj = nlohmann::json::array();
  for (auto& m : merges) {
    mj.push_back(std::string(m[0]) + " " + m[1]);
    vocab[std::string(m[0]) + m[1]] = id++;
  }
  auto added = [&](const char* content, bool special, bool lstrip, bool rstrip, bool single_word, bool normalized) {
    return nlohmann::json{{"id", id++},         {"content", content}, {"special", special},
                          {"lstrip", lstrip},   {"rstrip", rstrip},   {"single_word", single_word},
                          {"normalized", normalized}};
  };
  nlohmann::json added_tokens = {added("<|end|>", true, false, false, false, false),
                                 added("<|l|>", true, true, false, false, false),
                                 added("<r>", true, false, true, false, false),
                                 added("word", false, false, false, true, true),
                                 added("<think>", false, false, false, false, false)};
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", mj}}},
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", false}},
          {{"type", "Split"}, {"pattern", {{"Regex", kf::kQwen2Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  return j.dump();
}

}  // namespace kf::fuzz
