// Serve wire format v1: parsing and encoding (see serve_protocol.h and docs/wire-format.md).
#include "coordinator/serve_protocol.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <initializer_list>

#include "common/json_fields.h"

namespace sw::coordinator::serve {

namespace {

using nlohmann::json;

const char* client_type_name(ClientMessageType t) {
  switch (t) {
    case ClientMessageType::kGenerate: return "generate";
    case ClientMessageType::kAbort: return "abort";
    case ClientMessageType::kInfo: return "info";
    case ClientMessageType::kStats: return "stats";
    case ClientMessageType::kPing: return "ping";
  }
  return "?";
}

const char* server_type_name(ServerMessageType t) {
  switch (t) {
    case ServerMessageType::kTokens: return "tokens";
    case ServerMessageType::kDone: return "done";
    case ServerMessageType::kError: return "error";
    case ServerMessageType::kInfo: return "info";
    case ServerMessageType::kStats: return "stats";
    case ServerMessageType::kPong: return "pong";
    case ServerMessageType::kHeartbeat: return "heartbeat";
  }
  return "?";
}

json header(const char* type) { return json{{"v", kProtocolVersion}, {"type", type}}; }

Result<ClientMessage> parse_generate(const json& j, const std::string& id) {
  JsonFields f(j, "generate");
  SW_RETURN_IF_ERROR(f.only_keys({"v", "type", "id", "prompt_ids", "max_tokens", "temperature",
                                  "top_k", "top_p", "seed", "ignore_eos", "stream"}));
  ClientMessage m;
  m.type = ClientMessageType::kGenerate;
  m.id = id;
  GenerateRequest& g = m.generate;
  g.id = id;
  if (!f.has("prompt_ids")) return invalid_argument("generate: missing required key 'prompt_ids'");
  const json& ids = j["prompt_ids"];
  if (!ids.is_array())
    return invalid_argument("generate: key 'prompt_ids': expected a list of token ids, got {} {}",
                            ids.type_name(), json_excerpt(ids));
  if (ids.empty()) return invalid_argument("generate: key 'prompt_ids': empty prompt");
  g.spec.prompt_ids.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t t = 0;
    if (!JsonFields::as_integer(ids[i], &t) || t < 0)
      return invalid_argument(
          "generate: key 'prompt_ids': element {} is not a token id (an integer in [0, {}]), got "
          "{}",
          i, INT32_MAX, json_excerpt(ids[i]));
    g.spec.prompt_ids.push_back(t);
  }
  SW_ASSIGN_OR_RETURN(g.spec.max_new_tokens,
                      f.optional_in<int64_t>("max_tokens", 16, 1, int64_t{1} << 31));
  SW_ASSIGN_OR_RETURN(g.spec.sampling.temperature, f.optional<float>("temperature", 0.f));
  SW_ASSIGN_OR_RETURN(g.spec.sampling.top_k, f.optional<int32_t>("top_k", 0));
  SW_ASSIGN_OR_RETURN(g.spec.sampling.top_p, f.optional<float>("top_p", 1.f));
  SW_ASSIGN_OR_RETURN(g.spec.sampling.seed, f.optional<uint64_t>("seed", 0));
  SW_ASSIGN_OR_RETURN(g.spec.ignore_eos, f.optional<bool>("ignore_eos", false));
  SW_ASSIGN_OR_RETURN(g.stream, f.optional<bool>("stream", true));
  Status valid = validate_request_spec(g.spec);
  if (!valid.ok()) return valid.with_context("generate");
  return m;
}

}  // namespace

Result<ClientMessage> parse_client_message(std::string_view frame, ProtocolError* error) {
  json j = json::parse(frame.begin(), frame.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) j = nullptr;  // not an object: refused below
  return parse_client_message(j, frame.size(), error);
}

