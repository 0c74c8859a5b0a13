#include "server/api.h"

#include <fmt/format.h>

#include <climits>
#include <cmath>

#include "backend/backend.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::server {

namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

// A field that is absent or null gives nullptr.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const json& body, const char* key, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return def;
  int64_t x = 0;
  const auto out_of_range = [&](auto got) {
    bad(key, fmt::format("'{}' must be in [{}, {}] (got {})", key, lo, hi, got));
  };
  if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && v->get<double>() == std::floor(v->get<double>())) {  // 4.0 is an integer
    const double d = v->get<double>();
    if (!(d >= -0x1p63 && d < 0x1p63)) out_of_range(d);  // 1e100 (or inf) cannot become an int64_t
    x = static_cast<int64_t>(d);
  } else {
    bad(key, fmt::format("'{}' must be an integer, not {}", key, type_name(*v)));
  }
  if (x < lo || x > hi) out_of_range(x);
  return x;
}

double get_num(const json& body, const char* key, double def, double lo, double hi, bool lo_open = false) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number, not {}", key, type_name(*v)));
  const double x = v->get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
    bad(key, fmt::format("'{}' must be in {}{}, {}] (got {})", key, lo_open ? "(" : "[", lo, hi, x));
  return x;
}

bool get_bool(const json& body, const char* key, bool def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be a boolean, not {}", key, type_name(*v)));
  return v->get<bool>();
}

std::vector<int> token_ids(const json& arr, const char* param, int vocab) {
  std::vector<int> ids;
  for (const json& t : arr) {
    if (!t.is_number_integer()) bad(param, fmt::format("'{}' token ids must be integers", param));
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab) bad(param, fmt::format("token id {} is outside the vocabulary [0, {})", id, vocab));
    ids.push_back(static_cast<int>(id));
  }
  return ids;
}

const Tokenizer& need_tok(const Tokenizer* tok, const char* param) {
  if (!tok) bad(param, "this model has no tokenizer: send the prompt as token ids");
  return *tok;
}

std::vector<int> encode(const Tokenizer* tok, const std::string& text, const char* param) {
  const std::vector<int32_t> ids = need_tok(tok, param).encode(text, false, true);
  return std::vector<int>(ids.begin(), ids.end());
}

void parse_prompt(const json& body, const Tokenizer* tok, int vocab, GenParams& p) {
  const json* v = field(body, "prompt");
  if (!v) bad("prompt", "'prompt' is required");
  if (v->is_string()) {
    p.prompts.push_back(encode(tok, v->get<std::string>(), "prompt"));
    p.prompt_texts.push_back(v->get<std::string>());
  } else if (v->is_array() && !v->empty()) {
    const json& first = v->front();
    if (first.is_number_integer()) {
      p.prompts.push_back(token_ids(*v, "prompt", vocab));
    } else {
      for (const json& e : *v) {
        if (e.is_string()) {
          p.prompts.push_back(encode(tok, e.get<std::string>(), "prompt"));
          p.prompt_texts.push_back(e.get<std::string>());
        } else if (e.is_array()) {
          p.prompts.push_back(token_ids(e, "prompt", vocab));
        } else {
          bad("prompt", "'prompt' must be a string, a list of strings, token ids or a list of token-id lists");
        }
      }
      if (!p.prompt_texts.empty() && p.prompt_texts.size() != p.prompts.size())
        bad("prompt", "'prompt' must not mix strings and token-id lists");
    }
  } else {
    bad("prompt", "'prompt' must be a string, a list of strings, token ids or a list of token-id lists");
  }
  for (const std::vector<int>& ids : p.prompts)
    if (ids.empty()) bad("prompt", "a prompt is empty (no tokens)");
  // Text for echo when the prompt came as ids.
  if (p.prompt_texts.empty() && tok)
    for (const std::vector<int>& ids : p.prompts)
      p.prompt_texts.push_back(tok->decode(std::vector<int32_t>(ids.begin(), ids.end())));
}

