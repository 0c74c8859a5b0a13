// The OpenAI request bodies kinfer serves, parsed and validated into what the
// engine needs. Every problem is an ApiError naming the field (HTTP 400 with
// OpenAI's error object), never an exception from deeper down.
//
// POST /v1/completions: prompt (string, [string], [int], [[int]]), n,
// max_tokens, temperature, top_p, top_k, min_p, seed, stop (string or list of
// strings and token ids), stop_token_ids, presence_penalty,
// frequency_penalty, repetition_penalty, ignore_eos, stream, stream_options,
// logprobs (top-k count), echo.
// POST /v1/chat/completions: messages (through the model's chat template),
// max_tokens / max_completion_tokens, logprobs (bool) + top_logprobs, the
// sampling fields above, chat_template_kwargs.enable_thinking (Qwen3).
// kinfer's own: "kinfer": {"attn", "topk_pages", "local_pages"} (this
// request's decode policy) and "thinking_budget": N (budget forcing).
#pragma once
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attn/policy.h"
#include "backend/sampler.h"

namespace kf {
class Tokenizer;
}

namespace kf::server {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string type = {})
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param, type;
};

enum class Endpoint { Completions, Chat };

// What the server knows when it validates a request.
struct ApiLimits {
  int vocab = 0;
  int max_model_len = 0;      // prompt + generated tokens per sample
  int max_seqs = 1;           // n at most
  int64_t kv_tokens = 0;      // one sample's prompt + generated tokens must fit the pool
  int think_end_token = -1;   // the model's </think> (-1: none)
};

struct GenParams {
  Endpoint endpoint = Endpoint::Completions;
  std::vector<std::vector<int>> prompts;  // token ids, one list per prompt
  std::vector<std::string> prompt_texts;  // completions echo: the prompts as text
  int n = 1;
  int max_tokens = 16;
  SamplingParams sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  bool tokens_as_ids = false;  // return_tokens_as_token_ids: logprobs name tokens "token_id:N"
  bool stream = false, include_usage = false;
  bool echo = false;
  int logprobs = -1;  // >= 0: logprobs of generated tokens with this many alternatives
  std::optional<AttnPolicy> policy;
  int thinking_budget = -1;
  bool enable_thinking = true;  // chat: Qwen3's template switch
  bool split_reasoning = false; // chat on a model with </think>: reasoning_content apart
};

// Parses a completions or chat body. `tok` may be null (random:PRESET models):
// then only token-id prompts work. Throws ApiError.
GenParams parse_request(Endpoint ep, const nlohmann::json& body, const Tokenizer* tok, const ApiLimits& limits);

}  // namespace kf::server
