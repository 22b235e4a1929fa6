// KvTransport over ZeroMQ TCP. Each transport binds one ROUTER on an ephemeral port (its
// address) and keeps one DEALER per peer it sends to. A part travels as two frames — a
// 24-byte header (magic, version, transfer id, part index) and the payload — and is
// acknowledged by the receiving ROUTER with the header alone. ZeroMQ's own I/O threads move
// the bytes; progress() only hands frames over and reads what came back. With keys the ROUTER
// is a CURVE server whose ZAP handler admits only the job's KV keys, and each DEALER a CURVE
// client that completes its handshake only with the holder of the destination's key.

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "comm/host_address.h"
#include "comm/kv_transport.h"
#include "comm/options.h"
#include "common/logging.h"

namespace sw::comm {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kKvMagic = 0x564B5753;  // "SWKV"
constexpr uint32_t kKvVersion = 1;
constexpr size_t kHeaderBytes = 24;

struct Header {
  uint64_t transfer = 0;
  uint32_t part = 0;
};

std::string encode_header(uint64_t transfer, uint32_t part) {
  std::string h(kHeaderBytes, '\0');
  const uint32_t fields[2] = {kKvMagic, kKvVersion};
  std::memcpy(h.data(), fields, 8);
  std::memcpy(h.data() + 8, &transfer, 8);
  std::memcpy(h.data() + 16, &part, 4);
  return h;
}

Result<Header> decode_header(const zmq::message_t& m) {
  if (m.size() != kHeaderBytes)
    return data_loss("KV part header of {} bytes, expected {}", m.size(), kHeaderBytes);
  uint32_t fields[2];
  std::memcpy(fields, m.data(), 8);
  if (fields[0] != kKvMagic) return data_loss("KV part header: bad magic {:#x}", fields[0]);
  if (fields[1] != kKvVersion)
    return data_loss("KV part header: protocol version {}, expected {}", fields[1], kKvVersion);
  Header h;
  std::memcpy(&h.transfer, static_cast<const char*>(m.data()) + 8, 8);
  std::memcpy(&h.part, static_cast<const char*>(m.data()) + 16, 4);
  return h;
}

class ZmqKvTransport final : public KvTransport {
 public:
  explicit ZmqKvTransport(const KvTransportOptions& o)
      : options_(o), ctx_(1), router_(ctx_, zmq::socket_type::router) {}

  Status init() {
    authenticated_ = !options_.keys.public_key.empty() || !options_.keys.secret_key.empty();
    if (authenticated_) {
      if (!is_curve_key(options_.keys.public_key) || !is_curve_key(options_.keys.secret_key))
        return invalid_argument("KV transport: its CURVE key pair is malformed");
      // The handler answers before the socket can accept anyone.
      SW_ASSIGN_OR_RETURN(zap_, ZapHandler::start(ctx_, options_.admitted_senders, "KV transport"));
    }
    std::string host = options_.host;
    if (host == "hostname") {
      host = host_name();
      if (host.empty()) return unavailable("KV transport: gethostname failed");
    }
    try {
      router_.set(zmq::sockopt::linger, 0);
      router_.set(zmq::sockopt::maxmsgsize, options_.max_part_bytes);
      router_.set(zmq::sockopt::rcvhwm, 0);
      router_.set(zmq::sockopt::sndhwm, 0);
      if (authenticated_) {
        router_.set(zmq::sockopt::zap_domain, "shardwise-kv");
        router_.set(zmq::sockopt::curve_server, 1);
        router_.set(zmq::sockopt::curve_secretkey, options_.keys.secret_key);
      }
      router_.bind("tcp://" + (options_.host == "hostname" ? std::string("*") : host) + ":*");
      const std::string bound = router_.get(zmq::sockopt::last_endpoint);
      address_ = "tcp://" + host + bound.substr(bound.rfind(':'));
    } catch (const zmq::error_t& e) {
      return unavailable("KV transport: cannot bind on host '{}': {}", host, e.what());
    }
    if (authenticated_) {
      SW_ASSIGN_OR_RETURN(monitor_, HandshakeMonitor::attach(ctx_, router_, "KV transport"));
    }
    return Status();
  }

  const char* name() const override { return "zmq"; }
  const std::string& address() const override { return address_; }

