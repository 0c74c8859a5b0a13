// PreTokenizer: splits normalised text into the pieces BPE merges within, as
// HF tokenizers' pre_tokenizer does (Split with a regex, Digits, ByteLevel's
// GPT-2 regex, or a Sequence of them). Regexes run on PCRE2 with Unicode
// properties (UTF + UCP) and JIT.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace kf {

// The regexes of the vocabularies we serve (HF tokenizer.json / llama.cpp names).
inline constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class PreTokenizer {
 public:
  // What happens to the regex matches (HF's SplitDelimiterBehavior).
  enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // From tokenizer.json's "pre_tokenizer" (null = no splitting). Throws kf::Error
  // for types a byte-level BPE does not use (Metaspace, Whitespace, ...).
  static PreTokenizer from_hf_json(const nlohmann::json& j);
  // From GGUF's tokenizer.ggml.pre ("gpt2", "smollm", "qwen2", "llama-bpe", ...).
  static PreTokenizer from_gguf_name(std::string_view name);

  void add_regex_split(const std::string& pattern, Behavior behavior, bool invert);
  void add_digits(bool individual);

  // Appends the pieces of `text` (views into it, none empty) to `out`.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  bool has_byte_level() const { return byte_level_; }
  bool add_prefix_space() const { return add_prefix_space_; }

 private:
  struct Step;
  void add_from_json(const nlohmann::json& j);
  std::vector<std::unique_ptr<Step>> steps_;
  bool byte_level_ = false;
  bool add_prefix_space_ = false;
};

}  // namespace kf
