// kv_transfer_bench: GB/s of comm::KvTransport moving the KV of a prompt layer by layer, next
// to the raw transport ceiling measured in the same run: the same bytes, as the same messages,
// through a plain ZeroMQ socket pair with no header, acknowledgement or bookkeeping. The ratio
// is what the transfer protocol costs. Block sets are realistic: the KV of --tokens prompt
// tokens of each preset in bf16, one part per layer (a decode rank holding every KV head).
// KvTransport is measured twice: in the clear, and with CURVE (every cluster job's setting:
// authenticated and encrypted, comm/curve.h), so the cost of the encryption is its own column.
//
//   build/bench/kv_transfer_bench [--tokens 1024] [--reps 7] [--json kv_transfer_bench.json]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "comm/curve.h"
#include "comm/kv_transport.h"
#include "model/model_config.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The plain ceiling: a PUSH/PULL pair over loopback TCP, the same parts as messages.
double raw_seconds(const std::vector<std::string>& parts) {
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
  for (zmq::socket_t* s : {&pull, &push}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 0);
    s->set(zmq::sockopt::rcvhwm, 0);
  }
  pull.bind("tcp://127.0.0.1:*");
  push.connect(pull.get(zmq::sockopt::last_endpoint));
  // Warm the connection up so both measurements start connected.
  push.send(zmq::str_buffer("x"), zmq::send_flags::none);
  zmq::message_t m;
  (void)pull.recv(m);
  // As for the transport: buffers made before the clock starts and handed over without a
  // copy; the receiver keeps each message as it came.
  std::vector<std::string> owned(parts);
  const auto t0 = Clock::now();
  std::thread receiver([&] {
    for (size_t i = 0; i < parts.size(); ++i) {
      zmq::message_t part;
      (void)pull.recv(part);
    }
  });
  for (std::string& p : owned) {
    auto* held = new std::string(std::move(p));
    zmq::message_t msg(
        held->data(), held->size(), [](void*, void* h) { delete static_cast<std::string*>(h); },
        held);
    push.send(msg, zmq::send_flags::none);
  }
  receiver.join();
  return seconds_since(t0);
}

template <typename T>
T or_exit(sw::Result<T> r) {
  if (!r.ok()) {
    std::fprintf(stderr, "kv_transfer_bench: %s\n", r.status().message().c_str());
    std::exit(1);
  }
  return std::move(*r);
}