  Status send(const std::string& peer, uint64_t transfer, uint32_t part, std::string bytes,
              double timeout_s) override {
    if (static_cast<int64_t>(bytes.size()) > options_.max_part_bytes)
      return invalid_argument("KV transfer {} part {} to {}: {} bytes exceed the part limit {}",
                              transfer, part, peer, bytes.size(), options_.max_part_bytes);
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(
        Outgoing{peer, transfer, part, std::move(bytes), Clock::now() + steady_seconds(timeout_s)});
    return Status();
  }

  Status progress(double max_wait_s) override {
    SW_RETURN_IF_ERROR(flush_outbox());
    if (monitor_) monitor_->drain();
    // Wait on the receiving socket and every sending one.
    std::vector<zmq::pollitem_t> items;
    items.push_back({router_.handle(), 0, ZMQ_POLLIN, 0});
    std::vector<std::pair<const std::string*, Peer*>> order;
    for (auto& [address, p] : peers_) {
      items.push_back({p.socket.handle(), 0, ZMQ_POLLIN, 0});
      order.emplace_back(&address, &p);
    }
    try {
      zmq::poll(items.data(), items.size(),
                std::chrono::duration_cast<std::chrono::milliseconds>(steady_seconds(max_wait_s)));
      if (items[0].revents & ZMQ_POLLIN) receive_parts();
      for (size_t i = 0; i < order.size(); ++i)
        if (items[i + 1].revents & ZMQ_POLLIN) receive_acks(*order[i].first, *order[i].second);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR)  // a signal only cuts the wait short
        return unavailable("KV transport {}: {}", address_, e.what());
    }
    expire();
    return Status();
  }

