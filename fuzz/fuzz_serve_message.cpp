// libFuzzer harness: the serve wire format (coordinator/serve_protocol.cpp) on arbitrary frames,
// as the server reads a client's frame and the client a server's. An accepted client message
// must survive a round trip (a generate re-encoded parses to the same request); an error reply
// built from whatever the frame held (its id, the parser's message) must be valid JSON that the
// client parses back with the same code, id and message.
#include <cstdint>
#include <string>

#include "coordinator/serve_protocol.h"
#include "fuzz/fuzz_check.h"

namespace serve = sw::coordinator::serve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string frame(reinterpret_cast<const char*>(data), size);
  serve::ProtocolError error;
  auto msg = serve::parse_client_message(frame, &error);
  if (msg.ok()) {
    FUZZ_CHECK(error.code.empty());
    if (msg->type == serve::ClientMessageType::kGenerate) {
      const auto& g = msg->generate;
      FUZZ_CHECK(!g.spec.prompt_ids.empty() && g.spec.max_new_tokens >= 1);
      FUZZ_CHECK(g.id.size() <= serve::kMaxIdChars);
      const std::string once = serve::encode_generate(g);
      serve::ProtocolError e2;
      auto again = serve::parse_client_message(once, &e2);
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(serve::encode_generate(again->generate) == once);
    }
  } else {
    FUZZ_CHECK(!error.code.empty() && !error.message.empty());
    // The reply quotes the client's bytes: it must still be one JSON object.
    auto reply = serve::parse_server_message(serve::encode_error(error));
    FUZZ_CHECK(reply.ok());
    FUZZ_CHECK(reply->type == serve::ServerMessageType::kError);
    FUZZ_CHECK(reply->error.code == error.code);
  }
  // The client's parser on the same bytes: an error or a message, never a crash.
  auto server = serve::parse_server_message(frame);
  if (server.ok() && server->type == serve::ServerMessageType::kTokens)
    FUZZ_CHECK(server->tokens.size() <= size);
  return 0;
}
