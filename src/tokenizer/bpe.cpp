#include "tokenizer/bpe.h"

#include <algorithm>
#include <queue>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace kf {

BpeModel::BpeModel(const std::vector<std::string>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges)
    : ignore_merges_(ignore_merges) {
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  bytes_.resize(vocab.size());
  StringMap id_of_piece;  // byte-level text -> id, to resolve the merges
  id_of_piece.reserve(vocab.size());
  id_of_bytes_.reserve(vocab.size());
  std::string raw;
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string& piece = vocab[id];
    if (piece.empty()) continue;
    id_of_piece.emplace(piece, static_cast<int32_t>(id));
    if (utf8::byte_level_decode(piece, raw)) {
      bytes_[id] = raw;
      id_of_bytes_.emplace(raw, static_cast<int32_t>(id));
      if (raw.size() == 1) byte_id_[static_cast<uint8_t>(raw[0])] = static_cast<int32_t>(id);
    } else {
      bytes_[id] = piece;  // not a byte-level token (e.g. an added token): decodes to itself
    }
  }
  merges_.reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = id_of_piece.find(a), ib = id_of_piece.find(b);
    joined = a + b;
    auto ij = id_of_piece.find(joined);
    if (ia == id_of_piece.end() || ib == id_of_piece.end() || ij == id_of_piece.end())
      fail("BPE merge {} '{} {}' names a token that is not in the vocabulary", rank, a, b);
    // The first listing of a pair wins (a later duplicate has a worse rank).
    merges_.emplace(pair_key(ia->second, ib->second), Merge{static_cast<int32_t>(rank), ij->second});
  }
}

BpeModel::BpeModel(BpeModel&& o) noexcept { *this = std::move(o); }

BpeModel& BpeModel::operator=(BpeModel&& o) noexcept {
  if (this == &o) return *this;
  bytes_ = std::move(o.bytes_);
  id_of_bytes_ = std::move(o.id_of_bytes_);
  std::copy(std::begin(o.byte_id_), std::end(o.byte_id_), std::begin(byte_id_));
  merges_ = std::move(o.merges_);
  ignore_merges_ = o.ignore_merges_;
  std::lock_guard<std::mutex> lock(o.cache_mu_);
  cache_ = std::move(o.cache_);
  return *this;
}

int32_t BpeModel::find_bytes(std::string_view bytes) const {
  auto it = id_of_bytes_.find(bytes);
  return it == id_of_bytes_.end() ? -1 : it->second;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    int32_t id = byte_id_[static_cast<uint8_t>(piece[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  if (ignore_merges_) {
    int32_t id = find_bytes(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();  // bounded memory; rebuilding is cheap
    cache_.emplace(std::string(piece), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

void BpeModel::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  // Symbols form a doubly linked list; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
  };
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (unsigned char c : piece) {
    int32_t id = byte_id_[c];
    if (id < 0) continue;  // a byte the vocabulary lacks is dropped (no unk token in byte-level BPE)
    int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({id, k - 1, k + 1});
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  // Candidate merges ordered by (rank, position): the lowest rank, then the leftmost.
  struct Cand {
    int32_t rank, pos, new_id, right_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t left) {
    if (left < 0) return;
    int32_t right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(sym[left].id, sym[right].id));
    if (it != merges_.end()) heap.push({it->second.rank, left, it->second.new_id, sym[right].id});
  };
  for (int32_t k = 0; k + 1 < static_cast<int32_t>(sym.size()); ++k) push(k);

  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    // Stale candidate: the left symbol changed or its right neighbour did.
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = sym[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != c.new_id || right.id != c.right_id) continue;
    left.id = c.new_id;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = c.pos;
    if (left.prev >= 0) push(left.prev);
    push(c.pos);
  }
  for (int32_t k = 0; k >= 0; k = sym[k].next) out.push_back(sym[k].id);
}

}  // namespace kf
