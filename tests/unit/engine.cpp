// Engine on a tiny random model through the real Model + CpuBackend:
// preemption under a small KV pool never changes any output, oversized
// prompts fail alone, and a sample's tokens do not depend on n or the batch.
#include <gtest/gtest.h>

#include <random>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "step_driver.h"
#include "util/error.h"
#include "util/philox.h"

using namespace kf;

namespace {

struct Fixture {
  std::unique_ptr<Backend> be = make_cpu_backend(CpuOptions{2, false});
  Model model = Model::random(test::tiny_llama_config(), *be, 7);  // no EOS: samples stop by length
};
Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<int> prompt(int len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> p(len);
  for (int& t : p) t = rng() % 97;
  return p;
}

Request request(int len, uint32_t seed, int n, int max_tokens) {
  Request r;
  r.prompt = prompt(len, seed);
  r.n = n;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 1.f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 1234;
  r.rng_key = seed;  // keyed by content, not by submission order
  return r;
}

using Outputs = std::vector<std::vector<SampleResult>>;

Outputs run_all(EngineConfig cfg, const std::vector<Request>& reqs, EngineStats* stats = nullptr) {
  Engine e(fx().model, *fx().be, cfg);
  std::vector<int64_t> ids;
  for (const Request& r : reqs) ids.push_back(e.submit(r));
  e.run();
  Outputs out;
  for (int64_t id : ids) out.push_back(e.result(id));
  if (stats) *stats = e.stats();
  EXPECT_EQ(e.kv_pages_used(), 0) << "pages leaked";
  return out;
}

EngineConfig config(AttnKind kind, int kv_pages, int step_tokens = 64) {
  EngineConfig c;
  c.page_size = 4;
  c.kv_pages = kv_pages;
  c.policy.kind = kind;
  c.policy.local_pages = 1;
  c.policy.topk_pages = 2;
  c.max_step_tokens = step_tokens;
  c.repetition.enabled = false;
  return c;
}

void expect_same(const Outputs& a, const Outputs& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size());
    for (size_t j = 0; j < a[i].size(); ++j) {
      EXPECT_EQ(a[i][j].tokens, b[i][j].tokens) << "request " << i << " sample " << j;
      EXPECT_EQ(a[i][j].stop, b[i][j].stop) << "request " << i << " sample " << j;
    }
  }
}

}  // namespace

TEST(Engine, SmallPoolPreemptsButChangesNoOutput) {
  std::vector<Request> reqs = {request(13, 1, 3, 30), request(6, 2, 1, 40), request(22, 3, 2, 25),
                               request(9, 4, 1, 35)};
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::TopK}) {
    EngineStats big_stats, small_stats;
    Outputs big = run_all(config(kind, 400), reqs, &big_stats);
    Outputs small = run_all(config(kind, 22, 16), reqs, &small_stats);
    EXPECT_EQ(big_stats.preemptions, 0);
    EXPECT_GT(small_stats.preemptions, 0) << attn_kind_name(kind);
    EXPECT_LE(small_stats.kv_pages_peak, 22);
    for (const auto& r : small)
      for (const auto& s : r) EXPECT_EQ(s.stop, StopReason::Length);
    expect_same(big, small);
    if (kind == AttnKind::BlockTopK) {  // the policy really selects: fewer pages than dense
      EXPECT_GT(small_stats.decode_head_rows, 0);
      EXPECT_LT(small_stats.pages_read_per_step(), 6.0);
    }
  }
}

TEST(Engine, OversizedPromptFailsAloneOthersFinish) {
  std::vector<Request> ok = {request(10, 5, 2, 20), request(7, 6, 1, 20)};
  Outputs want = run_all(config(AttnKind::Dense, 400), ok);
  std::vector<Request> mixed = {ok[0], request(200, 7, 1, 5), ok[1]};
  Outputs got = run_all(config(AttnKind::Dense, 24, 16), mixed);
  ASSERT_EQ(got[1].size(), 1u);
  EXPECT_EQ(got[1][0].stop, StopReason::Error);
  EXPECT_NE(got[1][0].error.find("KV pages"), std::string::npos) << got[1][0].error;
  expect_same(want, Outputs{got[0], got[2]});
}

