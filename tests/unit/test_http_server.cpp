// HttpServer over real sockets in front of a real EngineLoop + Engine (a tiny llama with dummy
// weights, LocalExecutor, on a thread) and a test tokenizer (printable bytes are one token
// each; other ids decode to "<id>"). Generations are greedy, so every answer is checked
// against the tokens the same Engine produces for the same prompt without the server. Add a
// case: a TEST with a Harness, requests through Client, checks on the replies and counters.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/engine.h"
#include "coordinator/engine_loop.h"
#include "coordinator/local_executor.h"
#include "engine_test_util.h"
#include "frontend/http_server.h"
#include "model/weight_source.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace sw::frontend {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

constexpr int64_t kVocab = 300;
constexpr int64_t kMaxModelLen = 512;

// Printable ASCII bytes are their own token; other ids (and bytes) decode to "<id>"; id 299 is
// a special token that skip_special_tokens hides.
class TestTokenizer : public tokenizer::Tokenizer {
 public:
  TestTokenizer() {
    info_.bos_token = "<s>";
    info_.eos_token = "</s>";
  }
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int32_t> ids;
    if (add_special_tokens) ids.push_back(1);  // a "BOS"
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::string s;
    for (int32_t id : ids) s += piece(id, skip_special_tokens);
    return s;
  }
  static std::string piece(int32_t id, bool skip_special = true) {
    if (id == 299) return skip_special ? "" : "<sp>";
    if (id >= 32 && id < 127) return std::string(1, static_cast<char>(id));
    return fmt::format("<{}>", id);
  }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<std::string> id_to_token(int32_t id) const override { return piece(id, false); }
  int64_t vocab_size() const override { return kVocab; }
  bool is_special(int32_t id) const override { return id == 299; }
  const tokenizer::TokenizerInfo& info() const override { return info_; }
  tokenizer::TokenizerInfo& mutable_info() override { return info_; }

 private:
  tokenizer::TokenizerInfo info_;
};

model::ModelConfig tiny_config() {
  auto j = testing::family_configs()[0];  // llama
  j["vocab_size"] = kVocab;
  j["max_position_embeddings"] = kMaxModelLen;
  return testing::config_from_json(j);
}

constexpr const char* kTemplate =
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}";

// The engine on its own thread behind an EngineLoop, and an HttpServer in front of it.
struct Harness {
  model::ModelConfig config = tiny_config();
  std::unique_ptr<model::WeightSource> source;
  testing::TestEngine te;
  std::unique_ptr<coordinator::Engine> engine;
  coordinator::EngineLoop loop{coordinator::EngineLoopOptions{30.0, 1 << 20, 0.01}};
  std::atomic<int> stop{0};
  std::thread engine_thread;
  Status loop_status;
  coordinator::serve::ServerInfo info;
  std::shared_ptr<TestTokenizer> tok = std::make_shared<TestTokenizer>();
  std::shared_ptr<const tokenizer::ChatTemplate> chat_template;
  std::unique_ptr<HttpServer> server;

  explicit Harness(HttpServerOptions options = {}, int64_t num_blocks = 256) {
    source = model::make_dummy_source(config, 7);
    te = testing::make_engine(config, *source, DType::kF32, num_blocks, 16);
    coordinator::EngineOptions eo;
    engine = std::make_unique<coordinator::Engine>(config, eo);
    coordinator::InstanceSpec spec;
    spec.num_kv_blocks = te.runner->num_kv_blocks();
    spec.kv_block_size = te.runner->kv_block_size();
    engine->add_instance(spec, std::make_unique<coordinator::LocalExecutor>(*te.runner));
    engine_thread = std::thread([this] { loop_status = loop.run(*engine, stop); });
    info.model = "tiny";
    info.vocab_size = kVocab;
    info.max_model_len = kMaxModelLen;
    auto tpl = tokenizer::ChatTemplate::compile(kTemplate, "test template");
    if (tpl.ok()) chat_template = std::move(tpl).value();
    options.host = "127.0.0.1";
    options.port = 0;
    if (options.served_model_names.empty()) options.served_model_names = {"tiny", "tiny-alias"};
    auto s = HttpServer::start(options, loop, info, tok, chat_template);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    if (s.ok()) server = std::move(s).value();
  }
  ~Harness() {
    server.reset();
    stop = 2;
    engine_thread.join();
    EXPECT_TRUE(loop_status.ok()) << loop_status.to_string();
    EXPECT_TRUE(engine->scheduler().kv().all_free()) << "KV blocks still held at the end";
  }
  int port() const { return server->port(); }

