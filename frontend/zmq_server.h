// Server: `shardwise serve`'s front end. A ZeroMQ ROUTER takes requests in the wire format of
// coordinator/serve_protocol.h, feeds the Engine and streams each request's tokens back to the
// client that sent it, one message per request per step, then a done message. Every refused
// frame gets an error reply and the others are served on; nothing is dropped silently.
//
// A client that disconnects (a send to it fails) or stops reading (its queue reaches
// send_hwm messages) has every open request aborted, whatever its state: queued, prefilling,
// transferring or decoding — the engine frees their KV blocks. Clients with open requests get
// a heartbeat when nothing else was sent to them for heartbeat_s, which is also how a client
// that vanished while its requests only waited is found.
//
// REQ clients (an empty delimiter frame before the JSON) get one reply per message: for a
// generate, the done message with every token (no stream, no heartbeats).
//
// Single-threaded: run() (or run_once() in tests) is the engine loop of the process.
//
//   auto server = Server::bind(options, info);   // before the workers load: fails early
//   server->run(engine, stop_count);             // until stop_count >= 1, then drains
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/engine.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator {

struct ServerOptions {
  std::string endpoint =
      "tcp://127.0.0.1:8765";     // tcp://host:port ("*" port: any free one) or ipc://
  double heartbeat_s = 1.0;       // to clients with open requests that heard nothing else
  double drain_timeout_s = 30.0;  // after a stop: open requests may finish this long, then abort
  int64_t max_frame_bytes = int64_t{16} << 20;  // larger frames get a too_large error reply
  int64_t max_open_requests = 1 << 20;          // more get an overloaded error reply
  int send_hwm = 100000;  // messages queued for one client before it counts as not reading
  // Frames above this are dropped by ZeroMQ with the sender's connection, before they are
  // buffered (what memory a hostile client can make the server hold).
  int64_t hard_frame_bytes = int64_t{256} << 20;
};

struct ServerCounters {
  int64_t accepted = 0;          // generate requests the engine took
  int64_t rejected = 0;          // error replies (any refused frame)
  int64_t completed = 0;         // done messages sent
  int64_t aborted = 0;           // by an abort message
  int64_t disconnects = 0;       // clients dropped (gone or not reading)
  int64_t dropped_requests = 0;  // open requests aborted with their client
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> bind(const ServerOptions& options, serve::ServerInfo info);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const std::string& endpoint() const { return endpoint_; }  // as bound (the real port)

  // Serves until `stop` >= 1 (e.g. the count of SIGTERMs), then drains (begin_drain); at 2 the
  // open requests are aborted at once. Returns once no request is open and no step is in
  // flight. An error is the engine's (a bug), not a client's.
  Status run(Engine& engine, const std::atomic<int>& stop);
  // One turn: reads what arrived (waiting up to `max_wait_s` while the engine has nothing to
  // do), steps the engine, sends what it produced, heartbeats, the drain deadline.
  Status run_once(Engine& engine, double max_wait_s);

  // Stops admitting (new requests get a shutting_down error); open requests may finish
  // within drain_timeout_s, then are aborted.
  void begin_drain();
  bool draining() const { return draining_; }
  bool drained(const Engine& engine) const { return draining_ && open_.empty() && !engine.busy(); }

  // Aborts every open request now (each client gets its done message, finish_reason abort).
  void abort_open(Engine& engine, const std::string& why);

  size_t num_open() const { return open_.size(); }
  size_t num_clients() const { return clients_.size(); }
  // The engine id of a client's open request (tests), or -1.
  int64_t engine_id(const std::string& client_request_id) const;
  const ServerCounters& counters() const { return counters_; }

 private:
  struct Client {
    std::string peer;                     // "routing id 0a1b2c3d4e from 127.0.0.1", for messages
    bool envelope = false;                // REQ-style: an empty delimiter frame before the payload
    std::map<std::string, int64_t> open;  // client's request id -> engine id
    Clock::time_point last_sent;
  };
  struct Open {
    std::string routing_id;
    std::string id;  // the client's request id
    bool stream = true;
    int64_t num_sent = 0;  // output tokens sent
  };

  Server(const ServerOptions& options, serve::ServerInfo info);
  Status receive(Engine& engine, double max_wait_s);
  void handle(Engine& engine, const std::string& routing_id, bool envelope, std::string_view frame,
              const std::string& peer_address);
  void handle_message(Engine& engine, const std::string& routing_id, bool envelope,
                      std::string_view frame, const std::string& peer_address);
  void forget_if_idle(const std::string& routing_id);
  void deliver(Engine& engine, const std::vector<RequestOutput>& outputs);
  void finish(Engine& engine, int64_t engine_id);  // done message, release
  // Sends one message; false (and the client dropped) when it is gone or not reading.
  bool send(Engine& engine, const std::string& routing_id, const std::string& payload);
  void reject(Engine& engine, const std::string& routing_id, const serve::ProtocolError& e);
  void drop_client(Engine& engine, const std::string& routing_id, const std::string& why);
  void heartbeats(Engine& engine);

  ServerOptions options_;
  serve::ServerInfo info_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::string endpoint_;
  std::map<std::string, Client> clients_;  // by routing id
  std::map<int64_t, Open> open_;           // by engine id
  ServerCounters counters_;
  int64_t next_auto_id_ = 1;
  bool draining_ = false;
  Clock::time_point drain_deadline_;
  Clock::time_point next_heartbeat_;
};

// "routing id 0a1b2c from 127.0.0.1" from a ZeroMQ routing id and peer address.
std::string describe_peer(const std::string& routing_id, const std::string& address);

}  // namespace sw::coordinator
