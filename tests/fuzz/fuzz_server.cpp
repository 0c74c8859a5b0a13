// Fuzz target: what a client can send the server, short of the engine. The
// input is HTTP bytes fed to the request parser in pieces (sizes drawn from
// the first byte), and every complete request's body, and the whole input as
// a body too, goes through JSON parsing and the OpenAI request validation of
// both endpoints, with and without a tokenizer (Qwen3 chat template).
// Never crashes or hangs; the parser ends in Complete, Incomplete or an
// error status it names; validation returns or throws ApiError (HTTP 400
// naming the field), never another exception (server/api.h's contract); what
// it returns fits the limits it was given.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "server/api.h"
#include "server/http.h"
#include "tiny_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace {

using kf::server::ApiError;
using kf::server::ApiLimits;
using kf::server::Endpoint;
using kf::server::GenParams;

const kf::Tokenizer& tokenizer() {
  static const kf::Tokenizer tok = kf::Tokenizer::from_hf_json_text(
      kf::fuzz::tiny_tokenizer_json(),
      R"({"chat_template": "<|im_start|>{% if enable_thinking %}<think>\n\n</think>{% endif %}"})", "tiny");
  return tok;
}

void check_body(std::string_view body) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) return;  // the server answers 400 "not valid JSON"
  ApiLimits lim;
  lim.vocab = tokenizer().vocab_size();
  lim.max_model_len = 64;
  lim.max_seqs = 4;
  lim.kv_tokens = 96;
  for (int think : {-1, 0}) {  // a model with or without </think> (id 0 stands in)
    lim.think_end_token = think;
    for (const kf::Tokenizer* tok : {static_cast<const kf::Tokenizer*>(nullptr), &tokenizer()})
      for (Endpoint ep : {Endpoint::Completions, Endpoint::Chat}) {
        try {
          const GenParams p = kf::server::parse_request(ep, j, tok, lim);
          if (p.prompts.empty() || p.n < 1 || p.n > lim.max_seqs || p.max_tokens < 0) __builtin_trap();
          for (const auto& prompt : p.prompts) {
            const int64_t context = static_cast<int64_t>(prompt.size()) + p.max_tokens;
            if (context > lim.max_model_len || context > lim.kv_tokens) __builtin_trap();
            for (int id : prompt)
              if (id < 0 || id >= lim.vocab) __builtin_trap();
          }
        } catch (const ApiError& e) {
          if (e.status < 400 || e.status > 499) __builtin_trap();
        }
      }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_body(input);
  // The same bytes as HTTP, fed in pieces of 1 to 16 bytes (the first byte picks them).
  kf::server::RequestParser parser(kf::server::RequestParser::Limits{4096, 4096});
  uint32_t state = data[0] | 1u;
  for (size_t at = 0; at < input.size();) {
    state = state * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(1 + (state >> 16) % 16, input.size() - at);
    auto s = parser.feed(input.substr(at, n));
    at += n;
    while (s == kf::server::RequestParser::State::Complete) {
      const kf::server::HttpRequest req = parser.take();
      if (req.method.empty()) __builtin_trap();
      check_body(req.body);
      s = parser.state();  // take() parsed the bytes after it
    }
    if (s == kf::server::RequestParser::State::Error) {
      const int status = parser.error_status();
      if (status < 400 || status > 599 || parser.error_message().empty()) __builtin_trap();
      break;
    }
  }
  return 0;
}