TEST(Engine, SampleTokensDoNotDependOnNOrTheBatch) {
  Outputs one = run_all(config(AttnKind::BlockTopK, 400), {request(11, 9, 1, 40)});
  Outputs four = run_all(config(AttnKind::BlockTopK, 400), {request(11, 9, 4, 40)});
  Outputs with_others = run_all(config(AttnKind::BlockTopK, 400),
                                {request(30, 10, 2, 20), request(11, 9, 2, 40), request(5, 11, 3, 10)});
  EXPECT_EQ(one[0][0].tokens, four[0][0].tokens);
  EXPECT_EQ(four[0][0].tokens, with_others[1][0].tokens);
  EXPECT_EQ(four[0][1].tokens, with_others[1][1].tokens);
  EXPECT_NE(four[0][0].tokens, four[0][1].tokens);  // distinct samples
}

// int8 page summaries (--summary-dtype int8) through the engine: forks copy
// their codes and scales (copy-on-write), preemption recomputes them, so a
// sample's tokens still do not depend on n, the batch or the pool size; the
// bytes counted for the summaries scored shrink.
TEST(Engine, Int8SummariesAreExactUnderForksAndPreemption) {
  EngineConfig big = config(AttnKind::BlockTopK, 400), small = config(AttnKind::BlockTopK, 24, 16);
  big.i8_summaries = small.i8_summaries = true;
  EngineStats s_big, s_small, s_f32;
  const Outputs one = run_all(big, {request(11, 9, 1, 40)});
  const Outputs four = run_all(big, {request(11, 9, 4, 40), request(25, 13, 2, 30)}, &s_big);
  const Outputs tight = run_all(small, {request(11, 9, 4, 40), request(25, 13, 2, 30)}, &s_small);
  EXPECT_GT(s_small.preemptions, 0);
  EXPECT_EQ(one[0][0].tokens, four[0][0].tokens);
  expect_same(four, tight);
  const Outputs f32 =
      run_all(config(AttnKind::BlockTopK, 400), {request(11, 9, 4, 40), request(25, 13, 2, 30)}, &s_f32);
  EXPECT_LT(s_big.kv_bytes_read, s_f32.kv_bytes_read);
  EXPECT_EQ(s_big.decode_page_reads, s_f32.decode_page_reads);
}

TEST(Engine, GreedyBlockTopKWithEnoughPagesEqualsDense) {
  Request r = request(15, 12, 1, 40);
  r.sampling.temperature = 0;
  EngineConfig d = config(AttnKind::Dense, 400), b = config(AttnKind::BlockTopK, 400);
  b.policy.topk_pages = 100;
  expect_same(run_all(d, {r}), run_all(b, {r}));
}

TEST(Engine, StopsAndErrors) {
  EngineConfig c = config(AttnKind::Dense, 100);
  Request r = request(5, 13, 1, 10);
  r.stop_tokens = {};
  Outputs base = run_all(c, {r});
  ASSERT_EQ(base[0][0].tokens.size(), 10u);
  // A stop token ends the sample before it is emitted.
  r.stop_tokens = {base[0][0].tokens[3]};
  int first = 0;
  while (base[0][0].tokens[first] != r.stop_tokens[0]) ++first;
  Outputs stopped = run_all(c, {r});
  EXPECT_EQ(stopped[0][0].stop, StopReason::Eos);
  EXPECT_EQ(stopped[0][0].tokens, std::vector<int>(base[0][0].tokens.begin(), base[0][0].tokens.begin() + first));
  // The stream sees every token once, then the stop.
  Engine e(fx().model, *fx().be, c);
  std::vector<int> streamed;
  StopReason done = StopReason::None;
  Request s = request(5, 13, 1, 10);
  s.stream = std::make_shared<RequestStream>();
  int64_t id = e.submit(s);
  e.run();
  for (const StreamEvent& ev : s.stream->wait(std::chrono::milliseconds(0))) {
    streamed.insert(streamed.end(), ev.tokens.begin(), ev.tokens.end());
    if (ev.done) done = ev.stop;
  }
  EXPECT_TRUE(s.stream->finished());
  EXPECT_EQ(streamed, e.result(id)[0].tokens);
  EXPECT_EQ(done, StopReason::Length);
  Request bad = request(5, 1, 1, 10);
  bad.prompt[0] = 1000;
  EXPECT_THROW(e.submit(bad), Error);
  bad = request(5, 1, 0, 10);
  EXPECT_THROW(e.submit(bad), Error);
}