Result<ClientMessage> parse_client_message(const json& j, size_t frame_bytes,
                                           ProtocolError* error) {
  *error = ProtocolError{};
  auto fail = [&](const char* code, std::string message) -> Status {
    error->code = code;
    error->message = std::move(message);
    return invalid_argument("{}", error->message);
  };
  if (!j.is_object())
    return fail(kBadFrame, fmt::format("a message is one JSON object per frame; got {} bytes "
                                       "that are not",
                                       frame_bytes));
  // The id first, so that every later error names the request.
  if (j.contains("id")) {
    const json& id = j["id"];
    if (!id.is_string() || id.get_ref<const std::string&>().empty() ||
        id.get_ref<const std::string&>().size() > kMaxIdChars)
      return fail(kInvalidRequest,
                  fmt::format("key 'id': expected a non-empty string of at most {} characters, "
                              "got {} {}",
                              kMaxIdChars, id.type_name(), json_excerpt(id)));
    error->id = id.get<std::string>();
  }
  if (!j.contains("v"))
    return fail(kUnsupportedVersion,
                fmt::format("missing key 'v' (the protocol version; this server speaks {})",
                            kProtocolVersion));
  int v = 0;
  if (!JsonFields::as_integer(j["v"], &v) || v != kProtocolVersion)
    return fail(kUnsupportedVersion, fmt::format("protocol version {} is not supported (this "
                                                 "server speaks {})",
                                                 json_excerpt(j["v"]), kProtocolVersion));
  if (!j.contains("type") || !j["type"].is_string())
    return fail(kBadFrame, "missing key 'type' (generate, abort, info, stats or ping)");
  const std::string& type = j["type"].get_ref<const std::string&>();
  ClientMessage m;
  Status st;
  if (type == "generate") {
    auto g = parse_generate(j, error->id);
    if (g.ok()) return std::move(g).value();
    st = g.status();
  } else if (type == "abort") {
    st = JsonFields(j, "abort").only_keys({"v", "type", "id"});
    if (st.ok() && error->id.empty()) st = invalid_argument("abort: missing required key 'id'");
    if (st.ok()) {
      m.type = ClientMessageType::kAbort;
      m.id = error->id;
      return m;
    }
  } else if (type == "info" || type == "stats" || type == "ping") {
    st = JsonFields(j, type).only_keys({"v", "type"});
    if (st.ok()) {
      m.type = type == "info"    ? ClientMessageType::kInfo
               : type == "stats" ? ClientMessageType::kStats
                                 : ClientMessageType::kPing;
      return m;
    }
  } else {
    const std::string shown = printable(type, 64);
    return fail(kBadFrame, fmt::format("unknown message type '{}' (expected generate, abort, "
                                       "info, stats or ping)",
                                       shown));
  }
  return fail(kInvalidRequest, st.message());
}

std::string encode_generate(const GenerateRequest& r) {
  json j = header("generate");
  if (!r.id.empty()) j["id"] = r.id;
  j["prompt_ids"] = r.spec.prompt_ids;
  j["max_tokens"] = r.spec.max_new_tokens;
  j["temperature"] = r.spec.sampling.temperature;
  j["top_k"] = r.spec.sampling.top_k;
  j["top_p"] = r.spec.sampling.top_p;
  j["seed"] = r.spec.sampling.seed;
  j["ignore_eos"] = r.spec.ignore_eos;
  j["stream"] = r.stream;
  return j.dump();
}

std::string encode_abort(const std::string& id) {
  json j = header("abort");
  j["id"] = id;
  return j.dump();
}

std::string encode_query(ClientMessageType type) { return header(client_type_name(type)).dump(); }

std::string ServerInfo::layout() const {
  if (pools.empty()) return fmt::format("1 process ({})", device);
  std::string out;
  for (const auto& p : pools) {
    if (!out.empty()) out += " + ";
    out += parallel::pool_text(p);
  }
  return out;
}

bool ServerInfo::disaggregated() const {
  return std::any_of(pools.begin(), pools.end(),
                     [](const auto& p) { return p.kind != parallel::PoolKind::kMixed; });
}

