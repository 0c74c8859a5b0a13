#include "kv/kv_cache.h"

#include <algorithm>
#include <string>
#include <tuple>

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

uint64_t prefix_hash(uint64_t prev, std::span<const int> ids) {
  uint64_t h = prev;
  for (int id : ids) {  // splitmix64's finalizer over (hash + id)
    h += 0x9e3779b97f4a7c15ull + static_cast<uint32_t>(id);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
  }
  return h;
}

KvCache::KvCache(int n_pages, int page_size, bool prefix_index, PrefixHash hash)
    : pool_(n_pages), page_size_(page_size), prefix_index_(prefix_index), hash_(hash) {
  KF_CHECK(page_size >= 1, "KV page size must be >= 1 (got {})", page_size);
  KF_CHECK(hash_ != nullptr, "KV cache: no prefix hash");
  if (prefix_index_) {
    entries_.resize(n_pages);
    entry_ids_.resize(static_cast<size_t>(n_pages) * page_size);
    page_ids_.resize(page_size);
  }
}

const KvCache::Table& KvCache::table(int64_t seq) const {
  auto it = tables_.find(seq);
  KF_CHECK(it != tables_.end(), "KV cache has no sequence {}", seq);
  return it->second;
}

void KvCache::note_peak() { peak_ = std::max(peak_, used_pages()); }

void KvCache::cache_push(int page) {
  Entry& e = entries_[page];
  e.cached = true;
  e.prev = lru_tail_;
  e.next = -1;
  if (lru_tail_ >= 0) entries_[lru_tail_].next = page;
  else lru_head_ = page;
  lru_tail_ = page;
  ++lru_size_;
}

void KvCache::cache_remove(int page) {
  Entry& e = entries_[page];
  if (e.prev >= 0) entries_[e.prev].next = e.next;
  else lru_head_ = e.next;
  if (e.next >= 0) entries_[e.next].prev = e.prev;
  else lru_tail_ = e.prev;
  e.prev = e.next = -1;
  e.cached = false;
  --lru_size_;
}

int KvCache::alloc_page() {
  if (pool_.free_count() == 0 && lru_size_ > 0) {  // evict the least recently cached page
    const int victim = lru_head_;
    cache_remove(victim);
    index_.erase(entries_[victim].key);
    entries_[victim].indexed = false;
    pool_.release(victim);
    ++evictions_;
    if (log_evictions_) evicted_keys_.push_back(entries_[victim].key);
  }
  const int p = pool_.alloc();
  note_peak();
  return p;
}

void KvCache::log_evictions(bool on) {
  log_evictions_ = on && prefix_index_;
  if (!log_evictions_) evicted_keys_.clear();
}

std::vector<uint64_t> KvCache::take_evicted_keys() {
  std::vector<uint64_t> out;
  out.swap(evicted_keys_);
  std::erase_if(out, [&](uint64_t key) { return index_.count(key) != 0; });  // indexed again since
  return out;
}

void KvCache::release_page(int page) {
  pool_.release(page);
  if (prefix_index_ && entries_[page].indexed && pool_.refcount(page) == 1) cache_push(page);
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
  // Pages now held by the index alone are cached, last page first: a chain's
  // first pages become the most recent, so its last ones are evicted first
  // (evicting a first page would strand the pages after it, which no lookup
  // reaches then).
  if (prefix_index_)
    for (auto it = t.pages.rbegin(); it != t.pages.rend(); ++it)
      if (entries_[*it].indexed && pool_.refcount(*it) == 1) cache_push(*it);
  tables_.erase(seq);
}

int KvCache::tokens(int64_t seq) const { return table(seq).tokens; }
const std::vector<int>& KvCache::pages(int64_t seq) const { return table(seq).pages; }

bool KvCache::copies_last(const Table& t, int n) const {
  return n > 0 && t.tokens % page_size_ != 0 && pool_.refcount(t.pages.back()) > 1;
}

int KvCache::pages_needed(int64_t seq, int n) const {
  const Table& t = table(seq);
  const int have = static_cast<int>(t.pages.size());
  const int need = (t.tokens + n + page_size_ - 1) / page_size_ - have;
  return need + (copies_last(t, n) ? 1 : 0);
}

