// KvBlockPool under random allocate/append/fork/free keeps its invariants; exhaustion is a
// clear error that changes nothing; forks share blocks and copy a shared partial block.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "coordinator/kv_block_pool.h"

namespace sw::coordinator {
namespace {

TEST(KvBlockPool, RandomOperationsKeepInvariants) {
  for (int block_size : {1, 4, 16}) {
    SCOPED_TRACE("block_size " + std::to_string(block_size));
    KvBlockPool pool(40, block_size);
    std::mt19937 rng(1234 + block_size);
    std::map<int64_t, int64_t> tokens;  // independent model of each sequence's length
    int64_t next = 0;
    int ok_appends = 0, refused = 0;
    for (int step = 0; step < 3000; ++step) {
      int op = static_cast<int>(rng() % 10);
      if (op < 2 || tokens.empty()) {
        ASSERT_TRUE(pool.add_sequence(next).ok());
        tokens[next++] = 0;
      } else {
        auto it = tokens.begin();
        std::advance(it, rng() % tokens.size());
        int64_t id = it->first;
        if (op < 7) {
          int64_t n = rng() % (3 * block_size + 2);
          int64_t free_before = pool.num_free_blocks();
          std::vector<BlockCopy> copies;
          Status s = pool.append(id, n, &copies);
          if (s.ok()) {
            it->second += n;
            ++ok_appends;
            for (const auto& c : copies) EXPECT_NE(c.src, c.dst);
          } else {
            ++refused;
            EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
            EXPECT_EQ(pool.num_free_blocks(), free_before);  // nothing changed
          }
        } else if (op < 8) {
          if (pool.fork(id, next).ok()) tokens[next++] = it->second;
        } else {
          ASSERT_TRUE(pool.free_sequence(id).ok());
          tokens.erase(it);
        }
      }
      Status inv = pool.check_invariants();
      ASSERT_TRUE(inv.ok()) << "step " << step << ": " << inv.message();
      for (const auto& [id, n] : tokens) ASSERT_EQ(pool.num_tokens(id), n);
    }
    EXPECT_GT(ok_appends, 100);
    EXPECT_GT(refused, 0);  // the pool really ran out sometimes
    for (const auto& [id, n] : tokens) ASSERT_TRUE(pool.free_sequence(id).ok());
    EXPECT_EQ(pool.num_free_blocks(), 40);
  }
}

TEST(KvBlockPool, SlotsFollowTheBlockTable) {
  KvBlockPool pool(8, 4);
  ASSERT_TRUE(pool.add_sequence(1).ok());
  ASSERT_TRUE(pool.add_sequence(2).ok());
  ASSERT_TRUE(pool.append(1, 3, nullptr).ok());
  ASSERT_TRUE(pool.append(2, 5, nullptr).ok());
  ASSERT_TRUE(pool.append(1, 3, nullptr).ok());  // crosses into a second block
  const auto& t1 = pool.block_table(1);
  ASSERT_EQ(t1.size(), 2u);
  EXPECT_EQ(pool.slot(1, 5), t1[1] * 4 + 1);
  EXPECT_EQ(pool.slot(2, 4), pool.block_table(2)[1] * 4);
}

TEST(KvBlockPool, ForkSharesBlocksAndCopiesOnWrite) {
  KvBlockPool pool(6, 4);
  ASSERT_TRUE(pool.add_sequence(1).ok());
  ASSERT_TRUE(pool.append(1, 6, nullptr).ok());  // 2 blocks, last one half full
  ASSERT_TRUE(pool.fork(1, 2).ok());
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_EQ(pool.block_table(2), pool.block_table(1));
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(pool.append(2, 1, &copies).ok());
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, pool.block_table(1)[1]);
  EXPECT_EQ(copies[0].dst, pool.block_table(2)[1]);
  EXPECT_EQ(pool.block_table(2)[0], pool.block_table(1)[0]);  // full block still shared
  EXPECT_TRUE(pool.check_invariants().ok());
  ASSERT_TRUE(pool.free_sequence(1).ok());
  EXPECT_EQ(pool.num_free_blocks(), 4);  // the shared first block stays with sequence 2
  EXPECT_TRUE(pool.check_invariants().ok());
}

TEST(KvBlockPool, ExhaustionMessageSaysWhatWasNeeded) {
  KvBlockPool pool(2, 16);
  ASSERT_TRUE(pool.add_sequence(7).ok());
  Status s = pool.append(7, 40, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("sequence 7 needs 3 more block(s)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("2 of 2 free"), std::string::npos) << s.message();
  EXPECT_EQ(pool.num_tokens(7), 0);
  EXPECT_FALSE(pool.append(99, 1, nullptr).ok());
  EXPECT_FALSE(pool.add_sequence(7).ok());
}

}  // namespace
}  // namespace sw::coordinator