TEST(Engine, StopStringsAndRepetitionStop) {
  EngineConfig c = config(AttnKind::Dense, 100);
  c.token_bytes = [](int id) { return std::string(1, static_cast<char>('a' + id % 26)) + "|"; };
  Request r = request(5, 14, 1, 12);
  Outputs base = run_all(c, {r});
  const auto& t = base[0][0].tokens;
  ASSERT_EQ(t.size(), 12u);
  // A stop string spanning tokens 4 and 5 ends the sample right after token 5
  // (or earlier, if the same bytes occur sooner).
  r.stop_strings = {c.token_bytes(t[4]) + c.token_bytes(t[5])};
  Outputs stopped = run_all(c, {r});
  EXPECT_EQ(stopped[0][0].stop, StopReason::Stop);
  ASSERT_LE(stopped[0][0].tokens.size(), 6u);
  EXPECT_EQ(stopped[0][0].tokens, std::vector<int>(t.begin(), t.begin() + stopped[0][0].tokens.size()));
  // Block of 1 token seen twice in the window: with 97 tokens in the
  // vocabulary a repeat must come within 98 tokens.
  EngineConfig rc = config(AttnKind::Dense, 100);
  rc.repetition = RepetitionParams{true, 1, 2, 1000};
  Request long_r = request(5, 15, 1, 120);
  Outputs rep = run_all(rc, {long_r});
  EXPECT_EQ(rep[0][0].stop, StopReason::Repetition);
  EXPECT_LE(rep[0][0].tokens.size(), 98u);
  EXPECT_TRUE(is_repetition_loop(rep[0][0].tokens, rc.repetition));
}

// Graph mode pads decode batches to bucket sizes (dummy rows on the spare
// page) and page tables to power-of-two columns. The CPU is batch-invariant,
// so that padding must change no token, under every policy, while samples
// finish at different times (the batch shrinks through several buckets) and
// a small pool forces preemption.
TEST(Engine, PaddedGraphStepsChangeNoOutput) {
  std::vector<Request> reqs = {request(13, 1, 3, 30), request(6, 2, 1, 40), request(22, 3, 2, 25),
                               request(9, 4, 5, 35), request(3, 5, 2, 12)};
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::TopK, AttnKind::Local}) {
    for (int pages : {400, 30}) {
      EngineConfig plain = config(kind, pages), padded = config(kind, pages);
      plain.graphs = EngineConfig::Mode::Off;
      padded.graphs = EngineConfig::Mode::Always;
      EngineStats sp, sq;
      Outputs a = run_all(plain, reqs, &sp), b = run_all(padded, reqs, &sq);
      SCOPED_TRACE(std::string(attn_kind_name(kind)) + " pages " + std::to_string(pages));
      expect_same(a, b);
      // The padding rows are not counted as work.
      EXPECT_EQ(sp.decode_tokens, sq.decode_tokens);
      EXPECT_EQ(sp.decode_page_reads, sq.decode_page_reads);
      EXPECT_EQ(sp.kv_bytes_read, sq.kv_bytes_read);
    }
  }
}