  Status set_peer_key(const std::string& peer, const std::string& public_key) override {
    if (!authenticated_) return Status();
    if (!is_curve_key(public_key))
      return invalid_argument("KV transport: the public key given for peer '{}' is malformed",
                              printable(peer));
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, added] = peer_keys_.emplace(peer, public_key);
    if (!added && it->second != public_key)
      return invalid_argument("KV transport: peer '{}' already has another public key",
                              printable(peer));
    return Status();
  }

  std::vector<KvPart> take_received() override { return std::exchange(received_, {}); }
  std::vector<KvSendResult> take_completed() override { return std::exchange(completed_, {}); }
  int64_t num_in_flight() const override {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = static_cast<int64_t>(outbox_.size());
    for (const auto& [address, p] : peers_) n += static_cast<int64_t>(p.pending.size());
    return n;
  }
  KvTransportStats stats() const override {
    KvTransportStats s = stats_;
    if (monitor_) s.num_refused = monitor_->num_refused();
    return s;
  }

 private:
  struct Outgoing {
    std::string peer;
    uint64_t transfer;
    uint32_t part;
    std::string bytes;
    Clock::time_point deadline;
  };
  struct Peer {
    zmq::socket_t socket;
    std::map<std::pair<uint64_t, uint32_t>, Clock::time_point> pending;  // -> deadline
  };

  Result<Peer*> peer(const std::string& address) {
    auto it = peers_.find(address);
    if (it != peers_.end()) return &it->second;
    std::string server_key;
    if (authenticated_) {
      std::lock_guard<std::mutex> lock(mu_);
      auto key = peer_keys_.find(address);
      if (key == peer_keys_.end())
        return unavailable(
            "KV transport: no public key for peer '{}' (set_peer_key before sending): parts go "
            "only to ranks of this job",
            printable(address));
      server_key = key->second;
    }
    Peer p{zmq::socket_t(ctx_, zmq::socket_type::dealer), {}};
    try {
      p.socket.set(zmq::sockopt::linger, 0);
      if (authenticated_) {
        p.socket.set(zmq::sockopt::curve_serverkey, server_key);
        p.socket.set(zmq::sockopt::curve_publickey, options_.keys.public_key);
        p.socket.set(zmq::sockopt::curve_secretkey, options_.keys.secret_key);
      }
      p.socket.set(zmq::sockopt::sndhwm, 0);
      // Only acks come back; the bound must still admit ZeroMQ's own handshake.
      p.socket.set(zmq::sockopt::maxmsgsize, int64_t{4096});
      p.socket.connect(address);
    } catch (const zmq::error_t& e) {
      return unavailable("KV transport: cannot connect to '{}': {}", address, e.what());
    }
    return &peers_.emplace(address, std::move(p)).first->second;
  }

  Status flush_outbox() {
    std::deque<Outgoing> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(outbox_);
    }
    for (Outgoing& o : batch) {
      auto p = peer(o.peer);
      if (!p.ok()) {
        completed_.push_back({o.transfer, o.part, o.peer, p.status()});
        continue;
      }
      const int64_t n = static_cast<int64_t>(o.bytes.size());
      try {
        (*p)->socket.send(zmq::buffer(encode_header(o.transfer, o.part)), zmq::send_flags::sndmore);
        // The payload is moved into the message: no copy.
        auto* owned = new std::string(std::move(o.bytes));
        zmq::message_t body(
            owned->data(), owned->size(),
            [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
        (*p)->socket.send(body, zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        completed_.push_back({o.transfer, o.part, o.peer,
                              unavailable("KV transfer {} part {} to {}: {}", o.transfer, o.part,
                                          o.peer, e.what())});
        continue;
      }
      (*p)->pending[{o.transfer, o.part}] = o.deadline;
      stats_.bytes_sent += n;
    }
    return Status();
  }

  void receive_parts() {
    while (true) {
      std::vector<zmq::message_t> frames;
      (void)zmq::recv_multipart(router_, std::back_inserter(frames), zmq::recv_flags::dontwait);
      if (frames.empty()) return;
      // [sender identity, header, payload]
      if (frames.size() != 3) {
        ++stats_.num_rejected;
        continue;
      }
      auto h = decode_header(frames[1]);
      if (!h.ok()) {
        ++stats_.num_rejected;
        continue;
      }
      // Only the ZAP handler hands out user ids: a part without one came in unauthenticated.
      if (authenticated_ && !zmq_msg_gets(frames[1].handle(), "User-Id")) {
        ++stats_.num_rejected;
        continue;
      }
      router_.send(frames[0], zmq::send_flags::sndmore);
      router_.send(zmq::buffer(encode_header(h->transfer, h->part)), zmq::send_flags::dontwait);
      stats_.bytes_received += static_cast<int64_t>(frames[2].size());
      auto body = std::make_shared<zmq::message_t>(std::move(frames[2]));
      const std::string_view bytes(static_cast<const char*>(body->data()), body->size());
      received_.push_back({h->transfer, h->part, bytes, std::move(body)});
    }
  }

  void receive_acks(const std::string& address, Peer& p) {
    while (true) {
      zmq::message_t m;
      if (!p.socket.recv(m, zmq::recv_flags::dontwait)) return;
      auto h = decode_header(m);
      if (!h.ok()) {
        ++stats_.num_rejected;
        continue;
      }
      auto it = p.pending.find({h->transfer, h->part});
      if (it == p.pending.end()) continue;  // late, after its deadline
      p.pending.erase(it);
      ++stats_.parts_acked;
      completed_.push_back({h->transfer, h->part, address, Status()});
    }
  }

  void expire() {
    const auto now = Clock::now();
    for (auto& [address, p] : peers_)
      for (auto it = p.pending.begin(); it != p.pending.end();) {
        if (it->second > now) {
          ++it;
          continue;
        }
        completed_.push_back({it->first.first, it->first.second, address,
                              deadline_exceeded("KV transfer {} part {} to {}: not acknowledged "
                                                "in time (kv_transfer_timeout_s)",
                                                it->first.first, it->first.second, address)});
        it = p.pending.erase(it);
      }
  }

  KvTransportOptions options_;
  bool authenticated_ = false;
  zmq::context_t ctx_;
  std::unique_ptr<ZapHandler> zap_;  // with keys; answers before router_ accepts anyone
  zmq::socket_t router_;
  std::unique_ptr<HandshakeMonitor> monitor_;  // with keys: counts refused handshakes
  std::string address_;
  std::map<std::string, Peer> peers_;
  mutable std::mutex mu_;  // guards outbox_ and peer_keys_ (send() may come from another thread)
  std::deque<Outgoing> outbox_;
  std::map<std::string, std::string> peer_keys_;  // address -> its public key
  std::vector<KvPart> received_;
  std::vector<KvSendResult> completed_;
  KvTransportStats stats_;
};

}  // namespace

Result<std::unique_ptr<KvTransport>> make_kv_transport(const KvTransportOptions& o) {
  if (o.transport != "zmq") return invalid_argument("KV transport '{}': expected zmq", o.transport);
  if (o.max_part_bytes <= 0)
    return invalid_argument("KV transport: max_part_bytes must be positive, got {}",
                            o.max_part_bytes);
  auto t = std::make_unique<ZmqKvTransport>(o);
  SW_RETURN_IF_ERROR(t->init());
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace sw::comm
