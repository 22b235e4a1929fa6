// `shardwise serve`'s ZeroMQ endpoint over real ZeroMQ sockets (loopback, ephemeral port): a
// ZmqServer in front of an EngineLoop over an Engine of SimulatedExecutors (a fake model whose
// tokens are computed here without any scheduler), both driven turn by turn from this thread
// (in `serve` each has its own) so every request can be caught in each state. Streams must equal
// the reference chain; every bad frame gets an error reply while the others are served; an abort or
// a vanished client frees the request's blocks in every state (queued, prefilling, transferring,
// decoding); a drain refuses new work and ends with nothing open. The C++ client (ServeClient) is
// tested against the same server.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "coordinator/engine.h"
#include "coordinator/engine_loop.h"
#include "coordinator/serve_client.h"
#include "frontend/zmq_server.h"
#include "sim_engine_util.h"

namespace sw::coordinator {
namespace {

using frontend::ZmqServer;
using frontend::ZmqServerOptions;
using nlohmann::json;

InstanceSpec spec(InstanceRole role, int64_t blocks, int pool) {
  InstanceSpec s;
  s.role = role;
  s.pool = pool;
  s.num_kv_blocks = blocks;
  s.kv_block_size = 4;
  s.name = fmt::format("{} instance", role == InstanceRole::kPrefill  ? "prefill"
                                      : role == InstanceRole::kDecode ? "decode"
                                                                      : "mixed");
  return s;
}

// An engine of simulated instances behind an engine loop and a bound ZmqServer.
struct Fixture {
  SimulatedModel model = hashed_model();
  SimulatedKvNetwork network;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EngineLoop> loop;
  std::unique_ptr<ZmqServer> server;