// The engine samples through Backend::sample and Backend::apply_penalties
// (on a GPU: on the device, only tokens come back), Best-of-N siblings
// sampling their first token from their parent's logits row. On the CPU
// backend that must give exactly the host sampler's tokens: each sample is
// regenerated here alone, token by token, with kf::Sampler over the full
// logits (penalties over its own context) and the same Philox draws.
std::vector<int> host_reference(const Request& r, int sample, int max_tokens) {
  test::StepDriver d(fx().model, *fx().be, 1, static_cast<int>(r.prompt.size()) + max_tokens + 1, 4);
  std::vector<int32_t> prompt(r.prompt.begin(), r.prompt.end());
  std::vector<float> logits = d.prefill(0, prompt, false);
  Sampler sampler;
  std::vector<int> generated, context(r.prompt.begin(), r.prompt.end());
  for (int t = 0; t < max_tokens; ++t) {
    float u = static_cast<float>(philox_uniform(r.sampling.seed, static_cast<uint64_t>(r.rng_key), sample, t));
    if (u >= 1.f) u = std::nextafter(1.f, 0.f);
    const int tok = sampler.sample(logits, r.sampling, context, generated, u);
    generated.push_back(tok);
    context.push_back(tok);
    if (t + 1 < max_tokens) logits = d.decode({tok});
  }
  return generated;
}

TEST(Engine, DeviceSamplingForksAndPenaltiesEqualHostSampler) {
  std::vector<Request> reqs = {request(13, 1, 3, 20), request(6, 2, 2, 24), request(22, 3, 2, 16),
                               request(9, 4, 4, 18)};
  reqs[0].sampling.repetition_penalty = 1.3f;
  reqs[1].sampling.presence_penalty = 0.8f;
  reqs[1].sampling.frequency_penalty = 0.3f;
  reqs[2].sampling.top_k = 5;
  reqs[3].sampling.temperature = 0.f;
  reqs[3].sampling.min_p = 0.1f;
  reqs[3].sampling.repetition_penalty = 0.9f;
  for (auto graphs : {EngineConfig::Mode::Off, EngineConfig::Mode::Always}) {
    EngineConfig c = config(AttnKind::Dense, 400);
    c.graphs = graphs;
    const Outputs got = run_all(c, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      for (int j = 0; j < reqs[i].n; ++j) {
        EXPECT_EQ(got[i][j].tokens, host_reference(reqs[i], j, reqs[i].max_tokens))
            << "request " << i << " sample " << j << (graphs == EngineConfig::Mode::Always ? " (graphs)" : "");
      }
    }
  }
}

// With one step in flight, rows take their input token from the previous
// step's samples on the device and forks happen before their parent's token
// is known on the host: the same tokens as waiting for every step, under
// preemption and with graphs.
TEST(Engine, OverlapGivesTheSameTokens) {
  std::vector<Request> reqs = {request(13, 1, 3, 30), request(6, 2, 1, 40), request(22, 3, 2, 25),
                               request(9, 4, 5, 35), request(3, 5, 2, 12)};
  reqs[1].sampling.presence_penalty = 0.5f;
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK}) {
    for (int pages : {400, 30}) {
      EngineConfig off = config(kind, pages), on = config(kind, pages);
      off.overlap = EngineConfig::Mode::Off;
      on.overlap = EngineConfig::Mode::Always;
      on.graphs = EngineConfig::Mode::Always;
      EngineStats so, sn;
      SCOPED_TRACE(std::string(attn_kind_name(kind)) + " pages " + std::to_string(pages));
      expect_same(run_all(off, reqs, &so), run_all(on, reqs, &sn));
      if (pages == 30) {
        EXPECT_GT(sn.preemptions, 0);
      }
    }
  }
}

// Admission fills the pool up to --max-seqs running sequences (a Best-of-N
// request counts all its samples), and prompts of several requests are
// prefilled in one step.
TEST(Engine, AdmissionToMaxSeqsAndBatchedPrefill) {
  std::vector<Request> reqs;
  for (int i = 0; i < 8; ++i) reqs.push_back(request(5 + i, 20 + i, 3, 12));
  EngineConfig wide = config(AttnKind::Dense, 400, 256);
  EngineConfig narrow = wide;
  narrow.max_seqs = 7;
  EngineStats sw, sn;
  expect_same(run_all(wide, reqs, &sw), run_all(narrow, reqs, &sn));
  EXPECT_EQ(sw.running_peak, 24);  // everything at once
  EXPECT_LE(sn.running_peak, 7);
  // The first step prefills all eight prompts (and forks their samples).
  Engine e(fx().model, *fx().be, wide);
  for (const Request& r : reqs) e.submit(r);
  e.step();
  EXPECT_EQ(e.n_running(), 24);
  EXPECT_EQ(e.stats().steps, 1);
  EXPECT_EQ(e.stats().prefill_tokens, 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12);
  e.run();
}

