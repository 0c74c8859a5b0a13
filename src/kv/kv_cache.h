// Paged KV cache bookkeeping (no tensors): a pool of ref-counted pages and
// one page table per sequence, shared by all layers (each layer has its own
// pool tensor indexed by the same page ids, see backend.h KvLayer).
//
// Fork shares every page of the parent; a shared partial last page is copied
// on the first write through it (copy-on-write), so the caller must run the
// returned copies with Backend::kv_copy_pages on every layer before writing.
#pragma once
#include <cstdint>
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
  int peak_used() const { return peak_; }
  void reset_peak() { peak_ = used(); }

  int alloc();  // a page with refcount 1; throws kf::Error when none is free
  void retain(int page);
  void release(int page);  // back to the free list at refcount 0
  int refcount(int page) const;

 private:
  std::vector<int> refs_;
  std::vector<int> free_;  // stack: lowest ids handed out first
  int peak_ = 0;
};

// A pending page copy for copy-on-write: src -> dst (physical page ids).
struct PageCopy {
  int src = 0, dst = 0;
};

class KvCache {
 public:
  KvCache(int n_pages, int page_size);
  int page_size() const { return page_size_; }
  const PagePool& pool() const { return pool_; }
  PagePool& pool() { return pool_; }

  bool has(int64_t seq) const { return tables_.count(seq) != 0; }
  void add(int64_t seq);                    // empty table
  void fork(int64_t parent, int64_t child);  // child shares all of parent's pages
  void free(int64_t seq);                    // releases its pages and forgets it
  int tokens(int64_t seq) const;
  const std::vector<int>& pages(int64_t seq) const;

  // Fresh pages that appending n tokens would take (including a CoW copy).
  int pages_needed(int64_t seq, int n) const;
  // Reserves n more token slots: appends slot ids (page*page_size + offset) to
  // `slots` and any copy-on-write copy to `copies`. Throws kf::Error (and
  // changes nothing) if the pool has fewer than pages_needed() free pages.
  void append(int64_t seq, int n, std::vector<int32_t>& slots, std::vector<PageCopy>& copies);

  // Pages held by no sequence table but not free, or refcounts that disagree
  // with the tables: empty string when consistent (for tests and asserts).
  std::string check_consistency() const;

 private:
  struct Table {
    std::vector<int> pages;
    int tokens = 0;
  };
  const Table& table(int64_t seq) const;
  PagePool pool_;
  int page_size_;
  std::unordered_map<int64_t, Table> tables_;
};

}  // namespace kf
