// ZmqServer: `serve`'s ZeroMQ endpoint. A ROUTER takes requests in the wire format of
// coordinator/serve_protocol.h on this server's own thread — frames read, parsed and checked
// against the model there — and hands the engine loop (coordinator/engine_loop.h) only ready
// requests; each request's tokens come back as events and go to the client that sent it, one
// message per request per engine step, then a done message. Every refused frame gets an error
// reply and the others are served on; nothing is dropped silently. Frames larger than
// max_frame_bytes are never buffered: ZeroMQ drops them with the sender's connection. Frames
// over 64 KiB are parsed on a lane of their own, a thread at the lowest priority, so that a
// client flooding large frames delays neither other clients' small frames nor the engine.
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
//   auto server = ZmqServer::bind(options, info, &loop);  // before the workers load
//   std::thread t([&] { server->run(stop); });            // its own thread
//   loop.run(engine, signals);                            // the engine thread
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/engine_loop.h"
#include "coordinator/serve_protocol.h"

namespace sw::frontend {

using coordinator::Clock;

struct ZmqServerOptions {
  std::string endpoint =
      "tcp://127.0.0.1:8765";  // tcp://host:port ("*" port: any free one) or ipc://
  double heartbeat_s = 1.0;    // to clients with open requests that heard nothing else
  // Larger frames are dropped by ZeroMQ with the sender's connection, before they are
  // buffered: what memory one client can make the server hold.
  int64_t max_frame_bytes = int64_t{16} << 20;
  int send_hwm = 100000;  // messages queued for one client before it counts as not reading
};

struct ZmqServerCounters {
  int64_t accepted = 0;          // generate requests handed to the engine
  int64_t rejected = 0;          // error replies (any refused frame or request)
  int64_t completed = 0;         // done messages sent
  int64_t aborted = 0;           // by an abort message
  int64_t disconnects = 0;       // clients dropped (gone or not reading)
  int64_t dropped_requests = 0;  // open requests aborted with their client
};

class ZmqServer {
 public:
  static Result<std::unique_ptr<ZmqServer>> bind(const ZmqServerOptions& options,
                                                 coordinator::serve::ServerInfo info,
                                                 coordinator::EngineLoop* loop);
  ~ZmqServer();
  ZmqServer(const ZmqServer&) = delete;
  ZmqServer& operator=(const ZmqServer&) = delete;

  const std::string& endpoint() const { return endpoint_; }  // as bound (the real port)

  // Serves until `stop` is set (or a socket error), sends the engine loop's last events, and
  // tells clients of requests still open that the server stopped. Everything else in this
  // class runs on that thread.
  Status run(const std::atomic<bool>& stop);
  // One turn: reads what arrived (waiting up to `max_wait_s`), sends what the engine
  // produced, heartbeats.
  Status run_once(double max_wait_s);

  size_t num_open() const { return open_.size(); }
  // The ticket of a client's open request (tests), or 0.
  uint64_t ticket(const std::string& client_request_id) const;
  size_t num_clients() const { return clients_.size(); }
  const ZmqServerCounters& counters() const { return counters_; }

 private:
  struct Client {
    std::string peer;                      // "client 0a1b2c3d4e from 127.0.0.1", for messages
    bool envelope = false;                 // REQ-style: an empty delimiter frame before the payload
    std::map<std::string, uint64_t> open;  // client's request id -> ticket
    int in_lane = 0;                       // its frames waiting on the large-frame lane
    Clock::time_point last_sent;
  };
  struct Open {
    std::string routing_id;
    std::string id;  // the client's request id
    bool stream = true;
    bool counted = false;         // accepted by the engine (its first event was no refusal)
    std::vector<int32_t> tokens;  // every output token (sent in done when not streaming)
    int64_t num_sent = 0;         // output tokens sent
  };
  // A frame parsed: the message, or why it was refused.
  struct Parsed {
    std::optional<coordinator::serve::ClientMessage> message;
    coordinator::serve::ProtocolError error;
  };
  struct LargeFrame {
    std::string routing_id;
    zmq::message_t payload;
  };
  // Events from the engine thread and frames parsed on the large-frame lane, handed over
  // through queues and an eventfd that run_once polls beside the socket.
  struct Inbox {
    std::mutex mu;
    std::deque<std::pair<uint64_t, coordinator::RequestUpdate>> events;
    std::deque<std::pair<std::string, Parsed>> parsed;  // by routing id
    int event_fd = -1;
    ~Inbox();
  };
  class LargeLane;

  ZmqServer(const ZmqServerOptions& options, coordinator::serve::ServerInfo info,
            coordinator::EngineLoop* loop);
  Status receive(bool have_frames);
  // Parses a frame (any thread): depth-bounded JSON, duplicate keys refused, the wire format.
  static Parsed parse_frame(std::string_view frame);
  // A frame from a client: parsed here when small, else on the large-frame lane.
  void handle(const std::string& routing_id, bool envelope, zmq::message_t&& payload,
              const std::string& peer_address);
  // What a parsed frame asks: a reply, an abort, or a request for the engine loop.
  void act(const std::string& routing_id, Parsed&& parsed);
  void forget_if_idle(const std::string& routing_id);
  void take_events();
  void on_event(uint64_t ticket, coordinator::RequestUpdate&& event);
  // Sends one message; false (and the client dropped) when it is gone or not reading.
  bool send(const std::string& routing_id, const std::string& payload);
  void reject(const std::string& routing_id, const coordinator::serve::ProtocolError& e);
  void drop_client(const std::string& routing_id, const std::string& why);
  void heartbeats();

  ZmqServerOptions options_;
  coordinator::serve::ServerInfo info_;
  coordinator::EngineLoop* loop_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::string endpoint_;
  std::shared_ptr<Inbox> inbox_;
  std::unique_ptr<LargeLane> large_lane_;
  std::map<std::string, Client> clients_;  // by routing id
  std::map<uint64_t, Open> open_;          // by ticket
  ZmqServerCounters counters_;
  int64_t next_auto_id_ = 1;
  Clock::time_point next_heartbeat_;
};

// "client 0a1b2c from 127.0.0.1" from a ZeroMQ routing id and peer address.
std::string describe_peer(const std::string& routing_id, const std::string& address);

}  // namespace sw::frontend