TEST(Engine, CancelFreesPagesAndEndsTheRequest) {
  Engine e(fx().model, *fx().be, config(AttnKind::Dense, 400));
  const int64_t keep = e.submit(request(8, 30, 2, 30));
  const int64_t drop = e.submit(request(8, 31, 4, 30));
  const int64_t never = e.submit(request(8, 32, 1, 30));
  e.cancel(never);  // before it ran
  for (int i = 0; i < 5; ++i) e.step();
  EXPECT_GT(e.kv_pages_used(), 0);
  e.cancel(drop);
  e.cancel(12345);  // unknown: ignored
  e.run();
  EXPECT_EQ(e.kv_pages_used(), 0);
  for (const SampleResult& s : e.result(drop)) {
    EXPECT_EQ(s.stop, StopReason::Cancelled);
    EXPECT_LT(s.tokens.size(), 30u);
  }
  EXPECT_EQ(e.result(never)[0].stop, StopReason::Cancelled);
  for (const SampleResult& s : e.result(keep)) EXPECT_EQ(s.stop, StopReason::Length);
}

TEST(Engine, PromptOverTheContextLimitFailsAlone) {
  EngineConfig c = config(AttnKind::Dense, 400);
  c.max_model_len = 20;
  Engine e(fx().model, *fx().be, c);
  const int64_t ok = e.submit(request(8, 40, 2, 30));
  const int64_t too_long = e.submit(request(25, 41, 2, 5));
  e.run();
  for (const SampleResult& s : e.result(too_long)) {
    EXPECT_EQ(s.stop, StopReason::Error);
    EXPECT_NE(s.error.find("prompt of 25 tokens"), std::string::npos) << s.error;
    EXPECT_NE(s.error.find("20"), std::string::npos) << s.error;
  }
  // The other request stops at the limit: 8 prompt + 12 generated = 20 tokens.
  for (const SampleResult& s : e.result(ok)) {
    EXPECT_EQ(s.stop, StopReason::Length);
    EXPECT_EQ(s.tokens.size(), 12u);
  }
}

// A long stream of requests, taken as they finish: the engine's bookkeeping
// does not grow with the number of requests served.
TEST(Engine, MemoryStaysFlatOverManyRequests) {
  EngineConfig c = config(AttnKind::Dense, 400, 128);
  c.max_seqs = 64;
  Engine e(fx().model, *fx().be, c);
  int64_t finished = 0;
  for (int round = 0; round < 400; ++round) {
    for (int i = 0; i < 250; ++i) {
      Request r = request(2, static_cast<uint32_t>(round * 250 + i), 1, 1);
      e.submit(std::move(r));
    }
    e.run();
    finished += static_cast<int64_t>(e.take_finished().size());
    ASSERT_EQ(e.tracked_requests(), 0u);
    ASSERT_EQ(e.tracked_sequences(), 0u);
    ASSERT_EQ(e.kv_pages_used(), 0);
  }
  EXPECT_EQ(finished, 100000);
}

// ---- logprobs, echo, thinking budget, per-request policy and KV reads ----------

namespace {

// log-softmax of a logits row in double.
std::vector<double> log_softmax(const float* l, int vocab) {
  double mx = -INFINITY, sum = 0;
  for (int v = 0; v < vocab; ++v) mx = std::max(mx, double(l[v]));
  for (int v = 0; v < vocab; ++v) sum += std::exp(l[v] - mx);
  std::vector<double> out(vocab);
  for (int v = 0; v < vocab; ++v) out[v] = l[v] - mx - std::log(sum);
  return out;
}

FinishedRequest run_one(EngineConfig cfg, const Request& r) {
  Engine e(fx().model, *fx().be, cfg);
  e.submit(r);
  e.run();
  std::vector<FinishedRequest> done = e.take_finished();
  EXPECT_EQ(done.size(), 1u);
  EXPECT_EQ(e.kv_pages_used(), 0);
  return done.empty() ? FinishedRequest{} : std::move(done[0]);
}

}  // namespace