  explicit Fixture(bool disaggregated = false, SchedulerOptions so = {}, ZmqServerOptions sv = {},
                   int64_t blocks = 256, SimulatedTiming timing = {}, EngineLoopOptions lo = {}) {
    loop = std::make_unique<EngineLoop>(lo);
    EngineOptions eo;
    eo.scheduler = so;
    engine = std::make_unique<Engine>(fake_model(), eo);
    std::vector<InstanceSpec> specs;
    if (disaggregated) {
      specs = {spec(InstanceRole::kPrefill, blocks, 0), spec(InstanceRole::kDecode, blocks, 1)};
    } else {
      specs = {spec(InstanceRole::kMixed, blocks, 0)};
    }
    for (const auto& s : specs)
      engine->add_instance(s, std::make_unique<SimulatedExecutor>(
                                  1, s.num_kv_blocks, s.kv_block_size, model, timing, &network));
    sv.endpoint = "tcp://127.0.0.1:*";
    serve::ServerInfo info;
    info.model = "fake";
    info.vocab_size = kVocab;
    info.max_model_len = 4096;
    auto bound = ZmqServer::bind(sv, info, loop.get());
    EXPECT_TRUE(bound.ok()) << bound.status().to_string();
    server = std::move(bound).value();
  }
  void turn() {
    Status st = loop->run_once(*engine, 0.002);
    ASSERT_TRUE(st.ok()) << st.to_string();
    st = server->run_once(0);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  // The engine id of the open request a client named `client_id`, or -1.
  int64_t engine_id(const std::string& client_id) const {
    return loop->engine_id(server->ticket(client_id));
  }
  // Server turns until `done()` (false after `timeout_s`).
  bool run_until(const std::function<bool()>& done, double timeout_s = 10) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (!done()) {
      if (Clock::now() > deadline) return false;
      turn();
    }
    return true;
  }
  bool all_free() const {
    return engine->scheduler().kv().all_free() && engine->scheduler().kv().check_invariants().ok();
  }
};

// A raw DEALER (or REQ) that reads whatever the server sent.
struct RawClient {
  zmq::context_t ctx;
  zmq::socket_t sock;
  std::vector<json> inbox;
  explicit RawClient(const std::string& endpoint, zmq::socket_type type = zmq::socket_type::dealer)
      : sock(ctx, type) {
    sock.set(zmq::sockopt::linger, 0);
    sock.connect(endpoint);
  }
  void send(const std::string& frame) { sock.send(zmq::buffer(frame), zmq::send_flags::none); }
  void send(const json& j) { send(j.dump()); }
  void read_all() {
    zmq::message_t m;
    // A REQ socket takes one reply per request: then it is done.
    const bool req = sock.get(zmq::sockopt::type) == ZMQ_REQ;
    if (req && !inbox.empty()) return;
    while (sock.recv(m, zmq::recv_flags::dontwait)) {
      inbox.push_back(json::parse(m.to_string()));
      if (req) return;
    }
  }
  // Messages about request `id`, in order.
  std::vector<json> about(const std::string& id) const {
    std::vector<json> out;
    for (const auto& m : inbox)
      if (m.contains("id") && m["id"].is_string() && m["id"] == id) out.push_back(m);
    return out;
  }
  bool ended(const std::string& id) const {
    for (const auto& m : about(id))
      if (m["type"] == "done" || m["type"] == "error") return true;
    return false;
  }
  std::vector<int32_t> streamed(const std::string& id) const {
    std::vector<int32_t> out;
    for (const auto& m : about(id))
      if (m["type"] == "tokens") {
        EXPECT_EQ(m["index"].get<int64_t>(), static_cast<int64_t>(out.size()));
        for (const auto& t : m["tokens"]) out.push_back(t.get<int32_t>());
      }
    return out;
  }
  void close() { sock.close(); }
};

json generate(const std::string& id, const std::vector<int32_t>& prompt_ids, int64_t max_tokens) {
  return json{{"v", 1},
              {"type", "generate"},
              {"id", id},
              {"prompt_ids", prompt_ids},
              {"max_tokens", max_tokens},
              {"ignore_eos", true}};
}

// Runs the server until `client` has the end of every id in `ids`.
void serve_until_ended(Fixture& f, RawClient& client, const std::vector<std::string>& ids) {
  ASSERT_TRUE(f.run_until([&] {
    client.read_all();
    return std::all_of(ids.begin(), ids.end(), [&](const auto& id) { return client.ended(id); });
  })) << "requests did not end";
}

TEST(Serve, StreamsEqualTheReferenceForTwoClientsAtOnce) {
  Fixture f(false, SchedulerOptions{});
  RawClient a(f.server->endpoint()), b(f.server->endpoint());
  std::map<std::string, std::pair<std::vector<int32_t>, int64_t>> want;
  const std::vector<std::pair<int, int64_t>> shapes = {{1, 1}, {7, 13}, {33, 5}, {129, 40}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto p = prompt(shapes[i].first, static_cast<int>(i));
    want[fmt::format("r{}", i)] = {p, shapes[i].second};
    (i % 2 ? b : a).send(generate(fmt::format("r{}", i), p, shapes[i].second));
  }
  serve_until_ended(f, a, {"r0", "r2"});
  serve_until_ended(f, b, {"r1", "r3"});
  for (const auto& [id, w] : want) {
    RawClient& c = (id == "r1" || id == "r3") ? b : a;
    EXPECT_EQ(c.streamed(id), expected_tokens(f.model, w.first, w.second)) << id;
    const json done = c.about(id).back();
    ASSERT_EQ(done["type"], "done");
    EXPECT_EQ(done["finish_reason"], "length");
    EXPECT_EQ(done["num_prompt_tokens"].get<int64_t>(), static_cast<int64_t>(w.first.size()));
    EXPECT_EQ(done["num_output_tokens"].get<int64_t>(), w.second);
    EXPECT_FALSE(done.contains("output_ids"));  // streamed
    EXPECT_GE(done["e2el_ms"].get<double>(), done["ttft_ms"].get<double>());
  }
  EXPECT_EQ(f.server->num_open(), 0u);
  EXPECT_EQ(f.server->num_clients(), 0u);
  EXPECT_TRUE(f.all_free());
}

TEST(Serve, DisaggregatedStreamsEqualTheReferenceAndNameBothInstances) {
  Fixture f(true);
  RawClient c(f.server->endpoint());
  c.send(generate("x", prompt(21), 9));
  serve_until_ended(f, c, {"x"});
  EXPECT_EQ(c.streamed("x"), expected_tokens(f.model, prompt(21), 9));
  const json done = c.about("x").back();
  EXPECT_EQ(done["instance"], 1);          // decode
  EXPECT_EQ(done["prefill_instance"], 0);  // prefill
  EXPECT_GT(done["kv_bytes"].get<int64_t>(), -1);
  EXPECT_TRUE(f.all_free());
}

TEST(Serve, UnstreamedRequestGetsEveryTokenInItsDoneMessageOverAReqSocket) {
  Fixture f;
  RawClient c(f.server->endpoint(), zmq::socket_type::req);  // REQ adds an empty delimiter
  json g = generate("whole", prompt(5), 6);
  g["stream"] = false;
  c.send(g);
  serve_until_ended(f, c, {"whole"});
  ASSERT_EQ(c.about("whole").size(), 1u);  // no token messages: only done
  const json done = c.about("whole")[0];
  EXPECT_EQ(done["output_ids"].get<std::vector<int32_t>>(), expected_tokens(f.model, prompt(5), 6));
}

TEST(Serve, EveryBadFrameGetsAnErrorReplyWhileAGoodRequestIsServed) {
  Fixture f;
  RawClient good(f.server->endpoint()), bad(f.server->endpoint());
  good.send(generate("good", prompt(17), 24));
  struct Case {
    std::string frame;
    std::string code;
    std::string says;
  };
  auto gen = [](json patch) {
    json g = generate("bad", prompt(4), 4);
    g.update(patch);
    return g.dump();
  };
  json no_prompt = generate("bad", {}, 4);
  const std::vector<Case> cases = {
      {no_prompt.dump(), "invalid_request", "empty prompt"},
      {gen({{"prompt_ids", {1, 2, static_cast<int>(kVocab)}}}), "invalid_request", "500"},
      {gen({{"prompt_ids", std::vector<int32_t>(5000, 1)}}), "invalid_request", "4096"},
      {gen({{"max_tokens", -3}}), "invalid_request", "max_tokens"},
      {gen({{"temperature", -0.5}}), "invalid_request", "temperature"},
      {gen({{"top_p", 0}}), "invalid_request", "top_p"},
      {gen({{"prompt_ids", {1, -2}}}), "invalid_request", "prompt_ids"},
      {gen({{"prompt_ids", "1,2"}}), "invalid_request", "prompt_ids"},
      {gen({{"colour", "blue"}}), "invalid_request", "unknown key 'colour'"},
      {gen({{"v", 2}}), "unsupported_version", "version"},
      {gen({{"type", "teleport"}}), "bad_frame", "teleport"},
      {"{not json", "bad_frame", "JSON"},
      {"[1, 2, 3]", "bad_frame", "JSON object"},
      {"", "bad_frame", "JSON"},
      {json{{"v", 1}, {"type", "abort"}, {"id", "nobody"}}.dump(), "unknown_id", "nobody"},
      // Duplicate keys are refused, not resolved to one of them; nesting is bounded.
      {R"({"v": 1, "type": "ping", "type": "info"})", "bad_frame", "duplicate key \"type\""},

      {json{{"v", 1}, {"type", "generate"}, {"id", std::string(300, 'x')}}.dump(),
       "invalid_request", "id"},
  };
  for (const Case& c : cases) bad.send(c.frame);
  // Two frames in one message.
  bad.sock.send(zmq::str_buffer("{}"), zmq::send_flags::sndmore);
  bad.sock.send(zmq::str_buffer("{}"), zmq::send_flags::none);
  ASSERT_TRUE(f.run_until([&] {
    bad.read_all();
    return bad.inbox.size() >= cases.size() + 1;
  })) << bad.inbox.size()
      << " replies: " << json(bad.inbox).dump().substr(0, 3000);
  ASSERT_EQ(bad.inbox.size(), cases.size() + 1);
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& e = bad.inbox[i];
    EXPECT_EQ(e["type"], "error") << i;
    EXPECT_EQ(e["code"], cases[i].code) << i << ": " << e.dump();
    EXPECT_NE(e["message"].get<std::string>().find(cases[i].says), std::string::npos)
        << i << ": " << e.dump();
  }
  EXPECT_EQ(bad.inbox.back()["code"], "bad_frame");
  EXPECT_NE(bad.inbox.back()["message"].get<std::string>().find("2 frames"), std::string::npos);
  // A frame over 64 KiB is parsed on the large-frame lane: its reply comes too, nesting bounded.
  bad.inbox.clear();
  bad.send(R"({"v": 1, "type": "generate", "x": )" + std::string(100000, '[') +
           std::string(100000, ']') + "}");
  ASSERT_TRUE(f.run_until([&] {
    bad.read_all();
    return !bad.inbox.empty();
  }));
  EXPECT_EQ(bad.inbox[0]["code"], "bad_frame");
  EXPECT_NE(bad.inbox[0]["message"].get<std::string>().find("nested deeper than 16"),
            std::string::npos)
      << bad.inbox[0].dump();
  // The good request was served alongside, exactly.
  serve_until_ended(f, good, {"good"});
  EXPECT_EQ(good.streamed("good"), expected_tokens(f.model, prompt(17), 24));
  // A duplicate id is refused while the first is open, accepted once it ended.
  good.send(generate("dup", prompt(3), 900));  // long enough to be open when the next comes
  good.send(generate("dup", prompt(3), 50));
  ASSERT_TRUE(f.run_until([&] {
    good.read_all();
    for (const json& m : good.about("dup"))
      if (m["type"] == "error") return m["code"] == "duplicate_id";
    return false;
  }));
  ASSERT_TRUE(f.run_until([&] {  // the first "dup" runs to its end
    good.read_all();
    return good.about("dup").back()["type"] == "done";
  }));
  EXPECT_EQ(good.streamed("dup"), expected_tokens(f.model, prompt(3), 900));
  EXPECT_EQ(f.server->counters().rejected, static_cast<int64_t>(cases.size()) + 3);
  EXPECT_TRUE(f.all_free());
}

// A frame over max_frame_bytes is never buffered: ZeroMQ drops it with its sender's connection
// (no reply can reach a peer whose connection is gone), and everyone else is served on.
TEST(Serve, AFrameOverTheLimitDropsItsSenderAndNothingElse) {
  ZmqServerOptions sv;
  sv.max_frame_bytes = 4096;
  Fixture f(false, {}, sv);
  RawClient big(f.server->endpoint()), good(f.server->endpoint());
  json g = generate("big", prompt(4), 4);
  g["pad"] = std::string(8192, 'x');
  big.send(g);
  good.send(generate("good", prompt(9), 12));
  serve_until_ended(f, good, {"good"});
  EXPECT_EQ(good.streamed("good"), expected_tokens(f.model, prompt(9), 12));
  for (int i = 0; i < 50; ++i) f.turn();
  big.read_all();
  EXPECT_TRUE(big.inbox.empty()) << big.inbox.size() << " replies to a dropped connection";
  EXPECT_EQ(f.server->counters().accepted, 1);
  // Exactly at the limit is still served.
  RawClient edge(f.server->endpoint());
  json e = generate("edge", prompt(3), 2);
  e["pad"] = "";
  const size_t base = e.dump().size();
  e["pad"] = std::string(4096 - base, 'y');
  ASSERT_EQ(e.dump().size(), 4096u);
  edge.send(e);
  serve_until_ended(f, edge, {"edge"});
  EXPECT_EQ(edge.about("edge").back()["type"], "error") << "pad is an unknown key";
}

// A client flooding large frames: each gets a reply (parsed on the large-frame lane, or refused
// unread as overloaded once 8 wait), and another client's small request is served meanwhile.
TEST(Serve, AFloodOfLargeFramesIsAnsweredAndDoesNotHoldOthersBack) {
  Fixture f;
  RawClient flood(f.server->endpoint()), good(f.server->endpoint());
  std::string wide = R"({"v": 1, "type": "generate", "prompt_ids": [1], "junk": [)";
  for (int i = 0; i < 200000; ++i) wide += "123456789,";
  wide += "0]}";
  constexpr int kFrames = 24;
  for (int i = 0; i < kFrames; ++i) flood.send(wide);
  good.send(generate("good", prompt(7), 9));
  serve_until_ended(f, good, {"good"});
  EXPECT_EQ(good.streamed("good"), expected_tokens(f.model, prompt(7), 9));
  ASSERT_TRUE(f.run_until([&] {
    flood.read_all();
    return flood.inbox.size() >= kFrames;
  }));
  int overloaded = 0, parsed = 0;
  for (const json& e : flood.inbox) {
    ASSERT_EQ(e["type"], "error");
    if (e["code"] == "overloaded") ++overloaded;
    if (e["code"] == "invalid_request" &&
        e["message"].get<std::string>().find("unknown key 'junk'") != std::string::npos)
      ++parsed;
  }
  EXPECT_EQ(overloaded + parsed, kFrames);
  EXPECT_GE(parsed, 1);
  EXPECT_GE(overloaded, 1) << "24 frames of 2 MB at once overfill a lane of 8";
  EXPECT_TRUE(f.all_free());
}

// One client's frames are acted on in the order it sent them, also when the first is large
// (parsed on the large-frame lane) and the next small: its abort finds its generate.
TEST(Serve, AnAbortBehindItsLargeGenerateFindsIt) {
  Fixture f;
  RawClient c(f.server->endpoint());
  std::string big = generate("big", prompt(12), 900).dump();
  big.insert(big.size() - 1, std::string(100 << 10, ' '));  // 100 KiB of JSON whitespace
  c.send(big);
  c.send(json{{"v", 1}, {"type", "abort"}, {"id", "big"}});
  serve_until_ended(f, c, {"big"});
  const std::vector<json> about = c.about("big");
  ASSERT_FALSE(about.empty());
  EXPECT_EQ(about.back()["type"], "done") << about.back().dump();
  EXPECT_EQ(about.back()["finish_reason"], "abort") << about.back().dump();
  EXPECT_LT(c.streamed("big").size(), 900u);
  ASSERT_TRUE(f.run_until([&] { return !f.engine->busy(); }));
  EXPECT_TRUE(f.all_free());
}

enum class Target { kQueued, kPrefilling, kTransferring, kDecoding };
enum class How { kAbortMessage, kDisconnect };

struct AbortCase {
  Target target;
  How how;
};

class ServeAbort : public ::testing::TestWithParam<AbortCase> {};

// One request held in each state, then aborted by message or by its client vanishing: the
// engine must free its blocks (and a transfer's reserved decode blocks) and forget it.
TEST_P(ServeAbort, FreesEverythingInEveryState) {
  const AbortCase c = GetParam();
  SchedulerOptions so;
  so.max_num_batched_tokens = 8;  // a 64-token prompt prefills over 8 steps
  so.max_num_seqs = c.target == Target::kQueued ? 1 : 16;
  so.kv_transfer_timeout_s = 600;
  ZmqServerOptions sv;
  sv.heartbeat_s = 0.02;
  // 1 ms steps: a vanished client is noticed long before its 500 tokens are done.
  Fixture f(c.target == Target::kTransferring, so, sv, 1024, SimulatedTiming{0.001, 0});
  if (c.target == Target::kTransferring) f.network.stall_next(1, 60.0);
  RawClient keeper(f.server->endpoint());  // holds the blocker of the queued case
  RawClient client(f.server->endpoint());
  if (c.target == Target::kQueued) {  // admitted before the target is sent
    keeper.send(generate("blocker", prompt(64, 9), 500));
    ASSERT_TRUE(f.run_until([&] { return f.engine_id("blocker") >= 0; }));
  }
  const int64_t max_tokens = c.target == Target::kTransferring ? 5 : 500;
  client.send(generate("t", prompt(c.target == Target::kPrefilling ? 64 : 12), max_tokens));
  const RequestState want = c.target == Target::kQueued         ? RequestState::kQueued
                            : c.target == Target::kPrefilling   ? RequestState::kPrefilling
                            : c.target == Target::kTransferring ? RequestState::kTransferring
                                                                : RequestState::kDecoding;
  int64_t eid = -1;
  ASSERT_TRUE(f.run_until([&] {
    client.read_all();
    eid = f.engine_id("t");
    const Request* r = eid >= 0 ? f.engine->request(eid) : nullptr;
    return r && r->state == want;
  })) << "never reached "
      << request_state_name(want);
  if (c.target == Target::kDecoding) {  // a few tokens in
    ASSERT_TRUE(f.run_until([&] { return f.engine->request(eid)->output_ids.size() >= 3; }));
  }
  if (c.how == How::kAbortMessage) {
    client.send(json{{"v", 1}, {"type", "abort"}, {"id", "t"}});
    serve_until_ended(f, client, {"t"});
    const json done = client.about("t").back();
    EXPECT_EQ(done["type"], "done");
    EXPECT_EQ(done["finish_reason"], "abort");
  } else {
    client.close();
    ASSERT_TRUE(
        f.run_until([&] { return f.engine_id("t") < 0 && f.engine->request(eid) == nullptr; }, 10))
        << "the vanished client's request is still open";
    EXPECT_EQ(f.server->counters().disconnects, 1);
  }
  EXPECT_EQ(f.engine->request(eid), nullptr) << "released";
  // Once the blocker is gone too, every block of every instance is free.
  if (c.target == Target::kQueued) {
    keeper.send(json{{"v", 1}, {"type", "abort"}, {"id", "blocker"}});
    serve_until_ended(f, keeper, {"blocker"});
  }
  ASSERT_TRUE(f.run_until([&] { return !f.engine->busy(); }));
  EXPECT_EQ(f.server->num_open(), 0u);
  EXPECT_FALSE(f.engine->has_unfinished());
  EXPECT_TRUE(f.all_free());
}

std::string abort_case_name(const ::testing::TestParamInfo<AbortCase>& info) {
  static const char* const kTargets[] = {"Queued", "Prefilling", "Transferring", "Decoding"};
  return std::string(kTargets[static_cast<int>(info.param.target)]) +
         (info.param.how == How::kAbortMessage ? "ByAbortMessage" : "ByDisconnect");
}

INSTANTIATE_TEST_SUITE_P(States, ServeAbort,
                         ::testing::Values(AbortCase{Target::kQueued, How::kAbortMessage},
                                           AbortCase{Target::kQueued, How::kDisconnect},
                                           AbortCase{Target::kPrefilling, How::kAbortMessage},
                                           AbortCase{Target::kPrefilling, How::kDisconnect},
                                           AbortCase{Target::kTransferring, How::kAbortMessage},
                                           AbortCase{Target::kTransferring, How::kDisconnect},
                                           AbortCase{Target::kDecoding, How::kAbortMessage},
                                           AbortCase{Target::kDecoding, How::kDisconnect}),
                         abort_case_name);

// A client that sends requests and never reads: once its queue is full (send_hwm messages in
// ZeroMQ, the rest in the kernel's buffers) the server drops it and aborts its requests,
// instead of blocking its loop on the send (ROUTER_MANDATORY blocks the routing-id frame of a
// full queue unless it is sent without waiting).
TEST(Serve, AClientThatStopsReadingIsDroppedWithoutStallingTheServer) {
  ZmqServerOptions sv;
  sv.send_hwm = 64;  // the deaf client gets 64 messages a step, the reader 1 or 2
  Fixture f(false, SchedulerOptions{}, sv, 9000);
  zmq::context_t ctx;
  zmq::socket_t deaf(ctx, zmq::socket_type::dealer);
  deaf.set(zmq::sockopt::linger, 0);
  deaf.set(zmq::sockopt::rcvhwm, 1);
  deaf.set(zmq::sockopt::rcvbuf, 4096);
  deaf.connect(f.server->endpoint());
  for (int i = 0; i < 64; ++i)
    deaf.send(zmq::buffer(generate(fmt::format("r{}", i), prompt(4, i), 2000).dump()),
              zmq::send_flags::none);
  // Another client is served meanwhile and after.
  RawClient reader(f.server->endpoint());
  reader.send(generate("ok", prompt(5, 7), 20));
  ASSERT_TRUE(f.run_until(
      [&] {
        reader.read_all();
        return f.server->counters().disconnects == 1 && reader.ended("ok");
      },
      60))
      << "disconnects " << f.server->counters().disconnects << ", dropped requests "
      << f.server->counters().dropped_requests << ", messages to the reader "
      << reader.inbox.size();
  EXPECT_EQ(f.server->counters().dropped_requests, 64);
  EXPECT_EQ(reader.streamed("ok").size(), 20u);
  ASSERT_TRUE(f.run_until([&] { return !f.engine->busy(); }));
  EXPECT_EQ(f.server->num_open(), 0u);
  EXPECT_TRUE(f.all_free());
}

TEST(Serve, DrainRefusesNewRequestsFinishesOpenOnesThenAbortsAtTheDeadline) {
  EngineLoopOptions lo;
  lo.drain_timeout_s = 30;
  Fixture f(false, {}, {}, 256, {}, lo);
  RawClient c(f.server->endpoint());
  c.send(generate("open", prompt(6), 10));
  ASSERT_TRUE(f.run_until([&] { return f.engine_id("open") >= 0; }));
  f.loop->begin_drain();
  c.send(generate("late", prompt(6), 10));
  serve_until_ended(f, c, {"open", "late"});
  EXPECT_EQ(c.about("late").back()["code"], "shutting_down");
  EXPECT_EQ(c.about("open").back()["finish_reason"], "length");
  EXPECT_EQ(c.streamed("open"), expected_tokens(f.model, prompt(6), 10));
  EXPECT_TRUE(f.run_until([&] { return f.loop->drained(*f.engine); }));

  // A zero drain timeout aborts what is open at once.
  EngineLoopOptions now;
  now.drain_timeout_s = 0;
  Fixture g(false, {}, {}, 1024, {}, now);
  RawClient d(g.server->endpoint());
  d.send(generate("long", prompt(6), 3000));
  ASSERT_TRUE(g.run_until([&] { return g.engine_id("long") >= 0; }));
  g.loop->begin_drain();
  serve_until_ended(g, d, {"long"});
  EXPECT_EQ(d.about("long").back()["finish_reason"], "abort");
  EXPECT_TRUE(g.run_until([&] { return g.loop->drained(*g.engine); }));
  EXPECT_TRUE(g.all_free());
}

TEST(Serve, ABusyPortFailsToBindWithTheEndpointNamed) {
  Fixture f;
  ZmqServerOptions sv;
  sv.endpoint = f.server->endpoint();
  auto second = ZmqServer::bind(sv, serve::ServerInfo{}, f.loop.get());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find(f.server->endpoint()), std::string::npos);
  sv.endpoint = "inproc://x";
  EXPECT_FALSE(ZmqServer::bind(sv, serve::ServerInfo{}, f.loop.get()).ok());
}