  // Greedy output of the same engine for `prompt` (a second engine over the same weights).
  std::vector<int32_t> reference(const std::vector<int32_t>& prompt, int64_t max_new_tokens) {
    auto ref = testing::make_engine(config, *source, DType::kF32, 64, 16);
    coordinator::RequestSpec spec;
    spec.prompt_ids = prompt;
    spec.max_new_tokens = max_new_tokens;
    auto out = testing::generate(*ref.runner, {spec});
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? (*out)[0].output_ids : std::vector<int32_t>{};
  }
  // Waits until the engine has nothing open and no KV block in use.
  bool wait_idle(double timeout_s = 20) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      auto s = loop.snapshot();
      if (s.num_open == 0 && s.kv_cache_usage == 0 && server->counters().generations_open == 0)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

std::string text_of(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += TestTokenizer::piece(id);
  return s;
}

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
  bool keep_alive = false;
  json j() const { return json::parse(body); }
};

// A blocking HTTP/1.1 client over one connection (reads time out instead of hanging).
class Client {
 public:
  explicit Client(int port, std::string key = "secret") : sock_(ioc_), key_(std::move(key)) {
    sock_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{30, 0};
    setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  void send(http::verb verb, const std::string& target, const std::string& body) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!key_.empty()) req.set(http::field::authorization, "Bearer " + key_);
    if (!body.empty() || verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    http::write(sock_, req);
  }
  Reply read() {
    http::response_parser<http::string_body> p;
    p.body_limit(boost::none);
    beast::error_code ec;
    http::read(sock_, buf_, p, ec);
    Reply r;
    if (ec) {
      r.status = -1;
      r.body = ec.message();
      return r;
    }
    r.status = p.get().result_int();
    r.body = p.get().body();
    r.content_type = std::string(p.get()[http::field::content_type]);
    r.keep_alive = p.get().keep_alive();
    return r;
  }
  Reply post(const std::string& target, const json& body) {
    send(http::verb::post, target, body.dump());
    return read();
  }
  Reply get(const std::string& target) {
    send(http::verb::get, target, "");
    return read();
  }
  // Reads until the connection ends (what a server sends before closing).
  std::string read_raw() {
    std::string out;
    char b[4096];
    beast::error_code ec;
    for (;;) {
      size_t n = sock_.read_some(asio::buffer(b), ec);
      if (ec) break;
      out.append(b, n);
    }
    return out;
  }
  void write_raw(const std::string& bytes) { asio::write(sock_, asio::buffer(bytes)); }
  tcp::socket& socket() { return sock_; }
  beast::flat_buffer& buffer() { return buf_; }

 private:
  asio::io_context ioc_;
  tcp::socket sock_;
  beast::flat_buffer buf_;
  std::string key_;
};

// The JSON objects of an SSE body; `done` says whether "data: [DONE]" ended it.
std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    std::string data = ev.substr(6);
    if (data == "[DONE]") {
      *done = true;
      EXPECT_EQ(pos, body.size()) << "events after [DONE]";
      break;
    }
    out.push_back(json::parse(data));
  }
  return out;
}

HttpServerOptions keyed() {
  HttpServerOptions o;
  o.api_key = "secret";
  return o;
}

const std::vector<int32_t> kPromptIds = {1, 72, 101, 108, 108, 111};  // BOS "Hello"