bool KvCache::can_append(int64_t seq, int n) const {
  const Table& t = table(seq);
  const int need = pages_needed(seq, n);
  if (!copies_last(t, n)) return need <= free_pages();
  // The copy is allocated while the original is held; then the original is
  // cached again if the index is left its only holder.
  const int last = t.pages.back();
  const bool recached = prefix_index_ && entries_[last].indexed && pool_.refcount(last) == 2;
  return free_pages() >= 1 && need <= free_pages() + (recached ? 1 : 0);
}

void KvCache::append(int64_t seq, int n, std::vector<int32_t>& slots, std::vector<PageCopy>& copies) {
  KF_CHECK(n >= 0, "append of {} tokens", n);
  KF_CHECK(can_append(seq, n), "KV cache is out of pages: sequence {} needs {} more, {} free of {}", seq,
           pages_needed(seq, n), free_pages(), pool_.capacity());
  Table& t = tables_.at(seq);
  // A shared partial last page is a fork's, or an indexed page the sequence
  // keeps only the first rows of (share_prefix): the copy takes its writes,
  // and releasing the original caches it if the index is now its only holder.
  if (copies_last(t, n)) {
    int fresh = alloc_page();
    copies.push_back(PageCopy{t.pages.back(), fresh});
    release_page(t.pages.back());
    t.pages.back() = fresh;
  }
  for (int i = 0; i < n; ++i, ++t.tokens) {
    if (t.tokens % page_size_ == 0) t.pages.push_back(alloc_page());
    slots.push_back(t.pages.back() * page_size_ + t.tokens % page_size_);
  }
}

int KvCache::find_entry(uint64_t hash, uint64_t parent, std::span<const int> ids) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return -1;
  const int p = it->second;
  const int* have = entry_ids_.data() + static_cast<size_t>(p) * page_size_;
  // The hash only finds the entry; its ids and the page before it decide.
  if (entries_[p].parent != parent || !std::equal(ids.begin(), ids.end(), have)) return -1;
  return p;
}

std::span<const int> KvCache::page_tokens(const TokenRun& tokens, int j) const {
  const size_t begin = static_cast<size_t>(j) * page_size_, end = begin + page_size_, head = tokens.head.size();
  if (end <= head) return tokens.head.subspan(begin, page_size_);
  if (begin >= head) return tokens.tail.subspan(begin - head, page_size_);
  std::copy(tokens.head.begin() + static_cast<ptrdiff_t>(begin), tokens.head.end(), page_ids_.begin());
  std::copy(tokens.tail.begin(), tokens.tail.begin() + static_cast<ptrdiff_t>(end - head),
            page_ids_.begin() + static_cast<ptrdiff_t>(head - begin));
  return page_ids_;
}

KvCache::PrefixMatch KvCache::match_prefix(const TokenRun& tokens, int max_pages) const {
  PrefixMatch m;
  if (!prefix_index_) return m;
  const int full = std::min(max_pages, static_cast<int>(tokens.size()) / page_size_);
  uint64_t hash = kPrefixRoot, parent = 0;
  for (int j = 0; j < full; ++j) {
    const std::span<const int> ids = page_tokens(tokens, j);
    hash = hash_(hash, ids);
    const int p = find_entry(hash, parent, ids);
    if (p < 0) break;
    if (in_flight(p)) {
      m.in_flight = true;
      break;
    }
    ++m.pages;
    m.evictable += entries_[p].cached ? 1 : 0;
    m.last_cached = entries_[p].cached;
    parent = entries_[p].serial;
  }
  return m;
}

