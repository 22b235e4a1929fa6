// One driver for every KvTransport this machine can run (today: zmq). Parts of awkward sizes
// (0 bytes, 1 byte, a few MiB) arrive intact and in order and are acknowledged; parts sent
// from another thread while progress() runs arrive too; a peer that never answers fails each
// part at its deadline with an error naming it; a hostile sender's malformed frames are
// dropped and counted while real parts keep flowing; an oversized part is refused. With CURVE
// keys only the admitted ranks' parts arrive, and parts go only to the holder of the key given.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <zmq.hpp>

#include "comm/kv_transport.h"

namespace sw::comm {
namespace {

using Clock = std::chrono::steady_clock;

std::string payload(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Drives both ends until `done` or the time limit.
template <typename Done>
bool pump(KvTransport& a, KvTransport& b, Done done, double limit_s = 10) {
  const auto until = Clock::now() + std::chrono::duration<double>(limit_s);
  while (Clock::now() < until) {
    EXPECT_TRUE(a.progress(0.001).ok());
    EXPECT_TRUE(b.progress(0.001).ok());
    if (done()) return true;
  }
  return false;
}

class KvTransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<KvTransport> make(int64_t max_part = int64_t{64} << 20) {
    KvTransportOptions o;
    o.transport = GetParam();
    o.max_part_bytes = max_part;
    auto t = make_kv_transport(o);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? std::move(t).value() : nullptr;
  }
};

TEST_P(KvTransportTest, PartsArriveIntactInOrderAndAreAcknowledged) {
  auto a = make(), b = make();
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->address(), b->address());
  const std::vector<size_t> sizes = {0, 1, 4096, 3 << 20, 7};
  for (size_t i = 0; i < sizes.size(); ++i)
    ASSERT_TRUE(a->send(b->address(), 42, static_cast<uint32_t>(i),
                        payload(sizes[i], static_cast<uint32_t>(i)), 10)
                    .ok());
  std::vector<KvPart> got;
  std::vector<KvSendResult> acks;
  ASSERT_TRUE(pump(*a, *b,
                   [&] {
                     for (auto& p : b->take_received()) got.push_back(std::move(p));
                     for (auto& r : a->take_completed()) acks.push_back(std::move(r));
                     return got.size() == sizes.size() && acks.size() == sizes.size();
                   }))
      << got.size() << " parts, " << acks.size() << " acks";
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(got[i].transfer, 42u);
    EXPECT_EQ(got[i].part, i) << "parts from one sender keep their order";
    EXPECT_EQ(got[i].bytes, payload(sizes[i], static_cast<uint32_t>(i))) << "part " << i;
    EXPECT_TRUE(acks[i].status.ok()) << acks[i].status.to_string();
    EXPECT_EQ(acks[i].peer, b->address());
  }
  EXPECT_EQ(a->num_in_flight(), 0);
  int64_t total = 0;
  for (size_t n : sizes) total += static_cast<int64_t>(n);
  EXPECT_EQ(a->stats().bytes_sent, total);
  EXPECT_EQ(b->stats().bytes_received, total);
  EXPECT_EQ(a->stats().parts_acked, static_cast<int64_t>(sizes.size()));
}

TEST_P(KvTransportTest, SendsFromAnotherThreadWhileProgressRuns) {
  auto a = make(), b = make();
  ASSERT_TRUE(a && b);
  constexpr int kParts = 200;
  std::thread sender([&] {
    for (int i = 0; i < kParts; ++i)
      EXPECT_TRUE(a->send(b->address(), 7, static_cast<uint32_t>(i),
                          payload(1000 + i, static_cast<uint32_t>(i)), 10)
                      .ok());
  });
  std::vector<KvPart> got;
  int acked = 0;
  const bool done = pump(*a, *b, [&] {
    for (auto& p : b->take_received()) got.push_back(std::move(p));
    for (auto& r : a->take_completed()) acked += r.status.ok() ? 1 : 0;
    return static_cast<int>(got.size()) == kParts && acked == kParts;
  });
  sender.join();
  ASSERT_TRUE(done) << got.size() << " parts, " << acked << " acks";
  for (int i = 0; i < kParts; ++i) {
    EXPECT_EQ(got[i].part, static_cast<uint32_t>(i));
    EXPECT_EQ(got[i].bytes, payload(1000 + i, static_cast<uint32_t>(i)));
  }
}