TEST(HttpServer, CompletionsStreamAndNonStreamMatchTheEngine) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  const auto ref = h.reference(kPromptIds, 24);
  ASSERT_EQ(ref.size(), 24u);
  const std::string expected = text_of(ref);
  Client c(h.port());
  json body = {{"model", "tiny"}, {"prompt", "Hello"}, {"max_tokens", 24}, {"temperature", 0}};
  Reply r = c.post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  json j = r.j();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["choices"][0]["text"], expected);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(j["usage"]["completion_tokens"], 24);
  EXPECT_EQ(j["usage"]["total_tokens"], 30);

  // The same as token ids, with another served name, streamed with usage.
  body["model"] = "tiny-alias";
  body["prompt"] = kPromptIds;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  r = c.post("/v1/completions", body);  // the same connection (keep-alive)
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type.rfind("text/event-stream", 0), 0u);
  bool done = false;
  auto events = sse_events(r.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  std::string streamed;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "text_completion");
    EXPECT_EQ(events[i]["id"], events[0]["id"]);
    streamed += events[i]["choices"][0]["text"].get<std::string>();
    const bool last = i + 2 == events.size();
    EXPECT_EQ(events[i]["choices"][0]["finish_reason"].is_null(), !last) << events[i].dump();
  }
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  const json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 24);
  EXPECT_EQ(h.server->counters().connections_accepted, 1);  // keep-alive reused it
  EXPECT_TRUE(h.wait_idle());
}

