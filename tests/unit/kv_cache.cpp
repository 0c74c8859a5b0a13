// KV cache bookkeeping: a random mix of add/fork/append/free never leaks or
// double-frees pages, refcounts match the tables, and copy-on-write gives
// each sequence its own copy of a shared partial page (checked with a
// shadow model of every slot's contents). The prefix index shares only
// identical chains of full pages, evicts least recently cached pages held by
// nothing else, and keeps every sequence's tokens in place.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "kv/kv_cache.h"
#include "util/error.h"

using namespace kf;

TEST(KvCache, RandomForkAppendFreeNeverLeaksAndCopiesOnWrite) {
  for (int page_size : {1, 2, 3, 16}) {
    std::mt19937 rng(page_size);
    const int n_pages = 40;
    KvCache kv(n_pages, page_size);
    // Shadow of the physical pool: token value per slot, and per sequence its tokens.
    std::vector<int> pool(n_pages * page_size, -1);
    std::map<int64_t, std::vector<int>> content;
    int64_t next_id = 0;
    int next_token = 0;
    for (int step = 0; step < 3000; ++step) {
      int op = rng() % 10;
      std::vector<int64_t> ids;
      for (auto& [id, c] : content) ids.push_back(id);
      int64_t pick = ids.empty() ? -1 : ids[rng() % ids.size()];
      if (op == 0 || ids.empty()) {
        kv.add(next_id);
        content[next_id++] = {};
      } else if (op <= 2) {
        kv.fork(pick, next_id);
        content[next_id++] = content[pick];
      } else if (op <= 3) {
        kv.free(pick);
        content.erase(pick);
      } else {
        int n = rng() % (2 * page_size + 2);
        int need = kv.pages_needed(pick, n);
        std::vector<int32_t> slots;
        std::vector<PageCopy> copies;
        if (need > kv.pool().free_count()) {
          int before = kv.pool().free_count();
          EXPECT_THROW(kv.append(pick, n, slots, copies), Error);
          EXPECT_EQ(before, kv.pool().free_count());
          EXPECT_TRUE(slots.empty());
          continue;
        }
        int before = kv.pool().free_count();
        kv.append(pick, n, slots, copies);
        EXPECT_EQ(before - kv.pool().free_count(), need);
        for (const PageCopy& c : copies)
          for (int o = 0; o < page_size; ++o) pool[c.dst * page_size + o] = pool[c.src * page_size + o];
        ASSERT_EQ(static_cast<int>(slots.size()), n);
        for (int32_t s : slots) {
          pool[s] = next_token;
          content[pick].push_back(next_token++);
        }
      }
      ASSERT_EQ(kv.check_consistency(), "") << "step " << step;
      // Every sequence reads back exactly what was written for it.
      for (auto& [id, c] : content) {
        ASSERT_EQ(kv.tokens(id), static_cast<int>(c.size()));
        const auto& pages = kv.pages(id);
        for (size_t t = 0; t < c.size(); ++t)
          ASSERT_EQ(pool[pages[t / page_size] * page_size + t % page_size], c[t]) << "seq " << id << " token " << t;
      }
    }
    for (auto& [id, c] : content) kv.free(id);
    EXPECT_EQ(kv.pool().free_count(), n_pages);
    EXPECT_EQ(kv.check_consistency(), "");
  }
}

TEST(KvCache, ForkSharesFullPagesAndCopiesThePartialOneOnce) {
  KvCache kv(10, 4);
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.add(1);
  kv.append(1, 6, slots, copies);  // pages: full + partial (2 of 4)
  EXPECT_EQ(kv.pool().used(), 2);
  kv.fork(1, 2);
  EXPECT_EQ(kv.pool().used(), 2);
  EXPECT_EQ(kv.pages_needed(2, 1), 1);
  slots.clear();
  kv.append(2, 1, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, kv.pages(1)[1]);
  EXPECT_EQ(copies[0].dst, kv.pages(2)[1]);
  EXPECT_EQ(kv.pages(1)[0], kv.pages(2)[0]);  // full page still shared
  copies.clear();
  kv.append(1, 1, slots, copies);  // the parent now owns its partial page alone
  EXPECT_TRUE(copies.empty());
  kv.free(1);
  kv.free(2);
  EXPECT_EQ(kv.pool().used(), 0);
  EXPECT_EQ(kv.peak_used(), 3);
}