// Every generated token's logprob and top k are the log-softmax of the logits
// the sampler saw (recomputed here with the step driver), for each sample of a
// Best-of-N request, with overlap and graphs on or off.
TEST(Engine, LogprobsOfSampledTokensMatchTheLogits) {
  Request r = request(9, 50, 3, 12);
  r.logprobs = 4;
  for (auto mode : {EngineConfig::Mode::Off, EngineConfig::Mode::Always}) {
    EngineConfig c = config(AttnKind::Dense, 400);
    c.overlap = mode;
    c.graphs = mode;
    const FinishedRequest f = run_one(c, r);
    ASSERT_EQ(f.samples.size(), 3u);
    for (const SampleResult& s : f.samples) {
      ASSERT_EQ(s.logprobs.size(), s.tokens.size());
      test::StepDriver d(fx().model, *fx().be, 1, 64, 4);
      std::vector<float> logits = d.prefill(0, std::vector<int32_t>(r.prompt.begin(), r.prompt.end()), false);
      for (size_t t = 0; t < s.tokens.size(); ++t) {
        const std::vector<double> ls = log_softmax(logits.data(), 97);
        const TokenLogprob& lp = s.logprobs[t];
        EXPECT_EQ(lp.token, s.tokens[t]);
        EXPECT_NEAR(lp.logprob, ls[s.tokens[t]], 1e-4);
        ASSERT_EQ(lp.top.size(), 4u);
        for (size_t j = 0; j < 4; ++j) {
          EXPECT_NEAR(lp.top[j].second, ls[lp.top[j].first], 1e-4);
          if (j > 0) {
            EXPECT_GE(lp.top[j - 1].second, lp.top[j].second);
          }
        }
        EXPECT_NEAR(lp.top[0].second, *std::max_element(ls.begin(), ls.end()), 1e-4);
        if (t + 1 < s.tokens.size()) logits = d.decode({s.tokens[t]});
      }
    }
  }
}

// echo: every prompt token after the first gets its logprob from the previous
// row's logits, once, across prefill chunks smaller than the prompt (a small
// echo budget) and across preemption; max_tokens 0 generates nothing.
TEST(Engine, PromptLogprobsForScoring) {
  Request r = request(37, 51, 1, 0);
  r.prompt_logprobs = true;
  r.logprobs = 2;
  test::StepDriver d(fx().model, *fx().be, 1, 64, 4);
  const std::vector<float> all = d.prefill(0, std::vector<int32_t>(r.prompt.begin(), r.prompt.end()), true);
  for (int echo_rows : {128, 5}) {
    EngineConfig c = config(AttnKind::Dense, 400);
    c.max_echo_rows = echo_rows;
    const FinishedRequest f = run_one(c, r);
    ASSERT_EQ(f.samples.size(), 1u);
    EXPECT_TRUE(f.samples[0].tokens.empty());
    EXPECT_EQ(f.samples[0].stop, StopReason::Length);
    ASSERT_EQ(f.prompt_logprobs.size(), r.prompt.size() - 1);
    for (size_t p = 0; p + 1 < r.prompt.size(); ++p) {
      const std::vector<double> ls = log_softmax(all.data() + p * 97, 97);
      EXPECT_EQ(f.prompt_logprobs[p].token, r.prompt[p + 1]);
      EXPECT_NEAR(f.prompt_logprobs[p].logprob, ls[r.prompt[p + 1]], 1e-4) << "position " << p + 1;
      EXPECT_EQ(f.prompt_logprobs[p].top.size(), 2u);
    }
  }
  // With generation, preemption and other requests: the same prompt logprobs and tokens.
  Request g = request(37, 51, 2, 20);
  g.prompt_logprobs = true;
  Engine big(fx().model, *fx().be, config(AttnKind::Dense, 400));
  Engine small(fx().model, *fx().be, config(AttnKind::Dense, 24, 16));
  std::vector<FinishedRequest> res[2];
  int i = 0;
  for (Engine* e : {&big, &small}) {
    e->submit(request(20, 52, 2, 25));
    e->submit(g);
    e->run();
    res[i++] = e->take_finished();
  }
  EXPECT_GT(small.stats().preemptions, 0);
  ASSERT_EQ(res[0].size(), 2u);
  ASSERT_EQ(res[1].size(), 2u);
  auto of = [](std::vector<FinishedRequest>& v, int64_t id) -> FinishedRequest& {
    return v[0].id == id ? v[0] : v[1];
  };
  const FinishedRequest &a = of(res[0], 1), &b = of(res[1], 1);
  ASSERT_EQ(b.prompt_logprobs.size(), r.prompt.size() - 1);
  for (size_t p = 0; p < b.prompt_logprobs.size(); ++p) {
    EXPECT_EQ(a.prompt_logprobs[p].logprob, b.prompt_logprobs[p].logprob);
    EXPECT_TRUE(b.prompt_logprobs[p].top.empty());
  }
  for (int j = 0; j < 2; ++j) EXPECT_EQ(a.samples[j].tokens, b.samples[j].tokens);
}

