// Paged KV cache bookkeeping (no tensors): a pool of ref-counted pages and
// one page table per sequence, shared by all layers (each layer has its own
// pool tensor indexed by the same page ids, see backend.h KvLayer).
//
// Fork shares every page of the parent; a shared partial last page is copied
// on the first write through it (copy-on-write), so the caller must run the
// returned copies with Backend::kv_copy_pages on every layer before writing.
//
// Prefix index (opt-in: KvCache(n, P, true); the scheduler's prefix cache):
// full pages of token ids (prompts, and dense sequences' generated tokens:
// engine/scheduler.h) shared across sequences. A page is indexed under a chained
// hash of its tokens (the previous page's hash and its P ids) and holds one
// reference of the index's own; its ids and the entry of the page before it
// are kept too, so a hash collision can never share a wrong page. A lookup
// walks a token run's full pages from the first while each is indexed. A page
// whose only reference is the index is cached: evictable, least recently
// released first, when an allocation finds the free list empty. Indexed pages
// are full and no write ever lands in one: a sequence appends past them, or,
// when it keeps only the first rows of its last shared page (it computes that
// page's last rows itself), copies that page on its first write into it.
//
// Steps: the scheduler calls begin_step() before it schedules a step and
// indexes pages as that step's rows complete them. Until the next
// begin_step() those pages are being written: a lookup stops before them and
// says so (PrefixMatch::in_flight), so the sequence waits a step to share
// them instead of reading a page in the very step that writes it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kf {

// Free list and reference counts of n_pages pages.
class PagePool {
 public:
  explicit PagePool(int n_pages);
  int capacity() const { return static_cast<int>(refs_.size()); }
  int free_count() const { return static_cast<int>(free_.size()); }
  int used() const { return capacity() - free_count(); }

  int alloc();  // a page with refcount 1; throws kf::Error when none is free
  void retain(int page);
  void release(int page);  // back to the free list at refcount 0
  int refcount(int page) const;

 private:
  std::vector<int> refs_;
  std::vector<int> free_;  // stack: lowest ids handed out first
};

// A pending page copy for copy-on-write: src -> dst (physical page ids).
struct PageCopy {
  int src = 0, dst = 0;
};

// A sequence's token ids as two runs read as one (its prompt, then the
// tokens it generated), so that callers need not join them.
struct TokenRun {
  std::span<const int> head, tail;
  TokenRun(std::span<const int> h, std::span<const int> t = {}) : head(h), tail(t) {}
  TokenRun(const std::vector<int>& h) : head(h) {}
  size_t size() const { return head.size() + tail.size(); }
};

// The chained hash of a page: of the previous page's hash (kPrefixRoot for
// the first page) and the page's token ids.
using PrefixHash = uint64_t (*)(uint64_t prev, std::span<const int> ids);
uint64_t prefix_hash(uint64_t prev, std::span<const int> ids);
inline constexpr uint64_t kPrefixRoot = 0x6b696e6665722d31ull;

class KvCache {
 public:
  // prefix_index: keep the prefix index (its per-page bookkeeping is
  // allocated only then). hash: the page hash (tests pass a colliding one).
  KvCache(int n_pages, int page_size, bool prefix_index = false, PrefixHash hash = prefix_hash);
  int page_size() const { return page_size_; }
  bool prefix_index() const { return prefix_index_; }
  const PagePool& pool() const { return pool_; }
  // Pages an allocation may take: free ones plus cached ones it would evict.
  int free_pages() const { return pool_.free_count() + lru_size_; }
  // Pages held by sequence tables; the peak of that count.
  int used_pages() const { return pool_.used() - lru_size_; }
  int peak_used() const { return peak_; }
  // Pages held only by the prefix index (evictable); pages indexed (cached or also in use).
  int cached_pages() const { return lru_size_; }
  int indexed_pages() const { return static_cast<int>(index_.size()); }
  int64_t evictions() const { return evictions_; }  // cached pages taken back for allocations
  // Evicted pages' chained hashes, for a router that remembers which prefixes
  // this cache holds (dist::ReplicaSet): kept from log_evictions(true) on.
  // take_evicted_keys() returns those evicted since its last call that are
  // not indexed again by now, and clears the log.
  void log_evictions(bool on);
  std::vector<uint64_t> take_evicted_keys();

  bool has(int64_t seq) const { return tables_.count(seq) != 0; }
  void add(int64_t seq);                    // empty table
  void fork(int64_t parent, int64_t child);  // child shares all of parent's pages
  void free(int64_t seq);                    // releases its pages and forgets it
  int tokens(int64_t seq) const;
  const std::vector<int>& pages(int64_t seq) const;