TEST(KvCache, ErrorsNameTheProblem) {
  KvCache kv(2, 4);
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.add(7);
  try {
    kv.append(7, 9, slots, copies);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of pages"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kv.free(8), Error);
  EXPECT_THROW(kv.add(7), Error);
  PagePool pool(2);
  EXPECT_THROW(pool.release(1), Error);
  EXPECT_THROW(PagePool(0), Error);
}

// ---- the prefix index ----

namespace {

std::vector<int> ids(int n, int first) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = first + i;
  return v;
}
std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
// A sequence that appends `tokens` and indexes its full pages.
void prefill(KvCache& kv, int64_t seq, const std::vector<int>& tokens) {
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.add(seq);
  kv.append(seq, static_cast<int>(tokens.size()), slots, copies);
  kv.index_prefix(seq, tokens, static_cast<int>(tokens.size()) / kv.page_size());
}

}  // namespace

TEST(KvCache, PrefixLookupFindsOnlyIdenticalChainsFromTheFirstPage) {
  KvCache kv(20, 4, true);
  const std::vector<int> a = ids(14, 100);  // pages a0 a1 a2 + 2 tokens
  prefill(kv, 1, a);
  EXPECT_EQ(kv.indexed_pages(), 3);  // full pages only
  EXPECT_EQ(kv.cached_pages(), 0);   // all still held by sequence 1
  EXPECT_EQ(kv.match_prefix(a, 10).pages, 3);
  EXPECT_EQ(kv.match_prefix(a, 10).evictable, 0);
  EXPECT_EQ(kv.match_prefix(a, 2).pages, 2);  // at most max_pages
  EXPECT_EQ(kv.match_prefix(ids(3, 100), 10).pages, 0);  // shorter than a page
  // The same first two pages, another third one: two.
  EXPECT_EQ(kv.match_prefix(concat(ids(8, 100), ids(4, 500)), 10).pages, 2);
  // Another first page, the same later ones: none (the chain starts at page 0).
  EXPECT_EQ(kv.match_prefix(concat(ids(4, 500), ids(10, 104)), 10).pages, 0);
  std::vector<int> last_differs = a;
  last_differs[3] = 7;
  EXPECT_EQ(kv.match_prefix(last_differs, 10).pages, 0);
  const std::vector<int> a_pages = kv.pages(1);

  // Once the sequence ends its indexed pages are cached (evictable), not used.
  kv.free(1);
  EXPECT_EQ(kv.used_pages(), 0);
  EXPECT_EQ(kv.cached_pages(), 3);
  EXPECT_EQ(kv.free_pages(), 20);
  EXPECT_EQ(kv.pool().used(), 3);
  EXPECT_EQ(kv.match_prefix(a, 10).evictable, 3);
  EXPECT_EQ(kv.check_consistency(), "");

  // A sequence starts with two of them, then appends past them: its writes
  // land in fresh pages, never in a shared one.
  kv.add(2);
  kv.share_prefix(2, a, 8);
  EXPECT_EQ(kv.tokens(2), 8);
  EXPECT_EQ(kv.pages(2), std::vector<int>(a_pages.begin(), a_pages.begin() + 2));
  EXPECT_EQ(kv.used_pages(), 2);
  EXPECT_EQ(kv.cached_pages(), 1);
  EXPECT_EQ(kv.free_pages(), 18);
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.append(2, 6, slots, copies);
  EXPECT_TRUE(copies.empty());
  for (int32_t s : slots) EXPECT_TRUE(s / 4 != a_pages[0] && s / 4 != a_pages[1] && s / 4 != a_pages[2]) << s;
  // Its third page holds a2's tokens too: the existing entry is kept.
  kv.index_prefix(2, a, 3);
  EXPECT_EQ(kv.indexed_pages(), 3);
  EXPECT_EQ(kv.check_consistency(), "");
  kv.free(2);
  EXPECT_EQ(kv.used_pages(), 0);
  EXPECT_EQ(kv.cached_pages(), 3);
  EXPECT_EQ(kv.pool().used(), 3);  // sequence 2's own third page went back to the free list
  EXPECT_EQ(kv.check_consistency(), "");
}

