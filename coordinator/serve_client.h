// ServeClient: the C++ client of `shardwise serve` (wire format: coordinator/serve_protocol.h,
// docs/wire-format.md). One DEALER socket; requests are sent at once and their tokens come
// back as events from poll(). Not thread-safe: one thread drives it.
//
//   auto client = ServeClient::connect("tcp://127.0.0.1:8765");
//   serve::GenerateRequest r;  r.spec.prompt_ids = {1, 2, 3};  r.spec.max_new_tokens = 16;
//   auto id = (*client)->submit(r);
//   while ((*client)->num_open() > 0)
//     for (auto& e : *(*client)->poll(1.0)) ...;   // kTokens ... then kDone or kError
//
// RequestTarget is what the load generator (coordinator/loadgen) drives: a ServeClient, or an
// Engine in the same process (EngineTarget), with the same events.
#pragma once

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/request.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator {

struct RequestEvent {
  enum class Kind { kTokens, kDone, kError };
  Kind kind = Kind::kTokens;
  std::string id;
  std::vector<int32_t> tokens;    // kTokens: the new ones; kDone: all of them when not streamed
  serve::RequestSummary summary;  // kDone
  serve::ProtocolError error;     // kError: the request was refused (it never ran)
  Clock::time_point received;
  bool terminal() const { return kind != Kind::kTokens; }
};

class RequestTarget {
 public:
  virtual ~RequestTarget() = default;
  // Sends a request (r.id must be set and unique among open ones). A refusal comes back as a
  // kError event; an error here means the target itself is unusable.
  virtual Status submit(const serve::GenerateRequest& r) = 0;
  // Events of open requests, waiting up to `max_wait_s` for the first one.
  virtual Result<std::vector<RequestEvent>> poll(double max_wait_s) = 0;
  virtual Status abort(const std::string& id) = 0;
  virtual size_t num_open() const = 0;
};

struct ServeClientOptions {
  // While requests are open, a server silent this long (it sends heartbeats every second or
  // so) is an error naming the endpoint and the requests waited for.
  double server_timeout_s = 60.0;
  int64_t max_message_bytes = int64_t{256} << 20;
};

class ServeClient final : public RequestTarget {
 public:
  static Result<std::unique_ptr<ServeClient>> connect(const std::string& endpoint,
                                                      const ServeClientOptions& options = {});
  ~ServeClient() override;

  // Sends the request; r.id empty: the client names it ("c1", "c2", ...). Returns the id.
  Result<std::string> send(serve::GenerateRequest r);
  Status submit(const serve::GenerateRequest& r) override { return send(r).status(); }
  Result<std::vector<RequestEvent>> poll(double max_wait_s) override;
  Status abort(const std::string& id) override;
  size_t num_open() const override { return open_.size(); }

  // Request-reply queries; events that arrive meanwhile are kept for the next poll().
  Result<serve::ServerInfo> info(double timeout_s = 10.0);
  Result<serve::ServerStats> stats(double timeout_s = 10.0);
  Status ping(double timeout_s = 10.0);
  const std::string& endpoint() const { return endpoint_; }

 private:
  ServeClient(std::string endpoint, const ServeClientOptions& options);
  Status send_frame(const std::string& payload);
  // Reads server messages for up to `max_wait_s` (returns after the first batch); events go to
  // pending_, a reply of `want` type (if any) to *reply.
  Status pump(double max_wait_s, serve::ServerMessageType* want, serve::ServerMessage* reply,
              bool* got_reply);
  Result<serve::ServerMessage> query(serve::ClientMessageType type, serve::ServerMessageType reply,
                                     double timeout_s);

  std::string endpoint_;
  ServeClientOptions options_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::set<std::string> open_;
  std::deque<RequestEvent> pending_;
  int64_t next_id_ = 1;
  Clock::time_point last_heard_;
};

}  // namespace sw::coordinator