  // Fresh pages that appending n tokens would take (including a CoW copy).
  int pages_needed(int64_t seq, int n) const;
  // Whether those pages can be had: pages_needed() <= free_pages(), where a
  // partly kept indexed page counts as free once copied (it is cached again).
  bool can_append(int64_t seq, int n) const;
  // Reserves n more token slots: appends slot ids (page*page_size + offset) to
  // `slots` and any copy-on-write copy to `copies`, evicting cached pages when
  // no page is free. Throws kf::Error (and changes nothing) unless
  // can_append().
  void append(int64_t seq, int n, std::vector<int32_t>& slots, std::vector<PageCopy>& copies);

  // ---- the prefix index (KvCache(n, P, true)) ----
  struct PrefixMatch {
    int pages = 0;      // indexed pages holding tokens [0, pages * page_size)
    int evictable = 0;  // of them, cached ones (sharing them takes them from free_pages())
    bool last_cached = false;  // the last one is cached (kept in part, it is cached again once copied)
    bool in_flight = false;  // the next page (within max_pages) is indexed by the step being scheduled
  };
  // The longest run, at most max_pages, of indexed pages that hold `tokens`
  // from the first one (full pages only), written by earlier steps.
  PrefixMatch match_prefix(const TokenRun& tokens, int max_pages) const;
  // An empty sequence's table starts with the pages of match_prefix(tokens)
  // that hold tokens [0, n_tokens) (retained): it holds n_tokens tokens. A
  // partly kept last page is copied on the sequence's first write into it.
  void share_prefix(int64_t seq, const TokenRun& tokens, int n_tokens);
  // Indexes the sequence's first full_pages pages, which hold tokens [0,
  // full_pages * page_size) (those not indexed yet; where an identical
  // entry exists it is kept and this sequence's page is not indexed).
  void index_prefix(int64_t seq, const TokenRun& tokens, int full_pages);
  // A new step is being scheduled: pages indexed before now are written (see
  // the header). Until the first call every indexed page counts as written.
  void begin_step() { ++step_; }

  // Pages held by no sequence table nor the index but not free, refcounts
  // that disagree with the tables and the index, or an index whose entries or
  // cached list disagree with the pages: empty string when consistent (for
  // tests and asserts).
  std::string check_consistency() const;

 private:
  struct Table {
    std::vector<int> pages;
    int tokens = 0;
    // Its first chain_pages pages are indexed (by it or an identical entry);
    // chain_hash and chain_serial are the last one's hash and entry.
    int chain_pages = 0;
    uint64_t chain_hash = kPrefixRoot, chain_serial = 0;
    bool chain_broken = false;  // a hash collision: its later pages stay unindexed
  };
  // A page's prefix-index entry (one per page of the pool).
  struct Entry {
    bool indexed = false;
    uint64_t key = 0;     // its chained hash
    uint64_t serial = 0;  // unique per entry, never reused
    uint64_t parent = 0;  // serial of the previous page's entry (0: the first page)
    int prev = -1, next = -1;  // cached list links (-1: none)
    bool cached = false;       // on the cached list: the index holds its only reference
    int64_t step = 0;          // the step_ it was indexed in
  };
  // Indexed by the step being scheduled (its rows still to be written).
  bool in_flight(int page) const { return step_ > 0 && entries_[page].step == step_; }
  const Table& table(int64_t seq) const;
  // Whether appending n tokens first copies the table's last page: a partial
  // page another holder (a fork, the prefix index) shares.
  bool copies_last(const Table& t, int n) const;
  // The indexed page that holds ids as the page after entry `parent` whose
  // hash is `hash`, or -1.
  int find_entry(uint64_t hash, uint64_t parent, std::span<const int> ids) const;
  // Page j's ids (a view into tokens, or into page_ids_ for a page that
  // straddles the two runs: valid until the next call).
  std::span<const int> page_tokens(const TokenRun& tokens, int j) const;
  int alloc_page();            // from the free list, else evicts the least recently cached page
  void release_page(int page);  // drops a table's reference
  void cache_push(int page);   // onto the cached list, as the most recent
  void cache_remove(int page);
  void note_peak();

  PagePool pool_;
  int page_size_;
  std::unordered_map<int64_t, Table> tables_;
  int peak_ = 0;
  bool prefix_index_ = false;
  PrefixHash hash_;
  std::vector<Entry> entries_;  // [n_pages] with the index
  std::vector<int> entry_ids_;  // [n_pages, page_size]: token ids of each indexed page
  mutable std::vector<int> page_ids_;  // [page_size]: page_tokens()' joined page
  std::unordered_map<uint64_t, int> index_;  // chained hash -> page
  int lru_head_ = -1, lru_tail_ = -1, lru_size_ = 0;  // cached list, least recent at the head
  uint64_t next_serial_ = 1;
  int64_t evictions_ = 0;
  bool log_evictions_ = false;
  std::vector<uint64_t> evicted_keys_;  // since the last take_evicted_keys()
  int64_t step_ = 0;  // begin_step() calls
};

}  // namespace kf