// A sequence may keep only the first rows of its last shared page: its table
// holds that page until its first write into it, which goes to a copy, and
// the original stays indexed (cached once the index is its only holder).
// A TokenRun (a prompt, then generated tokens) reads as the joined ids, a
// page that straddles the two runs included: indexing, lookup and sharing
// through two runs agree with one contiguous vector, whichever way split.
TEST(KvCache, TokenRunsReadAsTheJoinedIds) {
  const std::vector<int> all = ids(18, 300);  // pages 0..3 + 2 tokens
  for (size_t cut : {0u, 3u, 4u, 6u, 18u}) {
    SCOPED_TRACE(cut);
    KvCache kv(20, 4, true);
    const std::vector<int> head(all.begin(), all.begin() + static_cast<ptrdiff_t>(cut)),
        tail(all.begin() + static_cast<ptrdiff_t>(cut), all.end());
    std::vector<int32_t> slots;
    std::vector<PageCopy> copies;
    kv.add(1);
    kv.append(1, 18, slots, copies);
    kv.index_prefix(1, TokenRun(head, tail), 4);
    EXPECT_EQ(kv.indexed_pages(), 4);
    EXPECT_EQ(kv.match_prefix(all, 10).pages, 4);  // found by the joined ids
    EXPECT_EQ(kv.match_prefix(TokenRun(head, tail), 10).pages, 4);
    std::vector<int> other = all;
    other[9] = 1;  // page 2 differs
    const size_t c2 = std::min<size_t>(cut, 9);
    EXPECT_EQ(kv.match_prefix(TokenRun(std::span<const int>(other).first(c2), std::span<const int>(other).subspan(c2)), 10)
                  .pages,
              2);
    kv.add(2);
    kv.share_prefix(2, TokenRun(head, tail), 14);  // three whole pages and half the fourth
    EXPECT_EQ(kv.pages(2), std::vector<int>(kv.pages(1).begin(), kv.pages(1).begin() + 4));
    EXPECT_EQ(kv.check_consistency(), "");
  }
}

TEST(KvCache, SharingPartOfAPageCopiesItOnTheFirstWrite) {
  KvCache kv(20, 4, true);
  const std::vector<int> a = ids(12, 100);  // three full pages
  prefill(kv, 1, a);
  const std::vector<int> a_pages = kv.pages(1);
  kv.free(1);
  kv.add(2);
  kv.share_prefix(2, a, 10);  // pages a0 a1 whole, a2's first two rows
  EXPECT_EQ(kv.tokens(2), 10);
  EXPECT_EQ(kv.pages(2), a_pages);
  EXPECT_EQ(kv.cached_pages(), 0);
  EXPECT_EQ(kv.pages_needed(2, 2), 1);  // the copy
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.append(2, 2, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, a_pages[2]);
  EXPECT_EQ(kv.pages(2)[2], copies[0].dst);
  EXPECT_EQ(slots, (std::vector<int32_t>{copies[0].dst * 4 + 2, copies[0].dst * 4 + 3}));
  EXPECT_EQ(kv.cached_pages(), 1);  // a2, held by the index alone again
  EXPECT_EQ(kv.check_consistency(), "");
  // Its copy holds a2's tokens: indexing keeps the existing entry.
  kv.index_prefix(2, a, 3);
  EXPECT_EQ(kv.indexed_pages(), 3);
  EXPECT_EQ(kv.match_prefix(a, 3).pages, 3);
  kv.free(2);
  EXPECT_EQ(kv.cached_pages(), 3);
  EXPECT_EQ(kv.pool().used(), 3);
  // Zero tokens shares nothing; a page past the indexed ones is an error.
  kv.add(3);
  kv.share_prefix(3, a, 0);
  EXPECT_TRUE(kv.pages(3).empty());
  kv.add(4);
  EXPECT_THROW(kv.share_prefix(4, concat(ids(8, 100), ids(4, 900)), 9), Error);
  EXPECT_EQ(kv.check_consistency(), "");
}