void parse_messages(const json& body, const Tokenizer* tok, GenParams& p) {
  const json* v = field(body, "messages");
  if (!v) bad("messages", "'messages' is required");
  if (!v->is_array() || v->empty()) bad("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> msgs;
  for (const json& m : *v) {
    if (!m.is_object()) bad("messages", "each message must be an object with 'role' and 'content'");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) bad("messages", "each message needs a string 'role'");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      bad("messages", fmt::format("unknown role '{}' (system, developer, user, assistant, tool)", r));
    std::string text;
    const json* content = field(m, "content");
    if (content && content->is_string()) {
      text = content->get<std::string>();
    } else if (content && content->is_array()) {
      for (const json& part : *content) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        const json* t = part.is_object() ? field(part, "text") : nullptr;
        if (!type || *type != "text" || !t || !t->is_string())
          bad("messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        text += t->get<std::string>();
      }
    } else if (content || r != "assistant") {
      bad("messages", "a message's 'content' must be a string or a list of text parts");
    }
    msgs.push_back(ChatMessage{r, std::move(text)});
  }
  ChatOptions opts;
  opts.enable_thinking = p.enable_thinking;
  std::vector<int32_t> ids;
  try {
    ids = need_tok(tok, "messages").encode_chat(msgs, opts);
  } catch (const Error& e) {  // e.g. a model without a chat template
    bad("messages", e.what());
  }
  if (ids.empty()) bad("messages", "the messages encode to no tokens");
  p.prompts.push_back(std::vector<int>(ids.begin(), ids.end()));
}

void parse_stop(const json& body, int vocab, GenParams& p) {
  if (const json* v = field(body, "stop")) {
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& s : *v) {
        if (s.is_string()) p.stop.push_back(s.get<std::string>());
        else if (s.is_number_integer()) p.stop_token_ids.push_back(token_ids(json::array({s}), "stop", vocab)[0]);
        else bad("stop", "'stop' entries must be strings or token ids");
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings and token ids");
    }
    for (const std::string& s : p.stop)
      if (s.empty()) bad("stop", "stop strings must not be empty");
  }
  if (const json* v = field(body, "stop_token_ids")) {
    if (!v->is_array()) bad("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    const std::vector<int> ids = token_ids(*v, "stop_token_ids", vocab);
    p.stop_token_ids.insert(p.stop_token_ids.end(), ids.begin(), ids.end());
  }
}

void parse_kinfer(const json& body, const ApiLimits& lim, GenParams& p) {
  if (const json* k = field(body, "kinfer")) {
    if (!k->is_object()) bad("kinfer", "'kinfer' must be an object {\"attn\", \"topk_pages\", \"local_pages\"}");
    AttnPolicy pol;
    if (const json* a = field(*k, "attn")) {
      if (!a->is_string()) bad("kinfer.attn", "'kinfer.attn' must be a string (dense, local, blocktopk, topk)");
      try {
        pol.kind = parse_attn_kind(a->get<std::string>());
      } catch (const Error& e) {
        bad("kinfer.attn", e.what());
      }
    }
    pol.topk_pages = static_cast<int>(get_int(*k, "topk_pages", pol.topk_pages, 1, 1 << 20));
    pol.local_pages = static_cast<int>(get_int(*k, "local_pages", pol.local_pages, 0, 1 << 20));
    try {
      attn::check_policy(pol);
    } catch (const Error& e) {
      bad("kinfer", e.what());
    }
    p.policy = pol;
  }
  p.thinking_budget = static_cast<int>(get_int(body, "thinking_budget", -1, 0, INT_MAX));
  if (p.thinking_budget >= 0 && lim.think_end_token < 0)
    bad("thinking_budget", "this model has no </think> token: a thinking budget needs a thinking model (Qwen3)");
}

}  // namespace