void KvCache::share_prefix(int64_t seq, const TokenRun& tokens, int n_tokens) {
  KF_CHECK(prefix_index_, "KV cache: share_prefix without the prefix index");
  Table& t = tables_.at(seq);
  KF_CHECK(t.pages.empty(), "KV cache: share_prefix into sequence {} that holds pages", seq);
  KF_CHECK(n_tokens >= 0 && static_cast<size_t>(n_tokens) <= tokens.size(),
           "KV cache: share_prefix of {} tokens from a prompt of {}", n_tokens, tokens.size());
  // Find every page first, so an error changes nothing.
  const int pages = (n_tokens + page_size_ - 1) / page_size_;
  std::vector<int> found;
  std::vector<std::pair<uint64_t, uint64_t>> chain;  // (hash, serial) after each page
  uint64_t hash = t.chain_hash, serial = t.chain_serial;
  for (int j = 0; j < pages; ++j) {
    KF_CHECK(static_cast<size_t>(j + 1) * page_size_ <= tokens.size(), "KV cache: share_prefix past the tokens");
    const std::span<const int> ids = page_tokens(tokens, j);
    hash = hash_(hash, ids);
    const int p = find_entry(hash, serial, ids);
    KF_CHECK(p >= 0 && !in_flight(p), "KV cache: page {} of sequence {}'s prefix is not indexed and written", j,
             seq);
    serial = entries_[p].serial;
    found.push_back(p);
    chain.emplace_back(hash, serial);
  }
  for (int j = 0; j < pages; ++j) {
    const int p = found[j];
    if (entries_[p].cached) cache_remove(p);  // in use again
    pool_.retain(p);
    t.pages.push_back(p);
    // The chain covers whole pages kept; a partly kept one is copied on the
    // first write, and its copy finds this entry again when it is indexed.
    if ((j + 1) * page_size_ <= n_tokens) {
      std::tie(t.chain_hash, t.chain_serial) = chain[j];
      ++t.chain_pages;
    }
  }
  t.tokens = n_tokens;
  note_peak();
}

void KvCache::index_prefix(int64_t seq, const TokenRun& tokens, int full_pages) {
  KF_CHECK(prefix_index_, "KV cache: index_prefix without the prefix index");
  Table& t = tables_.at(seq);
  KF_CHECK(full_pages * page_size_ <= t.tokens && static_cast<size_t>(full_pages) * page_size_ <= tokens.size(),
           "KV cache: index_prefix of {} pages, sequence {} holds {} tokens", full_pages, seq, t.tokens);
  for (int j = t.chain_pages; j < full_pages && !t.chain_broken; ++j) {
    const std::span<const int> ids = page_tokens(tokens, j);
    const uint64_t hash = hash_(t.chain_hash, ids);
    const int p = t.pages[j];
    if (index_.count(hash)) {
      const int same = find_entry(hash, t.chain_serial, ids);
      if (same < 0) {  // another page under this hash: a collision, so this chain ends here
        t.chain_broken = true;
        break;
      }
      t.chain_serial = entries_[same].serial;  // identical content indexed already: keep that entry
    } else if (entries_[p].indexed) {  // indexed under another chain (a collision): cannot be both
      t.chain_broken = true;
      break;
    } else {
      Entry& e = entries_[p];
      e.indexed = true;
      e.key = hash;
      e.serial = next_serial_++;
      e.parent = t.chain_serial;
      e.step = step_;
      std::copy(ids.begin(), ids.end(), entry_ids_.begin() + static_cast<ptrdiff_t>(p) * page_size_);
      index_.emplace(hash, p);
      pool_.retain(p);  // the index's own reference
      t.chain_serial = e.serial;
    }
    t.chain_hash = hash;
    ++t.chain_pages;
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
  int free_pages = 0, indexed = 0, cached = 0;
  for (int p = 0; p < pool_.capacity(); ++p) {
    const bool in_index = prefix_index_ && entries_[p].indexed;
    if (refs[p] + (in_index ? 1 : 0) != pool_.refcount(p))
      return fmt::format("page {}: refcount {} but {} tables{} hold it", p, pool_.refcount(p), refs[p],
                         in_index ? " and the index" : "");
    if (pool_.refcount(p) == 0) ++free_pages;
    if (!prefix_index_) continue;
    const Entry& e = entries_[p];
    if (e.cached != (in_index && refs[p] == 0))
      return fmt::format("page {}: {} the cached list, held by {} tables{}", p, e.cached ? "on" : "not on", refs[p],
                         in_index ? " and the index" : "");
    if (in_index) {
      ++indexed;
      auto it = index_.find(e.key);
      if (it == index_.end() || it->second != p) return fmt::format("page {}: indexed but its hash finds no entry", p);
    }
    cached += e.cached ? 1 : 0;
  }
  if (free_pages != pool_.free_count())
    return fmt::format("{} pages unreferenced but {} on the free list", free_pages, pool_.free_count());
  if (indexed != indexed_pages()) return fmt::format("{} pages indexed but the index has {}", indexed, indexed_pages());
  int listed = 0;
  for (int p = lru_head_; p >= 0 && listed <= cached; p = entries_[p].next) ++listed;
  if (cached != lru_size_ || listed != cached)
    return fmt::format("{} pages cached, the cached list counts {} and links {}", cached, lru_size_, listed);
  return {};
}

}  // namespace kf
