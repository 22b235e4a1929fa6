// KvTransport: moves KV-cache bytes between ranks of different instances (a prefill rank to a
// decode rank), point to point: never a collective over the world, so an instance could run
// as a job of its own. A sender posts parts — (transfer id, part index, bytes) — to a peer's
// address; the receiver acknowledges each part when it arrives; a part not acknowledged by its
// deadline fails with an error that names the peer. Cancelling, ordering parts into a cache
// and acknowledging whole transfers to the coordinator are the caller's (worker/kv_transfer).
//
// Implementations: ZmqKvTransport (TCP through ZeroMQ; works between any two hosts; device
// buffers are staged through host memory by the caller). With keys (every cluster job) only the
// job's ranks can send to a transport (CURVE, a ZAP handler admitting the job's KV keys), and a
// sender only hands parts to the holder of the destination's key (set_peer_key). Add one (e.g. NCCL
// point to point on GPUs, with its unique id passed over the control channel): implement this
// interface, add it to make_kv_transport() and to the test driver's list
// (tests/unit/test_kv_transport.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "comm/curve.h"
#include "common/status.h"

namespace sw::comm {

// A received part. Its bytes stay in the transport's own buffer (no copy); `owner` keeps that
// buffer alive as long as the part is.
struct KvPart {
  uint64_t transfer = 0;
  uint32_t part = 0;
  std::string_view bytes;
  std::shared_ptr<const void> owner;
};

struct KvSendResult {
  uint64_t transfer = 0;
  uint32_t part = 0;
  std::string peer;
  Status status;  // OK: the peer acknowledged the part
};

struct KvTransportStats {
  int64_t bytes_sent = 0;      // payload bytes handed to the network
  int64_t bytes_received = 0;  // payload bytes of accepted parts
  int64_t parts_acked = 0;
  int64_t num_rejected = 0;  // malformed or oversized messages dropped
  int64_t num_refused = 0;   // connections refused at the handshake (not a rank of this job)
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;
  virtual const char* name() const = 0;
  // Where peers send to; the coordinator passes it on to the ranks that send here.
  virtual const std::string& address() const = 0;
  // Queues one part for `peer` (another transport's address). Any thread; never waits for the
  // network. `timeout_s`: the part must be acknowledged within this long of the call.
  virtual Status send(const std::string& peer, uint64_t transfer, uint32_t part, std::string bytes,
                      double timeout_s) = 0;
  // Hands queued parts to the network, takes arriving parts (acknowledging each) and
  // acknowledgements, expires deadlines. Waits up to `max_wait_s` for something to arrive.
  // One thread calls it (and the take_* calls).
  virtual Status progress(double max_wait_s) = 0;
  // Parts that arrived since the last call, in arrival order.
  virtual std::vector<KvPart> take_received() = 0;
  // Parts that were acknowledged or failed since the last call.
  virtual std::vector<KvSendResult> take_completed() = 0;
  // With keys: the peer at `peer` (an address) must prove it holds the secret half of
  // `public_key` before any part goes there; needed before the first send to it. Any thread.
  virtual Status set_peer_key(const std::string& peer, const std::string& public_key) = 0;
  // Parts sent and not yet acknowledged or failed.
  virtual int64_t num_in_flight() const = 0;
  virtual KvTransportStats stats() const = 0;
};

struct KvTransportOptions {
  std::string transport = "zmq";
  // Address this rank binds and advertises: "127.0.0.1" (one host), an interface's address,
  // or "hostname" (this host's name, bound on every interface). A cluster job picks it with
  // comm::kv_bind_host (comm/host_address.h).
  std::string host = "127.0.0.1";
  int64_t max_part_bytes = int64_t{1} << 30;  // larger incoming messages are refused unread
  // CURVE, when `keys` is set (every cluster job; benchmarks and some tests leave it empty):
  // this transport's key pair, which is its receiving socket's server key and its sending
  // sockets' client key, and the senders it admits (public key -> name, e.g. "rank 3").
  CurveKeyPair keys;
  std::map<std::string, std::string> admitted_senders;
};

Result<std::unique_ptr<KvTransport>> make_kv_transport(const KvTransportOptions& options);

}  // namespace sw::comm