// The same parts through two KvTransports: sent, received and acknowledged. `curve`: as in a
// cluster job, each side with its key pair, the receiver admitting the sender's key and the
// sender sending only to the receiver's.
double transport_seconds(const std::vector<std::string>& parts, uint64_t transfer, bool curve) {
  sw::comm::KvTransportOptions src_opts, dst_opts;
  if (curve) {
    src_opts.keys = or_exit(sw::comm::make_curve_keypair());
    dst_opts.keys = or_exit(sw::comm::make_curve_keypair());
    src_opts.admitted_senders[dst_opts.keys.public_key] = "rank 2";
    dst_opts.admitted_senders[src_opts.keys.public_key] = "rank 1";
  }
  auto src = or_exit(sw::comm::make_kv_transport(src_opts));
  auto dst = or_exit(sw::comm::make_kv_transport(dst_opts));
  sw::comm::KvTransport& a = *src;
  sw::comm::KvTransport& b = *dst;
  if (curve) {
    auto st = a.set_peer_key(b.address(), dst_opts.keys.public_key);
    if (!st.ok()) {
      std::fprintf(stderr, "kv_transfer_bench: %s\n", st.message().c_str());
      std::exit(1);
    }
  }
  // Warm-up part, as for the raw pair.
  (void)a.send(b.address(), transfer, 9999, "x", 30);
  while (a.num_in_flight() > 0) {
    (void)a.progress(0.001);
    (void)b.progress(0.001);
    (void)b.take_received();
    (void)a.take_completed();
  }
  // The parts are the caller's to hand over (an export fills a fresh buffer): copies made
  // before the clock starts, moved into send() as the worker does.
  std::vector<std::string> owned(parts);
  const auto t0 = Clock::now();
  std::thread receiver([&] {
    size_t got = 0;
    while (got < parts.size()) {
      (void)b.progress(0.001);
      got += b.take_received().size();
    }
    // Keep answering until the last acknowledgements have left.
    const auto until = Clock::now() + std::chrono::milliseconds(200);
    while (Clock::now() < until) (void)b.progress(0.001);
  });
  for (size_t i = 0; i < parts.size(); ++i)
    (void)a.send(b.address(), transfer + 1, static_cast<uint32_t>(i), std::move(owned[i]), 60);
  size_t acked = 0;
  while (acked < parts.size()) {
    (void)a.progress(0.001);
    for (const auto& r : a.take_completed()) acked += r.status.ok() ? 1 : 0;
  }
  const double s = seconds_since(t0);
  receiver.join();
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"KvTransport GB/s against the raw ZeroMQ ceiling, layer by layer"};
  int64_t tokens = 1024;
  int reps = 7;
  std::string json_path = "kv_transfer_bench.json";
  app.add_option("--tokens", tokens, "Prompt tokens whose KV moves")->capture_default_str();
  app.add_option("--reps", reps, "Repetitions (median reported)")->capture_default_str();
  app.add_option("--json", json_path, "Where to write the results")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-16s %7s %6s %10s %10s %9s %9s %7s %11s %7s\n", "preset", "tokens", "layers",
              "MiB/layer", "total MiB", "raw GB/s", "KvT GB/s", "ratio", "CURVE GB/s", "ratio");
  uint64_t transfer = 1;
  for (const char* preset : {"mixtral-8x7b", "qwen3-30b-a3b", "llama-3-8b"}) {
    auto c = sw::model::load_model_config(preset);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().message().c_str());
      return 1;
    }
    // K and V of every KV head of one layer for `tokens` tokens, bf16.
    const int64_t layer_bytes = 2 * c->num_key_value_heads * c->head_dim * tokens * 2;
    std::vector<std::string> parts(static_cast<size_t>(c->num_hidden_layers),
                                   std::string(static_cast<size_t>(layer_bytes), '\x5a'));
    const double total = static_cast<double>(layer_bytes) * c->num_hidden_layers;
    std::vector<double> raw, kvt, curve;
    for (int r = 0; r < reps; ++r) {
      raw.push_back(raw_seconds(parts));
      kvt.push_back(transport_seconds(parts, transfer, false));
      curve.push_back(transport_seconds(parts, transfer + 2, true));
      transfer += 4;
    }
    const double raw_gbps = total / median(raw) / 1e9, kvt_gbps = total / median(kvt) / 1e9,
                 curve_gbps = total / median(curve) / 1e9;
    std::printf("%-16s %7ld %6d %10.2f %10.1f %9.2f %9.2f %7.2f %11.2f %7.2f\n", preset,
                static_cast<long>(tokens), c->num_hidden_layers, layer_bytes / 1048576.0,
                total / 1048576.0, raw_gbps, kvt_gbps, kvt_gbps / raw_gbps, curve_gbps,
                curve_gbps / raw_gbps);
    rows.push_back({{"preset", preset},
                    {"tokens", tokens},
                    {"layers", c->num_hidden_layers},
                    {"layer_bytes", layer_bytes},
                    {"total_bytes", total},
                    {"raw_seconds", raw},
                    {"kv_transport_seconds", kvt},
                    {"raw_gbps", raw_gbps},
                    {"kv_transport_gbps", kvt_gbps},
                    {"ratio", kvt_gbps / raw_gbps},
                    {"curve_seconds", curve},
                    {"curve_gbps", curve_gbps},
                    {"curve_ratio", curve_gbps / raw_gbps}});
  }
  std::ofstream(json_path) << nlohmann::json{{"transport", "zmq"},
                                             {"link", "tcp loopback"},
                                             {"reps", reps},
                                             {"rows", rows}}
                                  .dump(2)
                           << "\n";
  std::printf("JSON: %s\n", json_path.c_str());
  return 0;
}
