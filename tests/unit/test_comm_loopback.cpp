// The self-checking communicator suite on the loopback transport (1-8 threads, emulated node
// layouts, a sub-group), plus the bounded-wait test: a rank that skips a collective makes
// the others fail with an error that names the op, group, rank and missing peer.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "comm/loopback.h"
#include "tests/mpi/comm_suite.h"

namespace sw::comm {
namespace {

CommOptions test_options(int ranks_per_node = 0) {
  CommOptions o;
  o.timeout_s = 20;  // generous: the loopback never needs it unless a test is broken
  o.ranks_per_node = ranks_per_node;
  return o;
}

// Runs the suite on every rank; `group` selects world ranks [first, last] as a sub-group.
void run_suite(int n, int ranks_per_node, int first = -1, int last = -1) {
  std::vector<int64_t> wrong(n, 0);
  auto st = run_loopback(n, test_options(ranks_per_node), [&](Communicator& world) -> Status {
    std::unique_ptr<Communicator> sub;
    Communicator* c = &world;
    if (first >= 0) {
      bool in = world.rank() >= first && world.rank() <= last;
      SW_ASSIGN_OR_RETURN(sub, world.split(in ? 0 : -1, world.rank()));
      if (!in) return world.barrier();
      c = sub.get();
    }
    auto rep = testing::run_comm_suite(*c, 1234 + n);
    for (const auto& note : rep.notes) ADD_FAILURE() << "rank " << c->rank() << ": " << note;
    wrong[world.rank()] = testing::total_wrong(*c, rep);
    return world.barrier();
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r].to_string();
    EXPECT_EQ(wrong[r], 0) << "rank " << r;
  }
}

class LoopbackSuite : public ::testing::TestWithParam<int> {};
TEST_P(LoopbackSuite, AllCollectivesSelfCheck) { run_suite(GetParam(), 0); }
INSTANTIATE_TEST_SUITE_P(Threads, LoopbackSuite, ::testing::Range(1, 9));

TEST(LoopbackLayouts, EightRanksAsTwoNodesOfFour) { run_suite(8, 4); }
TEST(LoopbackLayouts, SixRanksAsThreeNodesOfTwo) { run_suite(6, 2); }
TEST(LoopbackLayouts, SevenRanksAsNodesOfThreeThreeOne) { run_suite(7, 3); }
TEST(LoopbackLayouts, OneRankPerNode) { run_suite(5, 1); }
TEST(LoopbackLayouts, SubGroupOfRanksOneToSixOfSeven) { run_suite(7, 3, 1, 6); }
TEST(LoopbackLayouts, SubGroupSpanningNodesUnevenly) { run_suite(8, 4, 3, 7); }

TEST(LoopbackTimeout, SkippedCollectiveNamesTheMissingPeer) {
  CommOptions o = test_options();
  o.timeout_s = 1.0;
  const int n = 4, skipper = 2;
  std::vector<std::string> messages(n);
  std::vector<StatusCode> codes(n, StatusCode::kOk);
  std::vector<double> seconds(n, 0);
  std::vector<Status> after(n);
  auto st = run_loopback(n, o, [&](Communicator& c) -> Status {
    if (c.rank() == skipper) return Status();  // never arrives
    std::vector<float> x(16, 1.0f), y(16);
    auto t0 = std::chrono::steady_clock::now();
    Status s = c.all_reduce(x.data(), y.data(), 16, DType::kF32);
    seconds[c.rank()] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    codes[c.rank()] = s.code();
    messages[c.rank()] = s.message();
    after[c.rank()] = c.barrier();
    return Status();
  });
  for (int r = 0; r < n; ++r) {
    if (r == skipper) continue;
    EXPECT_EQ(codes[r], StatusCode::kDeadlineExceeded) << messages[r];
    EXPECT_NE(messages[r].find("all_reduce on group 'world'"), std::string::npos) << messages[r];
    EXPECT_NE(messages[r].find(fmt::format("rank {} (world rank {})", r, r)), std::string::npos)
        << messages[r];
    EXPECT_NE(messages[r].find("peers that never arrived: [2] (world ranks [2])"),
              std::string::npos)
        << messages[r];
    EXPECT_GE(seconds[r], 0.9);
    EXPECT_LT(seconds[r], 3.0);
    // After a timeout the communicator refuses work instead of mismatching messages.
    EXPECT_EQ(after[r].code(), StatusCode::kUnavailable) << after[r].to_string();
  }
}

TEST(LoopbackTimeout, MissingSenderOfPointToPoint) {
  CommOptions o = test_options();
  o.timeout_s = 0.3;
  auto st = run_loopback(2, o, [&](Communicator& c) -> Status {
    if (c.rank() == 1) return Status();
    float x = 0;
    return c.recv(&x, 1, DType::kF32, 1, 5);
  });
  EXPECT_EQ(st[0].code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(st[0].message().find("recv on group 'world'"), std::string::npos) << st[0].message();
  EXPECT_NE(st[0].message().find("never arrived: [1]"), std::string::npos) << st[0].message();
}

TEST(LoopbackArgs, BadCountsAreRejectedWithTheOpName) {
  auto st = run_loopback(2, test_options(), [&](Communicator& c) -> Status {
    std::vector<int64_t> counts(3, 0), displs(3, 0);  // wrong length
    int32_t buf = 0;
    return c.all_to_all_v(&buf, counts, displs, &buf, counts, displs, DType::kI32);
  });
  for (const auto& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("all_to_all_v"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace sw::comm