json to_json(const RequestSummary& s) {
  json j = {{"finish_reason", s.finish_reason},
            {"num_prompt_tokens", s.num_prompt_tokens},
            {"num_output_tokens", s.num_output_tokens},
            {"num_preemptions", s.num_preemptions},
            {"instance", s.instance},
            {"prefill_instance", s.prefill_instance},
            {"kv_bytes", s.kv_bytes},
            {"kv_transfer_ms", s.kv_transfer_ms},
            {"ttft_ms", s.ttft_ms},
            {"e2el_ms", s.e2el_ms}};
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

json to_json(const ServerInfo& info) {
  json pools = json::array();
  for (const auto& p : info.pools) pools.push_back(parallel::pool_to_json(p));
  return {{"model", info.model},
          {"model_type", info.model_type},
          {"vocab_size", info.vocab_size},
          {"max_model_len", info.max_model_len},
          {"eos_token_ids", info.eos_token_ids},
          {"device", info.device},
          {"dtype", info.dtype},
          {"world_size", info.world_size},
          {"pools", pools},
          {"layout", info.layout()}};
}

const std::vector<StatsField>& stats_fields() {
  static const std::vector<StatsField> fields = {
      {"num_running", &ServerStats::num_running},
      {"num_waiting", &ServerStats::num_waiting},
      {"num_transferring", &ServerStats::num_transferring},
      {"num_steps", &ServerStats::num_steps},
      {"prompt_tokens", &ServerStats::prompt_tokens},
      {"generated_tokens", &ServerStats::generated_tokens},
      {"num_preemptions", &ServerStats::num_preemptions},
      {"kv_transfers", &ServerStats::kv_transfers},
      {"kv_transfer_failures", &ServerStats::kv_transfer_failures},
      {"kv_bytes", &ServerStats::kv_bytes},
      {"moe_assignments", &ServerStats::moe_assignments},
      {"moe_dropped", &ServerStats::moe_dropped}};
  return fields;
}

ServerStats stats_difference(const ServerStats& after, const ServerStats& before) {
  ServerStats d = after;
  for (const StatsField& f : stats_fields()) {
    const bool gauge = f.member == &ServerStats::num_running ||
                       f.member == &ServerStats::num_waiting ||
                       f.member == &ServerStats::num_transferring;
    if (!gauge) d.*f.member -= before.*f.member;
  }
  return d;
}

json to_json(const ServerStats& s) {
  json j = json::object();
  for (const StatsField& f : stats_fields()) j[f.name] = s.*f.member;
  return j;
}

std::string encode_tokens(const std::string& id, const std::vector<int32_t>& tokens,
                          int64_t index) {
  json j = header("tokens");
  j["id"] = id;
  j["tokens"] = tokens;
  j["index"] = index;
  return j.dump();
}

std::string encode_done(const std::string& id, const RequestSummary& s,
                        const std::vector<int32_t>* output_ids) {
  json j = header("done");
  j["id"] = id;
  j.update(to_json(s));
  if (output_ids) j["output_ids"] = *output_ids;
  return j.dump();
}

std::string encode_error(const ProtocolError& e) {
  json j = header("error");
  j["id"] = e.id.empty() ? json(nullptr) : json(e.id);
  j["code"] = e.code;
  j["message"] = e.message;
  // A client's bytes may be echoed: replace what is not UTF-8 rather than fail to encode.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string encode_info(const ServerInfo& info) {
  json j = header("info");
  j.update(to_json(info));
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string encode_stats(const ServerStats& stats) {
  json j = header("stats");
  j.update(to_json(stats));
  return j.dump();
}

std::string encode_simple(ServerMessageType type) { return header(server_type_name(type)).dump(); }

// The client's parser: strict on what it needs, tolerant of keys a newer server adds.
Result<ServerMessage> parse_server_message(std::string_view frame) {
  json j = json::parse(frame.begin(), frame.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument("server message is not a JSON object ({} bytes)", frame.size());
  JsonFields f(j, "server message");
  SW_ASSIGN_OR_RETURN(int v, f.required<int>("v"));
  if (v != kProtocolVersion)
    return invalid_argument("server speaks protocol version {}, this client {}", v,
                            kProtocolVersion);
  SW_ASSIGN_OR_RETURN(std::string type, f.required<std::string>("type"));
  ServerMessage m;
  if (j.contains("id") && j["id"].is_string()) m.id = j["id"].get<std::string>();
  auto tokens = [&](const char* key) -> Status {
    const json& a = j[key];
    if (!a.is_array()) return invalid_argument("server message: key '{}' is not a list", key);
    m.tokens.reserve(a.size());
    for (const auto& e : a) {
      int32_t t = 0;
      if (!JsonFields::as_integer(e, &t))
        return invalid_argument("server message: key '{}' holds a non-token {}", key,
                                json_excerpt(e));
      m.tokens.push_back(t);
    }
    return Status();
  };
  if (type == "tokens") {
    m.type = ServerMessageType::kTokens;
    if (!j.contains("tokens")) return invalid_argument("server message: tokens without 'tokens'");
    SW_RETURN_IF_ERROR(tokens("tokens"));
    SW_ASSIGN_OR_RETURN(m.index, f.optional<int64_t>("index", 0));
  } else if (type == "done") {
    m.type = ServerMessageType::kDone;
    RequestSummary& s = m.summary;
    SW_ASSIGN_OR_RETURN(s.finish_reason, f.required<std::string>("finish_reason"));
    SW_ASSIGN_OR_RETURN(s.error, f.optional<std::string>("error", ""));
    SW_ASSIGN_OR_RETURN(s.num_prompt_tokens, f.optional<int64_t>("num_prompt_tokens", 0));
    SW_ASSIGN_OR_RETURN(s.num_output_tokens, f.optional<int64_t>("num_output_tokens", 0));
    SW_ASSIGN_OR_RETURN(s.num_preemptions, f.optional<int>("num_preemptions", 0));
    SW_ASSIGN_OR_RETURN(s.instance, f.optional<int>("instance", -1));
    SW_ASSIGN_OR_RETURN(s.prefill_instance, f.optional<int>("prefill_instance", -1));
    SW_ASSIGN_OR_RETURN(s.kv_bytes, f.optional<int64_t>("kv_bytes", 0));
    SW_ASSIGN_OR_RETURN(s.kv_transfer_ms, f.optional<double>("kv_transfer_ms", 0));
    SW_ASSIGN_OR_RETURN(s.ttft_ms, f.optional<double>("ttft_ms", 0));
    SW_ASSIGN_OR_RETURN(s.e2el_ms, f.optional<double>("e2el_ms", 0));
    if (j.contains("output_ids")) SW_RETURN_IF_ERROR(tokens("output_ids"));
  } else if (type == "error") {
    m.type = ServerMessageType::kError;
    m.error.id = m.id;
    SW_ASSIGN_OR_RETURN(m.error.code, f.optional<std::string>("code", kServerError));
    SW_ASSIGN_OR_RETURN(m.error.message, f.optional<std::string>("message", ""));
  } else if (type == "info") {
    m.type = ServerMessageType::kInfo;
    ServerInfo& i = m.info;
    SW_ASSIGN_OR_RETURN(i.model, f.optional<std::string>("model", ""));
    SW_ASSIGN_OR_RETURN(i.model_type, f.optional<std::string>("model_type", ""));
    SW_ASSIGN_OR_RETURN(i.vocab_size, f.required<int64_t>("vocab_size"));
    SW_ASSIGN_OR_RETURN(i.max_model_len, f.required<int64_t>("max_model_len"));
    SW_ASSIGN_OR_RETURN(i.eos_token_ids, f.optional<std::vector<int>>("eos_token_ids", {}));
    SW_ASSIGN_OR_RETURN(i.device, f.optional<std::string>("device", ""));
    SW_ASSIGN_OR_RETURN(i.dtype, f.optional<std::string>("dtype", ""));
    SW_ASSIGN_OR_RETURN(i.world_size, f.optional<int>("world_size", 1));
    if (j.contains("pools") && j["pools"].is_array()) {
      for (const auto& p : j["pools"]) {
        SW_ASSIGN_OR_RETURN(parallel::PoolSpec spec,
                            parallel::pool_from_json(p, "server message: pools"));
        i.pools.push_back(spec);
      }
    }
  } else if (type == "stats") {
    m.type = ServerMessageType::kStats;
    ServerStats& s = m.stats;
    for (const StatsField& field : stats_fields()) {
      SW_ASSIGN_OR_RETURN(s.*field.member, f.optional<int64_t>(field.name, 0));
    }
  } else if (type == "pong") {
    m.type = ServerMessageType::kPong;
  } else if (type == "heartbeat") {
    m.type = ServerMessageType::kHeartbeat;
  } else {
    return invalid_argument("server message of unknown type '{}'", type);
  }
  return m;
}

}  // namespace sw::coordinator::serve
