#include "server/job.h"

#include <fmt/format.h>

#include <chrono>
#include <random>

#include "cost/cost.h"
#include "tokenizer/tokenizer.h"

namespace kf::server {

namespace {

using json = nlohmann::json;

// Token text may hold partial UTF-8: replaced, never an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* finish_reason(StopReason r) {
  switch (r) {
    case StopReason::Eos:
    case StopReason::Stop:
    case StopReason::Repetition: return "stop";
    case StopReason::Length:
    case StopReason::KvFull: return "length";
    default: return "abort";
  }
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}", prefix, rng());
}

}  // namespace

Job::Job(GenParams params, const JobContext& ctx, Notifier wake, std::function<void(int64_t)> cancel_engine,
         std::function<void(const JobTotals&)> on_done)
    : p_(std::move(params)),
      ctx_(ctx),
      wake_(std::move(wake)),
      cancel_engine_(std::move(cancel_engine)),
      on_done_(std::move(on_done)) {
  id_ = random_id(p_.endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl");
  created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const bool thinking = p_.split_reasoning && p_.enable_thinking;
  for (size_t i = 0; i < p_.prompts.size() * p_.n; ++i)
    choices_.push_back(Choice{SampleText(ctx_.tok, p_.stop, p_.split_reasoning, thinking), {}, {}, 0, false, false,
                              StopReason::None});
  results_.resize(p_.prompts.size());
}

Job::~Job() = default;

std::vector<Request> Job::requests(const std::function<std::function<void()>()>& make_on_push) {
  if (!p_.seed_given) p_.sampling.seed = std::random_device{}() * 0x100000001ull ^ std::random_device{}();
  std::vector<Request> out;
  for (const std::vector<int>& prompt : p_.prompts) {
    Request r;
    r.prompt = prompt;
    r.n = p_.n;
    r.max_tokens = p_.max_tokens;
    r.sampling = p_.sampling;
    if (ctx_.tok && !p_.ignore_eos)  // end-of-turn tokens (e.g. <|im_end|>) end a sample, as in generate
      for (int32_t id : ctx_.tok->eos_ids()) r.stop_tokens.push_back(id);
    r.stop_tokens.insert(r.stop_tokens.end(), p_.stop_token_ids.begin(), p_.stop_token_ids.end());
    r.ignore_eos = p_.ignore_eos;
    r.stop_strings = p_.stop;
    r.rng_key = 0;  // as `kinfer generate`: the same seed gives the same samples
    r.policy = p_.policy;
    r.logprobs = p_.logprobs;
    r.prompt_logprobs = p_.echo && p_.logprobs >= 0;
    if (p_.thinking_budget >= 0 && ctx_.tok) {
      r.thinking_budget = p_.thinking_budget;
      r.think_end_token = ctx_.tok->token_id("</think>");
    }
    r.stream = std::make_shared<RequestStream>(make_on_push());
    streams_.push_back(r.stream);
    out.push_back(std::move(r));
  }
  return out;
}

void Job::set_engine_ids(std::vector<int64_t> ids) { ids_ = std::move(ids); }

void Job::finish(FinishedRequest f) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t j = 0; j < ids_.size(); ++j)
      if (ids_[j] == f.id) results_[j] = std::move(f);
  }
  if (wake_) wake_();  // the reply may be complete now
}

void Job::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (reported_) return;
  for (int64_t id : ids_) cancel_engine_(id);
  done(499);
}

// Once per job (mu_ held): its totals go to the server's metrics.
void Job::done(int status) {
  if (reported_) return;
  reported_ = true;
  JobTotals t;
  t.status = status;
  for (size_t j = 0; j < results_.size(); ++j) {
    t.prompt_tokens += static_cast<int64_t>(p_.prompts[j].size());
    if (!results_[j]) continue;
    for (const SampleResult& s : results_[j]->samples) t.completion_tokens += static_cast<int64_t>(s.tokens.size());
    t.kv_bytes_read += results_[j]->kv_bytes_read;
  }
  if (status == 200) t.efflops = usage()["efflops"].get<double>();
  if (on_done_) on_done_(t);
}