// Pages indexed since the last begin_step() are being written by the step
// being scheduled: a lookup stops before them and says so; share_prefix
// refuses them. The next begin_step() makes them shareable.
TEST(KvCache, PagesIndexedThisStepAreNotSharedUntilTheNext) {
  KvCache kv(20, 4, true);
  const std::vector<int> a = ids(12, 100);
  kv.begin_step();
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.add(1);
  kv.append(1, 8, slots, copies);
  kv.index_prefix(1, a, 2);
  EXPECT_EQ(kv.match_prefix(a, 3).pages, 0);
  EXPECT_TRUE(kv.match_prefix(a, 3).in_flight);
  EXPECT_FALSE(kv.match_prefix(ids(8, 500), 3).in_flight);  // another prompt: nothing to wait for
  kv.add(2);
  EXPECT_THROW(kv.share_prefix(2, a, 4), Error);
  kv.begin_step();
  kv.append(1, 4, slots, copies);
  kv.index_prefix(1, a, 3);
  KvCache::PrefixMatch m = kv.match_prefix(a, 3);
  EXPECT_EQ(m.pages, 2);
  EXPECT_TRUE(m.in_flight);
  EXPECT_FALSE(kv.match_prefix(a, 2).in_flight);  // within max_pages only
  kv.share_prefix(2, a, 8);
  kv.begin_step();
  m = kv.match_prefix(a, 3);
  EXPECT_EQ(m.pages, 3);
  EXPECT_FALSE(m.in_flight);
  kv.free(1);
  kv.free(2);
  EXPECT_EQ(kv.check_consistency(), "");
}

// The hash only finds an entry: its ids and the entry before it decide. With
// a hash that ignores the previous page, or one where every page collides,
// no wrong page is ever shared.
TEST(KvCache, PrefixLookupComparesIdsAndTheChainNotJustTheHash) {
  {
    PrefixHash unchained = [](uint64_t, std::span<const int> v) { return prefix_hash(kPrefixRoot, v); };
    KvCache kv(20, 4, true, unchained);
    const std::vector<int> x = ids(4, 10), y = ids(4, 20), z = ids(4, 30);
    prefill(kv, 1, concat(x, y));
    EXPECT_EQ(kv.match_prefix(concat(x, y), 9).pages, 2);
    EXPECT_EQ(kv.match_prefix(concat(z, y), 9).pages, 0);
    prefill(kv, 2, concat(z, y));  // z is indexed; its y would collide with x's y
    EXPECT_EQ(kv.indexed_pages(), 3);
    EXPECT_EQ(kv.match_prefix(concat(z, y), 9).pages, 1);  // y after z is not y after x
    EXPECT_EQ(kv.check_consistency(), "");
  }
  {
    PrefixHash constant = [](uint64_t, std::span<const int>) { return uint64_t{42}; };
    KvCache kv(20, 4, true, constant);
    prefill(kv, 1, ids(4, 10));
    EXPECT_EQ(kv.match_prefix(ids(4, 10), 9).pages, 1);
    EXPECT_EQ(kv.match_prefix(ids(4, 11), 9).pages, 0);
    prefill(kv, 2, ids(8, 11));  // collides at once: nothing of it is indexed
    EXPECT_EQ(kv.indexed_pages(), 1);
    EXPECT_EQ(kv.match_prefix(ids(8, 11), 9).pages, 0);
    kv.free(1);
    kv.free(2);
    EXPECT_EQ(kv.check_consistency(), "");
  }
}

