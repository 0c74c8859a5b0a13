#include "dist/prefix_affinity.h"

#include <algorithm>

#include "kv/kv_cache.h"
#include "util/error.h"

namespace kf::dist {

PrefixAffinity::PrefixAffinity(int page_size, size_t capacity, int max_pages)
    : page_size_(page_size), capacity_(capacity), max_pages_(max_pages) {
  KF_CHECK(page_size >= 1 && capacity >= 1 && max_pages >= 1,
           "prefix affinity: page size {}, capacity {} and max pages {} must be >= 1", page_size, capacity, max_pages);
}

std::vector<uint64_t> PrefixAffinity::page_hashes(std::span<const int> prompt) const {
  const int pages = std::min(max_pages_, static_cast<int>(prompt.size()) / page_size_);
  std::vector<uint64_t> out(pages);
  uint64_t h = kPrefixRoot;
  for (int j = 0; j < pages; ++j)
    out[j] = h = prefix_hash(h, prompt.subspan(static_cast<size_t>(j) * page_size_, page_size_));
  return out;
}

int PrefixAffinity::match(std::span<const uint64_t> hashes) const {
  int n = 0;
  while (n < static_cast<int>(hashes.size()) && last_use_.count(hashes[n])) ++n;
  return n;
}

void PrefixAffinity::note(std::span<const uint64_t> hashes) {
  ++tick_;
  for (uint64_t h : hashes) last_use_[h] = tick_;
  if (last_use_.size() <= capacity_) return;
  // Over capacity: keep the most recently used half (amortised: one sort per capacity / 2 notes at most).
  std::vector<uint64_t> ticks;
  ticks.reserve(last_use_.size());
  for (const auto& [h, t] : last_use_) ticks.push_back(t);
  const size_t keep = capacity_ / 2;
  std::nth_element(ticks.begin(), ticks.end() - static_cast<ptrdiff_t>(keep), ticks.end());
  const uint64_t cutoff = keep > 0 ? *(ticks.end() - static_cast<ptrdiff_t>(keep)) : tick_ + 1;
  std::erase_if(last_use_, [&](const auto& e) { return e.second < cutoff; });
}

void PrefixAffinity::forget(std::span<const uint64_t> hashes) {
  for (uint64_t h : hashes) last_use_.erase(h);
}

}  // namespace kf::dist