// Budget forcing: after `budget` tokens without </think> the next token is
// </think>; the samples agree with an unforced run up to the cut; a sample
// that closed thinking itself is left alone. With overlap the decision cannot
// see the token in flight: a </think> generated as token budget - 1 gets a
// second one (documented in Request).
TEST(Engine, ThinkingBudgetForcesTheEndOfThinking) {
  const int budget = 5;
  for (uint32_t seed = 60; seed < 90; ++seed) {
    Request r = request(8, seed, 2, 12);
    const FinishedRequest base = run_one(config(AttnKind::Dense, 400), r);
    const std::vector<int>& t0 = base.samples[0].tokens;
    ASSERT_EQ(t0.size(), 12u);
    // A token absent from both samples' first budget + 1 tokens: forced at index budget.
    int absent = -1;
    for (int v = 0; v < 97 && absent < 0; ++v) {
      bool seen = false;
      for (const SampleResult& s : base.samples)
        for (int i = 0; i <= budget; ++i) seen |= s.tokens[i] == v;
      if (!seen) absent = v;
    }
    // The model's own token budget - 1, not seen before it in sample 0.
    const int own = t0[budget - 1];
    if (absent < 0 || std::find(t0.begin(), t0.begin() + budget - 1, own) != t0.begin() + budget - 1) continue;
    for (auto overlap : {EngineConfig::Mode::Off, EngineConfig::Mode::Always}) {
      SCOPED_TRACE(overlap == EngineConfig::Mode::Off ? "overlap off" : "overlap on");
      EngineConfig c = config(AttnKind::Dense, 400);
      c.overlap = overlap;
      Request forced = r;
      forced.thinking_budget = budget;
      forced.think_end_token = absent;
      const FinishedRequest f = run_one(c, forced);
      for (int j = 0; j < 2; ++j) {
        const SampleResult& s = f.samples[j];
        EXPECT_EQ(std::vector<int>(s.tokens.begin(), s.tokens.begin() + budget),
                  std::vector<int>(base.samples[j].tokens.begin(), base.samples[j].tokens.begin() + budget));
        EXPECT_EQ(s.tokens[budget], absent);
        EXPECT_EQ(s.thinking_cut, budget);
      }
      Request closed = r;  // sample 0 ends thinking itself at token budget - 1
      closed.thinking_budget = budget;
      closed.think_end_token = own;
      const SampleResult s = run_one(c, closed).samples[0];
      if (overlap == EngineConfig::Mode::Off) {
        EXPECT_EQ(s.tokens, t0);
        EXPECT_EQ(s.thinking_cut, -1);
      } else {
        EXPECT_EQ(std::vector<int>(s.tokens.begin(), s.tokens.begin() + budget),
                  std::vector<int>(t0.begin(), t0.begin() + budget));
        EXPECT_EQ(s.tokens[budget], own);  // the duplicate
        EXPECT_EQ(s.thinking_cut, budget);
      }
    }
    return;
  }
  FAIL() << "no seed gave a usable sample";
}