TEST(HttpServer, StopStringsAndStopTokens) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  const auto ref = h.reference(kPromptIds, 40);
  ASSERT_EQ(ref.size(), 40u);
  const std::string full = text_of(ref);
  // A stop string made of the end of token 4 and the start of token 5 (across the boundary).
  const std::string p4 = TestTokenizer::piece(ref[4]), p5 = TestTokenizer::piece(ref[5]);
  const std::string stop = p4.substr(p4.size() - 1) + p5.substr(0, std::min<size_t>(2, p5.size()));
  const size_t at = full.find(stop);
  ASSERT_NE(at, std::string::npos);
  // The token that completes the stop string: its index + 1 tokens were generated.
  size_t chars = 0, completing = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    chars += TestTokenizer::piece(ref[i]).size();
    if (chars >= at + stop.size()) {
      completing = i;
      break;
    }
  }
  for (bool stream : {false, true}) {
    Client c(h.port());
    json body = {{"prompt", "Hello"},
                 {"max_tokens", 40},
                 {"temperature", 0},
                 {"stop", {"never-there", stop}},
                 {"stream", stream}};
    if (stream) body["stream_options"] = {{"include_usage", true}};
    Reply r = c.post("/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text, finish;
    json stop_reason, usage;
    if (stream) {
      bool done = false;
      auto events = sse_events(r.body, &done);
      EXPECT_TRUE(done);
      for (const auto& e : events) {
        if (e["choices"].empty()) {
          usage = e["usage"];
          continue;
        }
        text += e["choices"][0]["text"].get<std::string>();
        if (!e["choices"][0]["finish_reason"].is_null()) {
          finish = e["choices"][0]["finish_reason"];
          stop_reason = e["choices"][0]["stop_reason"];
        }
      }
    } else {
      json j = r.j();
      text = j["choices"][0]["text"];
      finish = j["choices"][0]["finish_reason"];
      stop_reason = j["choices"][0]["stop_reason"];
      usage = j["usage"];
    }
    EXPECT_EQ(text, full.substr(0, at)) << "stream " << stream;
    EXPECT_EQ(finish, "stop");
    EXPECT_EQ(stop_reason, stop);
    EXPECT_EQ(usage["completion_tokens"], completing + 1) << "stream " << stream;
  }
  // A stop token id: generation ends there, its text is not returned.
  const int32_t stop_id = ref[7];
  size_t first = 0;
  while (ref[first] != stop_id) ++first;
  Client c(h.port());
  Reply r = c.post(
      "/v1/completions",
      {{"prompt", "Hello"}, {"max_tokens", 40}, {"temperature", 0}, {"stop_token_ids", {stop_id}}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.j();
  EXPECT_EQ(j["choices"][0]["text"],
            text_of(std::vector<int32_t>(ref.begin(), ref.begin() + first)));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["stop_reason"], stop_id);
  EXPECT_EQ(j["usage"]["completion_tokens"], first + 1);
  // The tokenizer folder's eos ids (generation_config.json) end generation too, unless
  // ignore_eos.
  h.tok->mutable_info().eos_token_ids = {stop_id};
  r = c.post("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 40}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  j = r.j();
  EXPECT_EQ(j["choices"][0]["text"],
            text_of(std::vector<int32_t>(ref.begin(), ref.begin() + first)));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], first + 1);
  r = c.post("/v1/completions",
             {{"prompt", "Hello"}, {"max_tokens", 40}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["usage"]["completion_tokens"], 40);
  h.tok->mutable_info().eos_token_ids.clear();
  EXPECT_TRUE(h.wait_idle());
}

TEST(HttpServer, ChatCompletionsAndTokenize) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  if (!h.chat_template) GTEST_SKIP() << "ChatTemplate does not compile here";
  const json messages = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi"}}}}}};
  const std::string rendered = "[system]Be brief.\n[user]Hi\n[assistant]";
  const auto prompt = h.tok->encode(rendered, false);
  Client c(h.port());
  Reply t = c.post("/tokenize", {{"messages", messages}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.j()["count"], prompt.size());
  EXPECT_EQ(t.j()["tokens"], json(prompt));
  EXPECT_EQ(t.j()["max_model_len"], kMaxModelLen);
  Reply tp = c.post("/tokenize", {{"prompt", "ab"}, {"return_token_strs", true}});
  ASSERT_EQ(tp.status, 200) << tp.body;
  EXPECT_EQ(tp.j()["tokens"], json({1, 97, 98}));
  EXPECT_EQ(tp.j()["token_strs"][1], "a");
  Reply d = c.post("/detokenize", {{"tokens", {72, 105}}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.j()["prompt"], "Hi");
  EXPECT_EQ(c.post("/detokenize", {{"tokens", {72, 9999}}}).status, 400);

  const auto ref = h.reference(prompt, 12);
  Reply r = c.post("/v1/chat/completions",
                   {{"messages", messages}, {"max_completion_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.j();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], text_of(ref));
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);

  r = c.post("/v1/chat/completions", {{"messages", messages},
                                      {"max_tokens", 12},
                                      {"temperature", 0},
                                      {"stream", true},
                                      {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  bool done = false;
  auto events = sse_events(r.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  std::string finish;
  for (const auto& e : events) {
    if (e["choices"].empty()) continue;
    const auto& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, text_of(ref));
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 12);

  // Chat's default length: all the room the context has left.
  r = c.post("/v1/chat/completions",
             {{"messages", messages}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["usage"]["total_tokens"], kMaxModelLen);
  EXPECT_TRUE(h.wait_idle());
}

TEST(HttpServer, ErrorsAuthAndLimits) {
  HttpServerOptions o = keyed();
  o.max_body_bytes = 64 << 10;
  o.max_header_bytes = 4 << 10;
  Harness h(o);
  ASSERT_TRUE(h.server);
  {
    Client anon(h.port(), "");
    Reply r = anon.get("/health");  // no key needed
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "");
    r = anon.get("/v1/models");
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_EQ(r.j()["error"]["type"], "AuthenticationError");
  }
  {
    Client wrong(h.port(), "nope");
    EXPECT_EQ(wrong.post("/v1/completions", {{"prompt", "x"}}).status, 401);
  }
  Client c(h.port());
  Reply r = c.get("/v1/models");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.j()["data"][0]["id"], "tiny");
  EXPECT_EQ(r.j()["data"][1]["id"], "tiny-alias");
  r = c.post("/v1/completions", {{"model", "other"}, {"prompt", "x"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.j()["error"]["param"], "model");
  r = c.post("/v1/completions", {{"prompt", "x"}, {"temperature", -1}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.j()["error"]["param"], "temperature");
  EXPECT_EQ(r.j()["error"]["type"], "BadRequestError");
  EXPECT_EQ(r.j()["error"]["code"], 400);
  r = c.post("/v1/completions", {{"prompt", "x"}, {"n", 2}});
  EXPECT_EQ(r.j()["error"]["param"], "n");
  r = c.post("/v1/completions", {{"prompt", "x"}, {"logprobs", 2}});
  EXPECT_EQ(r.j()["error"]["param"], "logprobs");
  r = c.post("/v1/completions", {{"prompt", {1, 5000}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.j()["error"]["param"], "prompt");
  r = c.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 100000}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.j()["error"]["param"], "max_tokens");
  c.send(http::verb::post, "/v1/completions", "{not json");
  r = c.read();
  EXPECT_EQ(r.status, 400);
  r = c.get("/v1/completions");
  EXPECT_EQ(r.status, 405);
  r = c.get("/nowhere");
  EXPECT_EQ(r.status, 404);
  r = c.get("/metrics");
  EXPECT_EQ(r.status, 200);
  // Everything above on one connection.
  EXPECT_EQ(h.server->counters().connections_accepted, 3);
  {
    Client big(h.port());
    r = big.post("/v1/completions", {{"prompt", std::string(100 << 10, 'a')}});
    EXPECT_EQ(r.status, 413) << r.body;
    EXPECT_FALSE(r.keep_alive);
  }
  {
    Client big(h.port());
    big.write_raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8 << 10, 'a') +
                  "\r\n\r\n");
    Reply rr = big.read();
    EXPECT_EQ(rr.status, 431) << rr.body;
  }
  {
    Client junk(h.port());
    junk.write_raw("THIS IS NOT HTTP\r\n\r\n");
    Reply rr = junk.read();
    EXPECT_EQ(rr.status, 400) << rr.body;
  }
  EXPECT_TRUE(h.wait_idle());
}

TEST(HttpServer, SlowSenderTimesOutAndIdleConnectionsClose) {
  HttpServerOptions o = keyed();
  o.request_timeout_s = 0.3;
  o.keep_alive_timeout_s = 0.3;
  Harness h(o);
  ASSERT_TRUE(h.server);
  Client slow(h.port());
  slow.write_raw("POST /v1/completions HTTP/1.1\r\nHost: x\r\n");  // and then nothing
  const auto t0 = std::chrono::steady_clock::now();
  const std::string got = slow.read_raw();  // until the server closes
  EXPECT_NE(got.find("408"), std::string::npos) << got;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_GE(h.server->counters().timeouts, 1);
  // Idle keep-alive connection: closed after its timeout, without a response.
  Client idle(h.port());
  EXPECT_EQ(idle.get("/health").status, 200);
  EXPECT_EQ(idle.read_raw(), "");
  // /health still answers.
  Client c(h.port());
  EXPECT_EQ(c.get("/health").status, 200);
}

TEST(HttpServer, ClientDisconnectAbortsAndFreesBlocks) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  {
    // Streaming: read the header and a first chunk, then hang up.
    Client c(h.port());
    c.send(http::verb::post, "/v1/completions",
           json({{"prompt", "Hello"}, {"max_tokens", 480}, {"ignore_eos", true}, {"stream", true}})
               .dump());
    http::response_parser<http::empty_body> p;
    http::read_header(c.socket(), c.buffer(), p);
    EXPECT_EQ(p.get().result_int(), 200);
    char b[64];
    c.socket().read_some(asio::buffer(b));
    c.socket().close();
  }
  EXPECT_TRUE(h.wait_idle());
  EXPECT_EQ(h.server->counters().disconnect_aborts, 1);
  {
    // Not streaming: the client leaves while its request runs.
    Client c(h.port());
    c.send(http::verb::post, "/v1/completions",
           json({{"prompt", "Hello"}, {"max_tokens", 480}, {"ignore_eos", true}}).dump());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (h.server->counters().generations_open == 0 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.socket().close();
  }
  EXPECT_TRUE(h.wait_idle());
  EXPECT_EQ(h.server->counters().disconnect_aborts, 2);
  // The abort shows in /metrics.
  Client c(h.port());
  Reply m = c.get("/metrics");
  EXPECT_NE(m.body.find("shardwise:request_success_total{finished_reason=\"abort\",model_name="
                        "\"tiny\"} 2"),
            std::string::npos)
      << m.body;
}

TEST(HttpServer, MetricsText) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  Client c(h.port());
  ASSERT_EQ(c.post("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 5}}).status, 200);
  Reply m = c.get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.content_type.rfind("text/plain; version=0.0.4", 0), 0u);
  for (const char* needle : {
           "# TYPE shardwise:time_to_first_token_seconds histogram\n",
           "# TYPE shardwise:inter_token_latency_seconds histogram\n",
           "# TYPE shardwise:e2e_request_latency_seconds histogram\n",
           "# TYPE shardwise:request_queue_time_seconds histogram\n",
           "# TYPE shardwise:num_requests_running gauge\n",
           "# TYPE shardwise:num_requests_waiting gauge\n",
           "# TYPE shardwise:kv_cache_usage_perc gauge\n",
           "shardwise:prompt_tokens_total{model_name=\"tiny\"} 6\n",
           "shardwise:generation_tokens_total{model_name=\"tiny\"} 5\n",
           "shardwise:request_success_total{finished_reason=\"length\",model_name=\"tiny\"} 1\n",
           "# TYPE shardwise:num_preemptions_total counter\n",
           "# TYPE shardwise:kv_transfers_total counter\n",
           "# TYPE shardwise:kv_transfer_seconds_total counter\n",
           "# TYPE shardwise:moe_tokens_dropped_total counter\n",
           "shardwise:instances_alive{model_name=\"tiny\",role=\"mixed\"}",
           "shardwise:e2e_request_latency_seconds_count{model_name=\"tiny\"} 1\n",
           "shardwise:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"} 1\n",
           "shardwise:inter_token_latency_seconds_count{model_name=\"tiny\"} 4\n",
       })
    EXPECT_NE(m.body.find(needle), std::string::npos) << needle << "\n" << m.body;
}

// Many concurrent streams (async client on its own thread) while /health keeps answering.
TEST(HttpServer, ThousandConcurrentStreams) {
  constexpr int kStreams = 1000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * kStreams + 200) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 2 * kStreams + 200);
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * kStreams + 200) GTEST_SKIP() << "too few file descriptors";
  }
  HttpServerOptions o = keyed();
  Harness h(o, /*num_blocks=*/1100);
  ASSERT_TRUE(h.server);
  const auto ref = h.reference(kPromptIds, 8);
  const std::string expected = text_of(ref);

  struct Stream {
    tcp::socket sock;
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::response_parser<http::string_body> parser;
    explicit Stream(asio::io_context& ioc) : sock(ioc) {}
  };
  asio::io_context ioc;
  std::vector<std::unique_ptr<Stream>> streams;
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::string> bodies(kStreams);
  const std::string body =
      json({{"prompt", "Hello"}, {"max_tokens", 8}, {"temperature", 0}, {"stream", true}}).dump();
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(h.port()));
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<Stream>(ioc));
    Stream* s = streams.back().get();
    s->req = http::request<http::string_body>{http::verb::post, "/v1/completions", 11};
    s->req.set(http::field::host, "127.0.0.1");
    s->req.set(http::field::authorization, "Bearer secret");
    s->req.body() = body;
    s->req.prepare_payload();
    s->parser.body_limit(boost::none);
    s->sock.async_connect(ep, [s, i, &ok, &failed, &bodies](beast::error_code ec) {
      if (ec) return void(++failed);
      http::async_write(
          s->sock, s->req, [s, i, &ok, &failed, &bodies](beast::error_code ec, size_t) {
            if (ec) return void(++failed);
            http::async_read(s->sock, s->buf, s->parser,
                             [s, i, &ok, &failed, &bodies](beast::error_code ec, size_t) {
                               if (ec || s->parser.get().result_int() != 200) return void(++failed);
                               bodies[i] = s->parser.get().body();
                               ++ok;
                             });
          });
    });
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::thread client([&] { ioc.run(); });
  // /health answers while the streams run.
  double worst_health_s = 0;
  int health_checks = 0, health_during_streams = 0;
  while (ok + failed < kStreams &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(300)) {
    const auto a = std::chrono::steady_clock::now();
    Client hc(h.port(), "");
    Reply r = hc.get("/health");
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    EXPECT_EQ(r.status, 200);
    worst_health_s = std::max(worst_health_s, dt);
    ++health_checks;
    if (h.server->counters().generations_open > 0) ++health_during_streams;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  client.join();
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ok, kStreams);
  EXPECT_EQ(failed, 0);
  EXPECT_GT(health_during_streams, 0);
  int matching = 0;
  for (const auto& b : bodies) {
    bool done = false;
    auto events = sse_events(b, &done);
    std::string text;
    for (const auto& e : events) text += e["choices"][0]["text"].get<std::string>();
    if (done && text == expected) ++matching;
  }
  EXPECT_EQ(matching, kStreams);
  std::printf(
      "[ measure ] %d streams of 8 tokens: %.2f s; /health: %d checks (%d during "
      "streams), worst %.1f ms\n",
      kStreams, total_s, health_checks, health_during_streams, worst_health_s * 1e3);
  EXPECT_TRUE(h.wait_idle());
}