TEST_P(KvTransportTest, AnUnansweredPartFailsAtItsDeadlineNamingThePeer) {
  auto a = make();
  ASSERT_TRUE(a);
  // A port nobody listens on: bind one, note it, close it.
  std::string dead;
  {
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::router);
    s.bind("tcp://127.0.0.1:*");
    dead = s.get(zmq::sockopt::last_endpoint);
  }
  const auto t0 = Clock::now();
  ASSERT_TRUE(a->send(dead, 9, 3, payload(100, 1), 0.3).ok());
  std::vector<KvSendResult> done;
  while (done.empty() && Clock::now() - t0 < std::chrono::seconds(5)) {
    ASSERT_TRUE(a->progress(0.01).ok());
    done = a->take_completed();
  }
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(done[0].status.message().find("KV transfer 9 part 3 to " + dead), std::string::npos)
      << done[0].status.message();
  EXPECT_GE(waited, 0.3);
  EXPECT_LT(waited, 2.0);
  EXPECT_EQ(a->num_in_flight(), 0);
}

TEST_P(KvTransportTest, HostileFramesAreDroppedAndCountedAndRealPartsStillFlow) {
  auto a = make(/*max_part=*/1 << 16), b = make(/*max_part=*/1 << 16);
  ASSERT_TRUE(a && b);
  zmq::context_t ctx;
  zmq::socket_t evil(ctx, zmq::socket_type::dealer);
  evil.set(zmq::sockopt::linger, 0);
  evil.connect(b->address());
  evil.send(zmq::str_buffer("not a header"), zmq::send_flags::sndmore);
  evil.send(zmq::str_buffer("payload"), zmq::send_flags::none);
  evil.send(zmq::str_buffer("one frame only"), zmq::send_flags::none);
  std::string bad_magic(24, 'x');
  evil.send(zmq::buffer(bad_magic), zmq::send_flags::sndmore);
  evil.send(zmq::str_buffer("payload"), zmq::send_flags::none);
  ASSERT_TRUE(a->send(b->address(), 1, 0, payload(10, 5), 10).ok());
  std::vector<KvPart> got;
  ASSERT_TRUE(pump(*a, *b, [&] {
    for (auto& p : b->take_received()) got.push_back(std::move(p));
    return got.size() == 1 && b->stats().num_rejected >= 3;
  }));
  EXPECT_EQ(got[0].bytes, payload(10, 5));
  EXPECT_EQ(b->stats().num_rejected, 3);
  // Larger than the limit: refused before anything is sent.
  Status big = a->send(b->address(), 1, 1, std::string((1 << 16) + 1, 'a'), 10);
  EXPECT_EQ(big.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("exceed the part limit"), std::string::npos);
}