GenParams parse_request(Endpoint ep, const json& body, const Tokenizer* tok, const ApiLimits& lim) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  GenParams p;
  p.endpoint = ep;
  p.n = static_cast<int>(get_int(body, "n", 1, 1, lim.max_seqs));
  SamplingParams& s = p.sampling;
  s.temperature = static_cast<float>(get_num(body, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(get_num(body, "top_p", 1.0, 0.0, 1.0, true));
  s.top_k = static_cast<int>(get_int(body, "top_k", 0, -1, INT_MAX));
  if (s.top_k < 0) s.top_k = 0;  // vLLM's -1 = off
  s.min_p = static_cast<float>(get_num(body, "min_p", 0.0, 0.0, 1.0));
  s.presence_penalty = static_cast<float>(get_num(body, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(get_num(body, "frequency_penalty", 0.0, -2.0, 2.0));
  s.repetition_penalty = static_cast<float>(get_num(body, "repetition_penalty", 1.0, 0.0, 10.0, true));
  if (field(body, "seed")) {
    s.seed = static_cast<uint64_t>(get_int(body, "seed", 0, INT64_MIN, INT64_MAX));
    p.seed_given = true;
  }
  p.ignore_eos = get_bool(body, "ignore_eos", false);
  // vLLM's extension: logprobs name tokens "token_id:N", so a client can send the ids back (a next turn).
  p.tokens_as_ids = get_bool(body, "return_tokens_as_token_ids", false);
  p.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    p.include_usage = get_bool(*so, "include_usage", false);
  }
  parse_stop(body, lim.vocab, p);
  parse_kinfer(body, lim, p);

  int64_t max_tokens = -1;
  if (ep == Endpoint::Completions) {
    parse_prompt(body, tok, lim.vocab, p);
    max_tokens = get_int(body, "max_tokens", 16, 0, INT_MAX);
    p.echo = get_bool(body, "echo", false);
    p.logprobs = static_cast<int>(get_int(body, "logprobs", -1, 0, Backend::kMaxTopLogprobs));
    if (p.echo && p.prompts.size() != p.prompt_texts.size())
      bad("echo", "echo needs the prompt's text: this model has no tokenizer");
  } else {
    if (const json* kw = field(body, "chat_template_kwargs")) {
      if (!kw->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      p.enable_thinking = get_bool(*kw, "enable_thinking", true);
    }
    parse_messages(body, tok, p);
    max_tokens = get_int(body, "max_completion_tokens", get_int(body, "max_tokens", -1, 1, INT_MAX), 1, INT_MAX);
    const bool lp = get_bool(body, "logprobs", false);
    const int top = static_cast<int>(get_int(body, "top_logprobs", 0, 0, Backend::kMaxTopLogprobs));
    if (field(body, "top_logprobs") && !lp) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    p.logprobs = lp ? top : -1;
    p.split_reasoning = lim.think_end_token >= 0;
  }
  if (p.thinking_budget >= 0 && !p.enable_thinking) p.thinking_budget = -1;  // nothing to cut

  // Context: every prompt with its generated tokens within the model's limit and the KV pool.
  int64_t longest = 0;
  for (const std::vector<int>& ids : p.prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(ids.size()));
  if (longest >= lim.max_model_len)
    bad(ep == Endpoint::Chat ? "messages" : "prompt",
        fmt::format("this model's maximum context length is {} tokens, and the prompt has {} tokens",
                    lim.max_model_len, longest));
  if (max_tokens < 0) max_tokens = lim.max_model_len - longest;  // chat default: up to the limit
  if (longest + max_tokens > lim.max_model_len)
    bad("max_tokens", fmt::format("this model's maximum context length is {} tokens; you requested {} tokens ({} in "
                                  "the prompt, {} for the completion)",
                                  lim.max_model_len, longest + max_tokens, longest, max_tokens));
  if (longest + max_tokens > lim.kv_tokens)
    bad("max_tokens", fmt::format("{} prompt + {} completion tokens do not fit the KV cache of {} tokens (--kv-pages)",
                                  longest, max_tokens, lim.kv_tokens));
  p.max_tokens = static_cast<int>(max_tokens);
  if (p.max_tokens == 0 && p.stream) bad("max_tokens", "max_tokens 0 cannot stream (there is nothing to stream)");
  return p;
}

}  // namespace kf::server