TEST(HttpServer, StopClosesIdleConnectionsAndDrainRefuses) {
  Harness h(keyed());
  ASSERT_TRUE(h.server);
  Client idle(h.port());
  EXPECT_EQ(idle.get("/health").status, 200);
  h.loop.begin_drain();
  Client c(h.port());
  Reply r = c.post("/v1/completions", {{"prompt", "x"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(c.get("/health").status, 503);
  h.server->stop();
  EXPECT_EQ(idle.read_raw(), "");  // closed by stop()
}

TEST(HttpServer, ConnectionLimit) {
  HttpServerOptions o = keyed();
  o.max_connections = 2;
  Harness h(o);
  ASSERT_TRUE(h.server);
  Client a(h.port()), b(h.port());
  EXPECT_EQ(a.get("/health").status, 200);
  EXPECT_EQ(b.get("/health").status, 200);
  Client c(h.port());
  Reply r = c.read();  // refused without asking
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_FALSE(r.keep_alive);
  EXPECT_EQ(a.get("/health").status, 200);  // the others are unaffected
}

TEST(HttpServer, LoadChatTemplate) {
  TestTokenizer tok;
  auto none = load_chat_template("", tok);
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_EQ(*none, nullptr);  // neither the flag nor the tokenizer has one
  tok.mutable_info().chat_template = kTemplate;
  auto from_tokenizer = load_chat_template("", tok);
  if (!from_tokenizer.ok()) GTEST_SKIP() << from_tokenizer.status().to_string();
  EXPECT_NE(*from_tokenizer, nullptr);
  auto inline_text = load_chat_template("{{ messages[0]['content'] }}", tok);
  ASSERT_TRUE(inline_text.ok());
  tokenizer::ChatTemplateOptions opts;
  auto out = (*inline_text)->render(json::parse(R"([{"role": "user", "content": "yo"}])"), opts);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(*out, "yo");
  const std::string path = ::testing::TempDir() + "/http_server_template.jinja";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("[{{ messages | length }}]", f);
    std::fclose(f);
  }
  auto from_file = load_chat_template(path, tok);
  ASSERT_TRUE(from_file.ok()) << from_file.status().to_string();
  out = (*from_file)->render(json::parse(R"([{"role": "user", "content": "yo"}])"), opts);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "[1]");
  EXPECT_FALSE(load_chat_template("/no/such/template.jinja", tok).ok());
  EXPECT_FALSE(load_chat_template("{% if %}", tok).ok());  // does not compile
}

// For checks by hand with real clients (curl, the openai SDK, a Prometheus parser):
//   SHARDWISE_HTTP_TEST_SECONDS=60 test_http_server --gtest_also_run_disabled_tests
//     --gtest_filter=*ServeForManualChecks
TEST(HttpServer, DISABLED_ServeForManualChecks) {
  const char* secs = std::getenv("SHARDWISE_HTTP_TEST_SECONDS");
  HttpServerOptions o;
  o.port = 0;
  Harness h(o);
  ASSERT_TRUE(h.server);
  std::printf("PORT %d\n", h.port());
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(secs ? std::atoi(secs) : 30));
}

}  // namespace
}  // namespace sw::frontend