// The C++ client against the same server: info, stats, streams, abort, and its deadlines.
TEST(ServeClient, StreamsQueriesAndAbortsAgainstTheServer) {
  Fixture f(true, {}, {}, 1024);
  auto client = ServeClient::connect(f.server->endpoint());
  ASSERT_TRUE(client.ok());
  ServeClient& c = **client;
  // info and stats need server turns: run them in between with a short client wait.
  std::optional<serve::ServerInfo> info;
  ASSERT_TRUE(f.run_until([&] {
    auto i = c.info(0.01);
    if (i.ok()) info = *i;
    return info.has_value();
  }));
  EXPECT_EQ(info->vocab_size, kVocab);
  EXPECT_EQ(info->max_model_len, 4096);

  serve::GenerateRequest r;
  r.spec.prompt_ids = prompt(11, 2);
  r.spec.max_new_tokens = 7;
  r.spec.ignore_eos = true;
  auto id = c.send(r);
  ASSERT_TRUE(id.ok());
  serve::GenerateRequest longer = r;
  longer.id = "long";
  longer.spec.max_new_tokens = 3000;
  ASSERT_TRUE(c.send(longer).ok());
  std::vector<int32_t> tokens;
  std::map<std::string, std::string> reason;
  bool aborted = false;
  ASSERT_TRUE(f.run_until([&] {
    auto events = c.poll(0.0);
    EXPECT_TRUE(events.ok());
    for (auto& e : *events) {
      if (e.id == *id && e.kind == RequestEvent::Kind::kTokens)
        tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
      if (e.kind == RequestEvent::Kind::kDone) reason[e.id] = e.summary.finish_reason;
      if (e.id == "long" && !aborted) {
        aborted = true;
        EXPECT_TRUE(c.abort("long").ok());
      }
    }
    return c.num_open() == 0;
  }));
  EXPECT_EQ(tokens, expected_tokens(f.model, prompt(11, 2), 7));
  EXPECT_EQ(reason[*id], "length");
  EXPECT_EQ(reason["long"], "abort");
  std::optional<serve::ServerStats> stats;
  ASSERT_TRUE(f.run_until([&] {
    auto s = c.stats(0.01);
    if (s.ok()) stats = *s;
    return stats.has_value();
  }));
  EXPECT_EQ(stats->kv_transfers, 2);
  EXPECT_EQ(stats->num_running + stats->num_waiting, 0);
  EXPECT_TRUE(f.all_free());

  // A server that stops answering: the client's poll fails naming the endpoint and request.
  ServeClientOptions quick;
  quick.server_timeout_s = 0.3;
  auto impatient = ServeClient::connect(f.server->endpoint(), quick);
  ASSERT_TRUE(impatient.ok());
  r.id = "stuck";
  ASSERT_TRUE((*impatient)->send(r).ok());
  Result<std::vector<RequestEvent>> got = std::vector<RequestEvent>{};
  for (int i = 0; i < 100 && got.ok(); ++i) got = (*impatient)->poll(0.05);  // no server turns
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("stuck"), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find(f.server->endpoint()), std::string::npos);
  // Nobody at all behind an endpoint: a query says so.
  auto nobody = ServeClient::connect("tcp://127.0.0.1:1", quick);
  ASSERT_TRUE(nobody.ok());
  auto i = (*nobody)->info(0.2);
  ASSERT_FALSE(i.ok());
  EXPECT_NE(i.status().message().find("tcp://127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace sw::coordinator