std::string Job::token_text(int id) const {
  if (p_.tokens_as_ids) return "token_id:" + std::to_string(id);
  if (!ctx_.tok) return std::to_string(id);
  const int32_t t = id;
  return ctx_.tok->decode(std::span<const int32_t>(&t, 1));
}

// Completions: {tokens, token_logprobs, top_logprobs, text_offset}, prompt tokens
// first with echo (the first has none); chat: {content: [{token, logprob, bytes, top_logprobs}]}.
json Job::logprobs_json(const std::vector<TokenLogprob>& lps, const std::vector<TokenLogprob>* prompt,
                        const std::vector<int>* prompt_ids, size_t text_offset) const {
  auto bytes_of = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(c);
    return b;
  };
  if (p_.endpoint == Endpoint::Chat) {
    json content = json::array();
    for (const TokenLogprob& lp : lps) {
      const std::string t = token_text(lp.token);
      json top = json::array();
      for (const auto& [id, v] : lp.top) {
        const std::string tt = token_text(id);
        top.push_back({{"token", tt}, {"logprob", v}, {"bytes", bytes_of(tt)}});
      }
      content.push_back({{"token", t}, {"logprob", lp.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  auto add = [&](int token, const TokenLogprob* lp) {
    const std::string t = token_text(token);
    tokens.push_back(t);
    offsets.push_back(text_offset);
    text_offset += t.size();
    if (!lp) {
      values.push_back(nullptr);
      tops.push_back(nullptr);
      return;
    }
    values.push_back(lp->logprob);
    json top = json::object();
    for (const auto& [id, v] : lp->top) top[token_text(id)] = v;
    tops.push_back(top);
  };
  if (prompt && prompt_ids && !prompt_ids->empty()) {
    add((*prompt_ids)[0], nullptr);
    for (size_t i = 1; i < prompt_ids->size(); ++i) add((*prompt_ids)[i], i - 1 < prompt->size() ? &(*prompt)[i - 1] : nullptr);
  }
  for (const TokenLogprob& lp : lps) add(lp.token, &lp);
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json Job::usage() const {
  int64_t prompt = 0, completion = 0, kv = 0, cached = 0;
  double efflops = 0;
  for (size_t j = 0; j < results_.size(); ++j) {
    prompt += static_cast<int64_t>(p_.prompts[j].size());
    if (!results_[j]) continue;
    const FinishedRequest& f = *results_[j];
    std::vector<int64_t> lens;
    for (const SampleResult& s : f.samples) lens.push_back(static_cast<int64_t>(s.tokens.size()));
    for (int64_t l : lens) completion += l;
    kv += f.kv_bytes_read;
    cached += f.cached_prompt_tokens;
    efflops += cost::price_samples(*ctx_.model, f.policy, ctx_.page_size, ctx_.intensity,
                                   static_cast<int64_t>(p_.prompts[j].size()), lens, ctx_.i8_summaries)
                   .efflops();
  }
  const AttnPolicy& pol = p_.policy ? *p_.policy : ctx_.default_policy;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}},  // OpenAI's field: from the prefix cache
          {"efflops", efflops},
          {"kv_bytes_read", kv},
          {"policy", {{"attn", attn_kind_name(pol.kind)}, {"topk_pages", pol.topk_pages},
                      {"local_pages", pol.local_pages}, {"page_size", ctx_.page_size}}},
          {"efflops_hardware", ctx_.hardware}};
}

void Job::emit_chunk(std::string& out, int index, const TextDelta& d, const std::vector<TokenLogprob>& lps,
                     const char* finish, bool first) {
  json choice = {{"index", index}, {"finish_reason", finish ? json(finish) : json(nullptr)}, {"logprobs", nullptr}};
  if (!lps.empty()) choice["logprobs"] = logprobs_json(lps, nullptr, nullptr, 0);
  json chunk;
  if (p_.endpoint == Endpoint::Chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!d.content.empty() || (first && d.reasoning.empty())) delta["content"] = d.content;
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    choice["delta"] = delta;
    chunk = {{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", ctx_.model_name}};
  } else {
    choice["text"] = d.content + d.reasoning;
    chunk = {{"id", id_}, {"object", "text_completion"}, {"created", created_}, {"model", ctx_.model_name}};
  }
  chunk["choices"] = json::array({choice});
  out += "data: " + dump(chunk) + "\n\n";
}

void Job::drain_events(std::string& out) {
  for (size_t j = 0; j < streams_.size(); ++j) {
    for (StreamEvent& ev : streams_[j]->wait(std::chrono::milliseconds(0))) {
      const int index = static_cast<int>(j) * p_.n + ev.sample;
      Choice& c = choices_[index];
      TextDelta d;
      for (int t : ev.tokens) {
        c.tokens.push_back(t);
        const TextDelta x = c.text.push(t);
        d.reasoning += x.reasoning;
        d.content += x.content;
      }
      c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      if (ev.done) {
        c.ended = true;
        c.stop = ev.stop;
        const TextDelta x = c.text.finish();
        d.reasoning += x.reasoning;
        d.content += x.content;
      }
      if (!p_.stream) continue;
      const std::vector<TokenLogprob> lps(c.logprobs.begin() + static_cast<std::ptrdiff_t>(c.lp_sent), c.logprobs.end());
      c.lp_sent = c.logprobs.size();
      if (d.empty() && lps.empty() && !ev.done && c.role_sent) continue;
      emit_chunk(out, index, d, lps, ev.done ? finish_reason(c.stop) : nullptr, !c.role_sent);
      c.role_sent = true;
    }
  }
}

std::string Job::full_body() const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    const size_t j = i / p_.n;
    const int sample = static_cast<int>(i % p_.n);
    json ch = {{"index", i}, {"finish_reason", finish_reason(c.stop)}, {"logprobs", nullptr}};
    json extra = {{"stop", stop_reason_name(c.stop)}};
    if (results_[j] && results_[j]->samples[sample].thinking_cut >= 0)
      extra["thinking_cut"] = results_[j]->samples[sample].thinking_cut;
    ch["kinfer"] = extra;
    if (p_.endpoint == Endpoint::Chat) {
      json msg = {{"role", "assistant"}, {"content", c.text.content()}};
      if (p_.split_reasoning) msg["reasoning_content"] = c.text.reasoning();
      ch["message"] = msg;
      if (p_.logprobs >= 0) ch["logprobs"] = logprobs_json(c.logprobs, nullptr, nullptr, 0);
    } else {
      const std::string prefix = p_.echo ? p_.prompt_texts[j] : std::string();
      ch["text"] = prefix + c.text.reasoning() + c.text.content();
      if (p_.logprobs >= 0) {
        const bool echo_lp = p_.echo && results_[j];
        ch["logprobs"] = logprobs_json(c.logprobs, echo_lp ? &results_[j]->prompt_logprobs : nullptr,
                                       echo_lp ? &p_.prompts[j] : nullptr, 0);
      }
    }
    choices.push_back(ch);
  }
  const json body = {{"id", id_},
                     {"object", p_.endpoint == Endpoint::Chat ? "chat.completion" : "text_completion"},
                     {"created", created_},
                     {"model", ctx_.model_name},
                     {"choices", choices},
                     {"usage", usage()}};
  return dump(body);
}

bool Job::poll(std::string& out, int& status) {
  std::lock_guard<std::mutex> lock(mu_);
  (void)status;
  if (p_.stream && p_.echo && !echo_sent_) {
    for (size_t i = 0; i < choices_.size(); ++i) {
      emit_chunk(out, static_cast<int>(i), TextDelta{{}, p_.prompt_texts[i / p_.n]}, {}, nullptr, true);
      choices_[i].role_sent = true;
    }
    echo_sent_ = true;
  }
  drain_events(out);
  for (const std::optional<FinishedRequest>& r : results_)
    if (!r) return false;
  drain_events(out);  // a request's events are all pushed before it finishes
  if (p_.stream) {
    if (p_.include_usage) {
      const json chunk = {{"id", id_}, {"object", p_.endpoint == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
                          {"created", created_}, {"model", ctx_.model_name}, {"choices", json::array()},
                          {"usage", usage()}};
      out += "data: " + dump(chunk) + "\n\n";
    }
    out += "data: [DONE]\n\n";
  } else {
    out += full_body();
  }
  done(200);
  return true;
}

}  // namespace kf::server