// A dense run serving a block top-k request: the sparse request replays its
// generated tokens row by row under preemption (a prefill chunk would read
// every page), so its tokens do not change with the pool size; per-request
// KV reads add up to the engine's and the sparse request reads less.
TEST(Engine, PerRequestPolicyIsExactUnderPreemptionAndCountsItsReads) {
  std::vector<Request> reqs = {request(13, 70, 2, 30), request(22, 71, 2, 28), request(9, 72, 1, 35)};
  AttnPolicy sparse;
  sparse.kind = AttnKind::BlockTopK;
  sparse.topk_pages = 1;
  sparse.local_pages = 1;
  reqs[1].policy = sparse;
  reqs[2].policy = sparse;
  EngineStats sb, ss;
  const Outputs big = run_all(config(AttnKind::Dense, 400), reqs, &sb);
  const Outputs small = run_all(config(AttnKind::Dense, 20, 16), reqs, &ss);
  EXPECT_GT(ss.preemptions, 0);
  expect_same(big, small);
  // The sparse policy changed the tokens (it is really applied).
  std::vector<Request> dense_only = reqs;
  dense_only[1].policy.reset();
  EXPECT_NE(run_all(config(AttnKind::Dense, 400), dense_only)[1][0].tokens, big[1][0].tokens);

  Request d = request(30, 73, 1, 30), b = d;
  b.policy = sparse;
  Engine e(fx().model, *fx().be, config(AttnKind::Dense, 400));
  const int64_t id_d = e.submit(d), id_b = e.submit(b);
  e.run();
  int64_t sum = 0, bytes_d = 0, bytes_b = 0;
  for (const FinishedRequest& f : e.take_finished()) {
    sum += f.kv_bytes_read;
    if (f.id == id_d) bytes_d = f.kv_bytes_read;
    if (f.id == id_b) {
      bytes_b = f.kv_bytes_read;
      EXPECT_EQ(f.policy.kind, AttnKind::BlockTopK);
    }
  }
  EXPECT_EQ(sum, e.stats().kv_bytes_read);
  EXPECT_GT(bytes_b, 0);
  EXPECT_LT(bytes_b, bytes_d);
}

// EngineStats::since (bench generate's warm-up is left out this way): what a
// second request adds to an engine's stats equals the stats of an engine that
// ran only that request; sizes and peaks are the later snapshot's.
TEST(Engine, StatsSinceASnapshotEqualTheLaterWorkAlone) {
  const EngineConfig cfg = config(AttnKind::BlockTopK, 400);
  const Request warm = request(20, 81, 2, 6), timed = request(33, 82, 3, 17);
  EngineStats alone;
  run_all(cfg, {timed}, &alone);

  Engine e(fx().model, *fx().be, cfg);
  e.submit(warm);
  e.run();
  const EngineStats before = e.stats();
  e.submit(timed);
  e.run();
  const EngineStats d = e.stats().since(before);
  EXPECT_GT(before.steps, 0);
  EXPECT_EQ(d.steps, alone.steps);
  EXPECT_EQ(d.prefill_tokens, alone.prefill_tokens);
  EXPECT_EQ(d.decode_tokens, alone.decode_tokens);
  EXPECT_EQ(d.generated_tokens, alone.generated_tokens);
  EXPECT_EQ(d.requests_finished, 1);
  EXPECT_EQ(d.decode_page_reads, alone.decode_page_reads);
  EXPECT_EQ(d.decode_head_rows, alone.decode_head_rows);
  EXPECT_EQ(d.kv_bytes_read, alone.kv_bytes_read);
  EXPECT_EQ(d.weight_bytes_read, alone.weight_bytes_read);
  EXPECT_GT(d.decode_seconds, 0);
  EXPECT_LT(d.decode_seconds, e.stats().decode_seconds);
  EXPECT_NEAR(d.prefill_seconds + before.prefill_seconds, e.stats().prefill_seconds, 1e-12);
  EXPECT_EQ(d.kv_pages_peak, e.stats().kv_pages_peak);
  EXPECT_EQ(d.page_size, cfg.page_size);
}
