// PrefixAffinity: which prompt prefixes a replica has been given (and, under
// dense attention, the prompts and answers of what it finished, whose pages
// its cache indexed too), so that a request goes where its prefix cache
// likely holds the request's first pages (ReplicaSet's routing with
// --prefix-cache, dist/replicas.h).
//
// A prompt is seen as the chained hashes of its first full pages, the same
// chain the KV cache's prefix index uses (kv/kv_cache.h prefix_hash), up to
// max_pages pages. A replica's record keeps the hashes of the prompts it took,
// the least recently used forgotten beyond `capacity`. It is a guess of the
// replica's cache, not a copy: the cache may have evicted pages since, and a
// hash collision only sends a request to another replica (the cache itself
// compares token ids before it shares a page).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace kf::dist {

class PrefixAffinity {
 public:
  explicit PrefixAffinity(int page_size, size_t capacity = size_t{1} << 16, int max_pages = 256);

  // The chained hashes of the prompt's first full pages (at most max_pages).
  std::vector<uint64_t> page_hashes(std::span<const int> prompt) const;
  // How many of `hashes`, from the first, this record holds.
  int match(std::span<const uint64_t> hashes) const;
  // Remembers a prompt's hashes (as the most recently used).
  void note(std::span<const uint64_t> hashes);
  // Forgets pages the replica's cache evicted (a prompt's run then stops at
  // the first of them, as the cache's own lookup does).
  void forget(std::span<const uint64_t> hashes);
  size_t size() const { return last_use_.size(); }

 private:
  int page_size_;
  size_t capacity_;
  int max_pages_;
  uint64_t tick_ = 0;
  std::unordered_map<uint64_t, uint64_t> last_use_;  // page-chain hash -> tick of its last note
};

}  // namespace kf::dist