// Issue 12, "the control channel trusts any process that can reach it", applied to the KV
// transports: a job's transport takes parts only from the job's keys, and sends only to the
// holder of the destination's key.
TEST(KvTransport, WithKeysOnlyTheJobsRanksCanSendAndPartsGoOnlyToTheKeyHolder) {
  ASSERT_TRUE(curve_available()) << "libzmq without CURVE";
  auto make_keyed = [](const CurveKeyPair& own, const std::vector<CurveKeyPair>& admitted) {
    KvTransportOptions o;
    o.keys = own;
    for (size_t i = 0; i < admitted.size(); ++i)
      o.admitted_senders[admitted[i].public_key] = "rank " + std::to_string(i + 1);
    auto t = make_kv_transport(o);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? std::move(t).value() : nullptr;
  };
  std::vector<CurveKeyPair> job;
  for (int i = 0; i < 3; ++i) job.push_back(*make_curve_keypair());
  const CurveKeyPair stranger_key = *make_curve_keypair();
  auto a = make_keyed(job[0], job), b = make_keyed(job[1], job), e = make_keyed(job[2], job);
  auto stranger = make_keyed(stranger_key, {stranger_key});
  auto plain = make_kv_transport(KvTransportOptions{});
  ASSERT_TRUE(a && b && e && stranger && plain.ok());
  std::vector<KvTransport*> all = {a.get(), b.get(), e.get(), stranger.get(), plain->get()};
  std::vector<KvPart> at_b, at_e;
  std::map<uint64_t, Status> results;  // transfer -> how its part ended (at its sender)
  auto pump_all = [&](auto done) {
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < until && !done()) {
      for (KvTransport* t : all) {
        EXPECT_TRUE(t->progress(0.001).ok());
        for (auto& r : t->take_completed()) results[r.transfer] = r.status;
      }
      for (auto& p : b->take_received()) at_b.push_back(std::move(p));
      for (auto& p : e->take_received()) at_e.push_back(std::move(p));
    }
  };
  // A rank of the job, sending to the key it was given: delivered and acknowledged.
  ASSERT_TRUE(a->set_peer_key(b->address(), job[1].public_key).ok());
  ASSERT_TRUE(a->send(b->address(), 1, 0, payload(100, 1), 10).ok());
  // A process with keys of its own, knowing b's public key, and one without CURVE: refused at
  // the handshake, so their parts are never acknowledged.
  ASSERT_TRUE(stranger->set_peer_key(b->address(), job[1].public_key).ok());
  ASSERT_TRUE(stranger->send(b->address(), 2, 0, payload(100, 2), 0.5).ok());
  ASSERT_TRUE((*plain)->send(b->address(), 3, 0, payload(100, 3), 0.5).ok());
  // The wrong key for e (b's): the handshake fails, nothing reaches e.
  ASSERT_TRUE(a->set_peer_key(e->address(), job[1].public_key).ok());
  ASSERT_TRUE(a->send(e->address(), 4, 0, payload(100, 4), 0.5).ok());
  // No key given at all: refused before anything is sent.
  const std::string nowhere = "tcp://127.0.0.1:1";
  ASSERT_TRUE(a->send(nowhere, 5, 0, payload(10, 5), 0.5).ok());
  pump_all([&] { return results.size() == 5 && b->stats().num_refused >= 2; });
  ASSERT_EQ(results.size(), 5u);
  EXPECT_TRUE(results[1].ok()) << results[1].message();
  ASSERT_EQ(at_b.size(), 1u);
  EXPECT_EQ(at_b[0].transfer, 1u);
  EXPECT_EQ(at_b[0].bytes, payload(100, 1));
  EXPECT_TRUE(at_e.empty());
  for (uint64_t t : {2, 3, 4}) {
    EXPECT_EQ(results[t].code(), StatusCode::kDeadlineExceeded)
        << t << ": " << results[t].message();
  }
  EXPECT_NE(results[5].message().find("no public key for peer"), std::string::npos)
      << results[5].message();
  EXPECT_GE(b->stats().num_refused, 2);  // the stranger and the one without CURVE
  EXPECT_EQ(b->stats().num_rejected, 0);
  // A second key for the same address is refused.
  EXPECT_FALSE(a->set_peer_key(b->address(), job[2].public_key).ok());
}

TEST(KvTransport, UnknownTransportIsAnError) {
  KvTransportOptions o;
  o.transport = "carrier-pigeon";
  auto t = make_kv_transport(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("expected zmq"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Transports, KvTransportTest, ::testing::Values(std::string("zmq")));

}  // namespace
}  // namespace sw::comm
