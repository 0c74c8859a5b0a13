// KV cache bookkeeping: a random mix of add/fork/append/free never leaks or
// double-frees pages, refcounts match the tables, and copy-on-write gives
// each sequence its own copy of a shared partial page (checked with a
// shadow model of every slot's contents).
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
  EXPECT_EQ(kv.pool().peak_used(), 3);
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
  EXPECT_THROW(kv.pool().release(1), Error);
  EXPECT_THROW(PagePool(0), Error);
}
