// BpeModel: byte-level BPE over one pre-tokenized piece, merging the pair of
// lowest rank first (the leftmost among equal ranks), as HF tokenizers' BPE
// does. Merges run on a priority queue over a linked list of symbols, and the
// result of each distinct piece is cached.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kf {

class BpeModel {
 public:
  BpeModel() = default;
  // vocab: id -> token as stored in tokenizer.json/GGUF (GPT-2 byte-level
  // characters); ids without a token may be empty strings. merges: pairs of
  // tokens in rank order. Throws kf::Error when a merge names an unknown token.
  BpeModel(const std::vector<std::string>& vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           bool ignore_merges);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;
  BpeModel(BpeModel&& o) noexcept;
  BpeModel& operator=(BpeModel&& o) noexcept;

  // Appends the ids of one piece of raw (UTF-8) bytes.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  // The bytes a token stands for (byte-level decoded; the raw text for tokens
  // outside the byte alphabet, as HF's ByteLevel decoder does).
  const std::string& token_bytes(int32_t id) const { return bytes_[id]; }
  // Id of the token whose bytes are exactly `bytes`, or -1.
  int32_t find_bytes(std::string_view bytes) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  std::vector<std::string> bytes_;   // id -> bytes
  StringMap id_of_bytes_;            // bytes -> id (tokens in the byte alphabet)
  int32_t byte_id_[256];             // single byte -> id, -1 if absent
  std::unordered_map<uint64_t, Merge> merges_;
  bool ignore_merges_ = false;

  // Cache of piece -> ids; guarded so one tokenizer can serve several threads.
  static constexpr size_t kCacheMaxEntries = 1 << 16;
  static constexpr size_t kCacheMaxPiece = 256;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace kf
