// The wire format of `shardwise serve`, version 1: one UTF-8 JSON object per ZeroMQ frame, every
// object with "v": 1 and a "type". The server binds a ROUTER; a client connects a DEALER and
// sends single-frame messages (a REQ-style empty delimiter frame before the JSON is accepted
// and echoed). docs/wire-format.md documents every field; this file is its one
// implementation, shared by the server (coordinator/server) and the client
// (coordinator/serve_client), so the two cannot drift.
//
//   client → server: generate | abort | info | stats | ping
//   server → client: tokens (per step) … done | error; info | stats | pong; heartbeat
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/request.h"
#include "parallel/cluster_config.h"

namespace sw::coordinator {

class Engine;

namespace serve {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMaxIdChars = 256;  // a client's request id

// ---- client → server ----

enum class ClientMessageType { kGenerate, kAbort, kInfo, kStats, kPing };

struct GenerateRequest {
  std::string id;  // the client's name for it, unique among its open requests ("": assigned)
  RequestSpec spec;
  bool stream = true;  // tokens as they are produced; false: all of them in the done message
};

struct ClientMessage {
  ClientMessageType type = ClientMessageType::kPing;
  std::string id;            // generate, abort
  GenerateRequest generate;  // kGenerate
};

// Why a frame was refused; `id` is the request id when the frame named one.
struct ProtocolError {
  std::string code;  // bad_frame | unsupported_version | invalid_request | ...
  std::string message;
  std::string id;
};

// Error codes (the "code" of an error message).
inline constexpr const char* kBadFrame = "bad_frame";  // not a JSON object, or no "type"
inline constexpr const char* kTooLarge = "too_large";  // frame over the server's limit
inline constexpr const char* kUnsupportedVersion = "unsupported_version";
inline constexpr const char* kInvalidRequest = "invalid_request";  // a field is wrong
inline constexpr const char* kDuplicateId = "duplicate_id";
inline constexpr const char* kUnknownId = "unknown_id";  // abort of no open request
inline constexpr const char* kShuttingDown = "shutting_down";
inline constexpr const char* kOverloaded = "overloaded";  // too many open requests
inline constexpr const char* kServerError = "server_error";

// Parses one client frame. Unknown keys, values of the wrong type or out of range are errors
// naming the key; sampling values the engine would refuse are left to Engine::add.
Result<ClientMessage> parse_client_message(std::string_view frame, ProtocolError* error);
// The same from a parsed frame (the server parses with bounded depth and no duplicate keys
// first); `frame_bytes` for the message when it is no object.
Result<ClientMessage> parse_client_message(const nlohmann::json& frame, size_t frame_bytes,
                                           ProtocolError* error);

std::string encode_generate(const GenerateRequest& r);
std::string encode_abort(const std::string& id);
std::string encode_query(ClientMessageType type);  // info | stats | ping

// ---- server → client ----

// What a request ended with, as the done message carries it.
struct RequestSummary {
  std::string finish_reason;  // length | stop | abort | error
  std::string error;          // finish_reason error: why
  int64_t num_prompt_tokens = 0;
  int64_t num_output_tokens = 0;
  int num_preemptions = 0;
  int instance = -1;          // the instance it ended on (decode side when disaggregated)
  int prefill_instance = -1;  // disaggregated: the instance that prefilled it
  int64_t kv_bytes = 0;       // moved prefill -> decode
  double kv_transfer_ms = 0;
  double ttft_ms = 0;  // server side: arrival to the first token
  double e2el_ms = 0;  // arrival to the end
};
RequestSummary summarize(const Request& r);  // (serve_engine.cpp)

// The engine a server fronts (the info reply; bench prints it).
struct ServerInfo {
  std::string model;  // preset name or folder
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t max_model_len = 0;
  std::vector<int> eos_token_ids;
  std::string device;  // cpu | cuda
  std::string dtype;
  int world_size = 1;                     // processes (ranks) of the job
  std::vector<parallel::PoolSpec> pools;  // empty: one process, no pools
  std::string layout() const;  // "prefill 1 x (tp 2 x pp 1 x dp 1, moe ep) + decode 2 x (...)"
  bool disaggregated() const;
};

// Engine counters (the stats reply; bench takes differences over its run).
struct ServerStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_transferring = 0;
  int64_t num_steps = 0;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t num_preemptions = 0;
  int64_t kv_transfers = 0;
  int64_t kv_transfer_failures = 0;
  int64_t kv_bytes = 0;
  int64_t moe_assignments = 0;  // routed (token, expert) pairs, when the engine collects them
  int64_t moe_dropped = 0;
};
ServerStats engine_stats(const Engine& engine);  // (serve_engine.cpp)
// Every counter of ServerStats with its wire name: the one list the JSON, the parser and the
// difference below walk.
struct StatsField {
  const char* name;
  int64_t ServerStats::*member;
};
const std::vector<StatsField>& stats_fields();
// Counters over a span: `after` minus `before` (gauges such as num_running keep `after`).
ServerStats stats_difference(const ServerStats& after, const ServerStats& before);

enum class ServerMessageType { kTokens, kDone, kError, kInfo, kStats, kPong, kHeartbeat };

struct ServerMessage {
  ServerMessageType type = ServerMessageType::kHeartbeat;
  std::string id;               // tokens, done, error (may be empty for an error)
  std::vector<int32_t> tokens;  // tokens: the new ones; done: all (stream false)
  int64_t index = 0;            // tokens: output tokens before these
  RequestSummary summary;       // done
  ProtocolError error;          // error
  ServerInfo info;              // info
  ServerStats stats;            // stats
};

std::string encode_tokens(const std::string& id, const std::vector<int32_t>& tokens, int64_t index);
// `output_ids` (all tokens) when the request did not stream.
std::string encode_done(const std::string& id, const RequestSummary& s,
                        const std::vector<int32_t>* output_ids);
std::string encode_error(const ProtocolError& e);
std::string encode_info(const ServerInfo& info);
std::string encode_stats(const ServerStats& stats);
std::string encode_simple(ServerMessageType type);  // pong | heartbeat

Result<ServerMessage> parse_server_message(std::string_view frame);

nlohmann::json to_json(const ServerInfo& info);
nlohmann::json to_json(const ServerStats& stats);
nlohmann::json to_json(const RequestSummary& s);

}  // namespace serve
}  // namespace sw::coordinator
