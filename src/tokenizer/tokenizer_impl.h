// Tokenizer::Impl: the data behind a Tokenizer, shared by tokenizer.cpp
// (encode/decode) and tokenizer_load.cpp (the tokenizer.json and GGUF loaders).
#pragma once
#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace kf {

enum class NormStep { NFC, NFD, NFKC, NFKD, Lowercase };

struct Tokenizer::Impl {
  std::string name;  // file, for errors
  BpeModel bpe;      // model vocabulary (added-only ids are holes in it)
  PreTokenizer pre;
  std::vector<NormStep> normalizer;

  std::vector<std::string> pieces;  // id -> vocabulary string / added token text
  std::vector<std::string> bytes;   // id -> decoded bytes
  std::unordered_map<std::string, int32_t> piece_to_id;
  std::vector<uint8_t> special;     // id -> 1 for special tokens

  std::vector<AddedToken> added;
  // Indices into `added` by first byte, longest first, for the raw and the
  // normalised matching passes.
  std::array<std::vector<int32_t>, 256> raw_by_first, norm_by_first;
  std::array<bool, 256> raw_first{}, norm_first{};

  int32_t bos = -1;
  std::vector<int32_t> eos;
  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor (add_special)
  std::string chat_template;

  // Fills the lookup tables from pieces/added/special once the loader is done.
  void finish();
};

}  // namespace kf