// Cached pages are evicted least recently released first (a chain's last
// page before its first), only when no page is free, and never while a
// sequence holds them; an append that cannot get its pages even so throws
// and changes nothing.
TEST(KvCache, EvictsLeastRecentlyCachedPagesOnlyWhenNoneIsFree) {
  KvCache kv(6, 2, true);
  const std::vector<int> a = ids(4, 10), b = ids(4, 20), c = ids(4, 30);
  prefill(kv, 1, a);
  prefill(kv, 2, b);
  prefill(kv, 3, c);
  kv.free(1);
  kv.free(2);
  kv.free(3);
  EXPECT_EQ(kv.pool().free_count(), 0);
  EXPECT_EQ(kv.cached_pages(), 6);
  EXPECT_EQ(kv.free_pages(), 6);
  // Reusing a's pages makes them the most recent: b is now the oldest.
  kv.add(4);
  kv.share_prefix(4, a, 4);
  EXPECT_EQ(kv.cached_pages(), 4);
  EXPECT_EQ(kv.free_pages(), 4);
  kv.free(4);
  std::vector<int32_t> slots;
  std::vector<PageCopy> copies;
  kv.add(5);
  kv.append(5, 2, slots, copies);  // one page: b's last
  EXPECT_EQ(kv.evictions(), 1);
  EXPECT_EQ(kv.match_prefix(b, 2).pages, 1);
  EXPECT_EQ(kv.match_prefix(c, 2).pages, 2);
  EXPECT_EQ(kv.match_prefix(a, 2).pages, 2);
  kv.append(5, 2, slots, copies);  // b's first
  EXPECT_EQ(kv.match_prefix(b, 2).pages, 0);
  EXPECT_EQ(kv.match_prefix(c, 2).pages, 2);
  // a is held by a sequence again: only c's pages can go.
  kv.add(6);
  kv.share_prefix(6, a, 4);
  EXPECT_EQ(kv.free_pages(), 2);
  EXPECT_EQ(kv.pages_needed(5, 6), 3);
  const int used = kv.used_pages(), cached = kv.cached_pages();
  EXPECT_THROW(kv.append(5, 6, slots, copies), Error);
  EXPECT_EQ(kv.used_pages(), used);
  EXPECT_EQ(kv.cached_pages(), cached);
  EXPECT_EQ(kv.tokens(5), 4);
  EXPECT_EQ(kv.check_consistency(), "");
  kv.append(5, 4, slots, copies);  // takes both of c's pages
  EXPECT_EQ(kv.evictions(), 4);
  EXPECT_EQ(kv.match_prefix(c, 2).pages, 0);
  EXPECT_EQ(kv.match_prefix(a, 2).pages, 2);
  EXPECT_EQ(kv.free_pages(), 0);
  EXPECT_EQ(kv.used_pages(), 6);
  EXPECT_EQ(kv.peak_used(), 6);
  EXPECT_EQ(kv.check_consistency(), "");
  kv.free(5);
  kv.free(6);
  EXPECT_EQ(kv.used_pages(), 0);
  EXPECT_EQ(kv.cached_pages(), 2);
  EXPECT_EQ(kv.check_consistency(), "");
}

// With log_evictions, the chained hashes of evicted pages are kept for a
// router (dist::ReplicaSet) until taken, least recent first; one indexed again
// by then is left out; without it nothing is kept.
TEST(KvCache, LogsEvictedPagesHashesUntilTaken) {
  const std::vector<int> a = ids(4, 10), b = ids(4, 20);
  auto chain = [](const std::vector<int>& t) {
    const uint64_t h0 = prefix_hash(kPrefixRoot, std::span<const int>(t).first(2));
    return std::vector<uint64_t>{h0, prefix_hash(h0, std::span<const int>(t).subspan(2, 2))};
  };
  for (bool logging : {false, true}) {
    KvCache kv(4, 2, true);
    kv.log_evictions(logging);
    prefill(kv, 1, a);
    prefill(kv, 2, b);
    kv.free(1);  // a's pages are the least recently cached
    kv.free(2);
    std::vector<int32_t> slots;
    std::vector<PageCopy> copies;
    kv.add(3);
    kv.append(3, 4, slots, copies);  // evicts a's last page, then its first
    EXPECT_EQ(kv.evictions(), 2);
    const std::vector<uint64_t> got = kv.take_evicted_keys();
    const std::vector<uint64_t> ha = chain(a);
    const std::vector<uint64_t> want = logging ? std::vector<uint64_t>{ha[1], ha[0]} : std::vector<uint64_t>{};
    EXPECT_EQ(got, want);
    EXPECT_TRUE(kv.take_evicted_keys().empty()) << "taken once";
    if (!logging) continue;
    // b's pages go too, and b is computed and indexed again before the take.
    kv.free(3);
    kv.add(4);
    kv.append(4, 8, slots, copies);  // the 2 free pages, then b's 2
    EXPECT_EQ(kv.evictions(), 4);
    kv.free(4);
    prefill(kv, 5, b);
    EXPECT_EQ(kv.match_prefix(b, 2).pages, 2);
    EXPECT_TRUE(kv.take_evicted_keys().empty()) << "b's pages are indexed again";
    EXPECT_EQ(kv.check_consistency(), "");
  }
}

