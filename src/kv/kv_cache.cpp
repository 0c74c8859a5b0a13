#include "kv/kv_cache.h"

#include <string>

#include "util/error.h"

namespace kf {

PagePool::PagePool(int n_pages) {
  KF_CHECK(n_pages >= 1, "KV pool needs at least 1 page (got {})", n_pages);
  refs_.assign(n_pages, 0);
  for (int p = n_pages - 1; p >= 0; --p) free_.push_back(p);
}

int PagePool::alloc() {
  KF_CHECK(!free_.empty(), "KV cache is out of pages ({} of {} in use)", used(), capacity());
  int p = free_.back();
  free_.pop_back();
  refs_[p] = 1;
  if (used() > peak_) peak_ = used();
  return p;
}

void PagePool::retain(int page) {
  KF_CHECK(page >= 0 && page < capacity() && refs_[page] > 0, "retain of page {} that is not in use", page);
  ++refs_[page];
}

void PagePool::release(int page) {
  KF_CHECK(page >= 0 && page < capacity() && refs_[page] > 0, "release of page {} that is not in use", page);
  if (--refs_[page] == 0) free_.push_back(page);
}

int PagePool::refcount(int page) const {
  KF_CHECK(page >= 0 && page < capacity(), "page {} is outside the pool ({} pages)", page, capacity());
  return refs_[page];
}

KvCache::KvCache(int n_pages, int page_size) : pool_(n_pages), page_size_(page_size) {
  KF_CHECK(page_size >= 1, "KV page size must be >= 1 (got {})", page_size);
}

const KvCache::Table& KvCache::table(int64_t seq) const {
  auto it = tables_.find(seq);
  KF_CHECK(it != tables_.end(), "KV cache has no sequence {}", seq);
  return it->second;
}

void KvCache::add(int64_t seq) {
  KF_CHECK(!has(seq), "KV cache already has sequence {}", seq);
  tables_[seq] = Table{};
}

void KvCache::fork(int64_t parent, int64_t child) {
  KF_CHECK(!has(child), "KV cache already has sequence {}", child);
  Table t = table(parent);
  for (int p : t.pages) pool_.retain(p);
  tables_[child] = std::move(t);
}

void KvCache::free(int64_t seq) {
  const Table& t = table(seq);
  for (int p : t.pages) pool_.release(p);
  tables_.erase(seq);
}

int KvCache::tokens(int64_t seq) const { return table(seq).tokens; }
const std::vector<int>& KvCache::pages(int64_t seq) const { return table(seq).pages; }

int KvCache::pages_needed(int64_t seq, int n) const {
  const Table& t = table(seq);
  int have = static_cast<int>(t.pages.size());
  int need = (t.tokens + n + page_size_ - 1) / page_size_ - have;
  bool partial = t.tokens % page_size_ != 0;
  bool cow = n > 0 && partial && pool_.refcount(t.pages.back()) > 1;
  return need + (cow ? 1 : 0);
}

void KvCache::append(int64_t seq, int n, std::vector<int32_t>& slots, std::vector<PageCopy>& copies) {
  KF_CHECK(n >= 0, "append of {} tokens", n);
  int need = pages_needed(seq, n);
  KF_CHECK(need <= pool_.free_count(), "KV cache is out of pages: sequence {} needs {} more, {} free of {}",
           seq, need, pool_.free_count(), pool_.capacity());
  Table& t = tables_.at(seq);
  if (n > 0 && t.tokens % page_size_ != 0 && pool_.refcount(t.pages.back()) > 1) {
    int fresh = pool_.alloc();
    copies.push_back(PageCopy{t.pages.back(), fresh});
    pool_.release(t.pages.back());
    t.pages.back() = fresh;
  }
  for (int i = 0; i < n; ++i, ++t.tokens) {
    if (t.tokens % page_size_ == 0) t.pages.push_back(pool_.alloc());
    slots.push_back(t.pages.back() * page_size_ + t.tokens % page_size_);
  }
}

std::string KvCache::check_consistency() const {
  std::vector<int> refs(pool_.capacity(), 0);
  for (const auto& [seq, t] : tables_) {
    int want = (t.tokens + page_size_ - 1) / page_size_;
    if (static_cast<int>(t.pages.size()) != want)
      return fmt::format("sequence {} has {} pages for {} tokens", seq, t.pages.size(), t.tokens);
    for (int p : t.pages) ++refs[p];
  }
  int free_pages = 0;
  for (int p = 0; p < pool_.capacity(); ++p) {
    if (refs[p] != pool_.refcount(p))
      return fmt::format("page {}: refcount {} but {} tables hold it", p, pool_.refcount(p), refs[p]);
    if (refs[p] == 0) ++free_pages;
  }
  if (free_pages != pool_.free_count())
    return fmt::format("{} pages unreferenced but {} on the free list", free_pages, pool_.free_count());
  return {};
}

}  // namespace kf