// A random mix of sequences over a few prompt families (shared prefixes),
// sharing what the index has, appending, forking, indexing and freeing in a
// pool small enough to evict: every sequence reads back its own tokens
// (shared pages hold the right ones, no write lands in a cached page) and the
// bookkeeping stays consistent.
TEST(KvCache, RandomSharingAndEvictionKeepEveryTokenInPlace) {
  for (int page_size : {1, 2, 3, 4}) {
    std::mt19937 rng(100 + page_size);
    const int n_pages = 24;
    KvCache kv(n_pages, page_size, true);
    std::vector<int> pool(n_pages * page_size, -1);  // the token each slot holds
    std::vector<std::vector<int>> families;
    for (int f = 0; f < 3; ++f) families.push_back(ids(24, 1000 * f));
    struct Seq {
      std::vector<int> tokens;  // what it will hold
      int prompt = 0;           // its first `prompt` tokens are a prompt (indexed)
    };
    std::map<int64_t, Seq> seqs;
    int64_t next_id = 0;
    int64_t shared_tokens = 0;
    for (int step = 0; step < 4000; ++step) {
      const int op = rng() % 10;  // 0-1 new (sharing), 2 fork, 3-5 free, 6-9 append and index
      std::vector<int64_t> live;
      for (auto& [id, s] : seqs) live.push_back(id);
      const int64_t pick = live.empty() ? -1 : live[rng() % live.size()];
      if (op <= 1 || live.empty()) {
        Seq s;
        s.tokens = families[rng() % families.size()];
        s.tokens.resize(1 + rng() % 24);  // a prefix of its family, then its own tail
        for (int i = 0; i < 8; ++i) s.tokens.push_back(50000 + static_cast<int>(rng() % 1000));
        s.prompt = static_cast<int>(s.tokens.size()) - static_cast<int>(rng() % 8);
        const KvCache::PrefixMatch m = kv.match_prefix(s.tokens, s.prompt / page_size);
        // Whole pages or a part of the last one (copied on its first write).
        const int take = static_cast<int>(rng() % (m.pages * page_size + 1));
        const int free_before = kv.free_pages();
        kv.add(next_id);
        kv.share_prefix(next_id, s.tokens, take);
        EXPECT_LE(kv.free_pages(), free_before);
        shared_tokens += take;
        seqs[next_id++] = s;
      } else if (op == 2) {
        kv.fork(pick, next_id);
        Seq child = seqs[pick];
        child.prompt = std::min(child.prompt, kv.tokens(pick));  // its own tokens after the fork
        for (int t = kv.tokens(pick); t < static_cast<int>(child.tokens.size()); ++t) child.tokens[t] += 7;
        seqs[next_id++] = child;
      } else if (op <= 5) {
        kv.free(pick);
        seqs.erase(pick);
      } else {
        Seq& s = seqs[pick];
        const int have = kv.tokens(pick);
        const int n = std::min(static_cast<int>(rng() % (2 * page_size + 2)), static_cast<int>(s.tokens.size()) - have);
        std::vector<int32_t> slots;
        std::vector<PageCopy> copies;
        if (!kv.can_append(pick, n)) {
          EXPECT_GT(kv.pages_needed(pick, n), kv.free_pages() - 1);
          const int used = kv.used_pages(), cached = kv.cached_pages();
          EXPECT_THROW(kv.append(pick, n, slots, copies), Error);
          EXPECT_EQ(used, kv.used_pages());
          EXPECT_EQ(cached, kv.cached_pages());
          continue;
        }
        kv.append(pick, n, slots, copies);
        for (const PageCopy& c : copies)
          for (int o = 0; o < page_size; ++o) pool[c.dst * page_size + o] = pool[c.src * page_size + o];
        for (int i = 0; i < n; ++i) {
          // A page written through one table is held by that table alone (the
          // token written may equal the one there, so the pool cannot tell).
          ASSERT_EQ(kv.pool().refcount(slots[i] / page_size), 1) << "step " << step << " seq " << pick;
          pool[slots[i]] = s.tokens[have + i];
        }
        kv.index_prefix(pick, s.tokens, std::min(kv.tokens(pick), s.prompt) / page_size);
      }
      ASSERT_EQ(kv.check_consistency(), "") << "step " << step;
      ASSERT_EQ(kv.used_pages() + kv.cached_pages() + kv.pool().free_count(), n_pages);
      for (auto& [id, s] : seqs) {
        const auto& pages = kv.pages(id);
        for (int t = 0; t < kv.tokens(id); ++t)
          ASSERT_EQ(pool[pages[t / page_size] * page_size + t % page_size], s.tokens[t])
              << "page size " << page_size << " step " << step << " seq " << id << " token " << t;
      }
    }
    EXPECT_GT(shared_tokens, 500) << "page size " << page_size;
    EXPECT_GT(kv.evictions(), 100) << "page size " << page_size;
    for (auto& [id, s] : seqs) kv.free(id);
    EXPECT_EQ(kv.used_pages(), 0);
    EXPECT_EQ(kv.check_consistency(), "");
  }
}
