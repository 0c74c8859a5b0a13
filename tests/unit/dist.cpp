// Several devices, on the CPU: tensor-parallel shards (their weights are the
// slices of the whole model, random or loaded; two CPU ranks in a host group
// compute what one whole model does, through the executor group and the
// engine, graphs included), data-parallel replicas (bit-identical results to
// one engine, split Best-of-N samples, cancels), and the placement flags'
// errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "dist/placement.h"
#include "dist/replicas.h"
#include "engine/engine.h"
#include "hf_fixture.h"
#include "engine_test_util.h"
#include "test_util.h"

using namespace kf;

namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.arch = "qwen2";
  c.name = "tiny-tp";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.n_layers = 3;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 8;
  c.max_position = 4096;
  c.rms_eps = 1e-5f;
  c.qkv_bias = true;  // bias slices too
  c.qk_norm = true;
  return c;
}

std::unique_ptr<Backend> cpu() { return make_cpu_backend(CpuOptions{1, false}); }

// The executors of the tensor-parallel tests: 16 pages of 4 tokens, one short prompt at a time.
ExecutorConfig tp_exec_config() {
  ExecutorConfig ec;
  ec.page_size = 4;
  ec.kv_pages = 16;
  ec.max_step_tokens = 32;
  ec.max_seqs = 4;
  ec.max_logit_rows = 32;
  return ec;
}

const float* f32(const Buffer& b) {
  KF_CHECK(b.view().dtype == DType::F32, "expected F32 weights, got {}", dtype_name(b.view().dtype));
  return b.ptr<float>();
}

// Rows [r0, r0 + n) of a [*, cols] host matrix equal the shard's rows [s0, s0 + n).
void expect_rows(const float* full, int64_t r0, const float* shard, int64_t s0, int64_t n, int64_t cols,
                 const char* what) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(full[(r0 + r) * cols + c], shard[(s0 + r) * cols + c]) << what << " row " << r << " col " << c;
}
// Columns [c0, c0 + n) of a [rows, full_cols] matrix equal the shard [rows, n].
void expect_cols(const float* full, int64_t full_cols, int64_t c0, const float* shard, int64_t n, int64_t rows,
                 const char* what) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c)
      ASSERT_EQ(full[r * full_cols + c0 + c], shard[r * n + c]) << what << " row " << r << " col " << c;
}

// Every tensor of shard `rank` of `size` is its slice of the whole model's.
void expect_shard_is_slice(const Model& whole, const Model& shard, int rank, int size) {
  const ModelConfig& w = whole.config();
  const int64_t d = w.hidden_size, q = int64_t(w.n_heads) * w.head_dim, kv = int64_t(w.n_kv_heads) * w.head_dim,
                ff = w.intermediate_size, qs = q / size, ffs = ff / size;
  // Its KV heads: a share of them, or (more ranks than KV heads) the one its query heads read.
  const int64_t kvs = int64_t(std::max(1, w.n_kv_heads / size)) * w.head_dim;
  const int64_t kv0 = int64_t(rank * w.n_kv_heads / size) * w.head_dim;
  ASSERT_EQ(shard.config().n_heads, w.n_heads / size);
  ASSERT_EQ(shard.config().n_kv_heads * w.head_dim, kvs);
  ASSERT_EQ(shard.config().whole().n_kv_heads, w.n_kv_heads);
  ASSERT_EQ(shard.config().intermediate_size, w.intermediate_size / size);
  const Weights& a = whole.weights();
  const Weights& b = shard.weights();
  ASSERT_EQ(a.embed.view().numel(), b.embed.view().numel());
  expect_rows(f32(a.embed), 0, f32(b.embed), 0, w.vocab_size, d, "embed");
  for (int l = 0; l < w.n_layers; ++l) {
    const LayerWeights& x = a.layers[l];
    const LayerWeights& y = b.layers[l];
    ASSERT_EQ(y.wqkv.view().dim(0), qs + 2 * kvs);
    expect_rows(f32(x.wqkv), rank * qs, f32(y.wqkv), 0, qs, d, "q_proj");
    expect_rows(f32(x.wqkv), q + kv0, f32(y.wqkv), qs, kvs, d, "k_proj");
    expect_rows(f32(x.wqkv), q + kv + kv0, f32(y.wqkv), qs + kvs, kvs, d, "v_proj");
    if (!x.bqkv.empty()) {
      expect_rows(f32(x.bqkv), rank * qs, f32(y.bqkv), 0, qs, 1, "q bias");
      expect_rows(f32(x.bqkv), q + kv + kv0, f32(y.bqkv), qs + kvs, kvs, 1, "v bias");
    }
    expect_cols(f32(x.wo), q, rank * qs, f32(y.wo), qs, d, "o_proj");
    expect_rows(f32(x.w_gate_up), rank * ffs, f32(y.w_gate_up), 0, ffs, d, "gate_proj");
    expect_rows(f32(x.w_gate_up), ff + rank * ffs, f32(y.w_gate_up), ffs, ffs, d, "up_proj");
    expect_cols(f32(x.w_down), ff, rank * ffs, f32(y.w_down), ffs, d, "down_proj");
    if (!x.q_norm.empty()) expect_rows(f32(x.q_norm), 0, f32(y.q_norm), 0, 1, w.head_dim, "q_norm");
  }
}

TEST(TensorParallel, ShardConfigSplitsHeadsOrSaysWhy) {
  const ModelConfig c = tiny_config();
  const ModelConfig s = c.sharded(1, 2);
  EXPECT_EQ(s.n_heads, 4);
  EXPECT_EQ(s.n_kv_heads, 2);
  EXPECT_EQ(s.intermediate_size, 24);
  EXPECT_EQ(s.shard.rank, 1);
  EXPECT_EQ(s.whole().n_kv_heads, 4);
  EXPECT_EQ(s.params_plain(), c.params_plain());  // a shard counts its whole model
  expect_error([&] { c.sharded(0, 3); }, {"--tp 3", "4 KV heads", "must divide 4"});
  const ModelConfig rep = c.sharded(5, 8);  // more ranks than KV heads: each holds the one its queries read
  EXPECT_EQ(rep.n_heads, 1);
  EXPECT_EQ(rep.n_kv_heads, 1);
  EXPECT_EQ(rep.shard.first_kv_head(), 2);
  EXPECT_EQ(rep.whole().n_kv_heads, 4);
  expect_error([&] { c.sharded(0, 16); }, {"8 attention heads"});
  ModelConfig odd = c;
  odd.intermediate_size = 50;
  expect_error([&] { odd.sharded(0, 4); }, {"intermediate size 50"});
}

TEST(TensorParallel, RandomShardIsTheSliceOfTheWholeRandomModel) {
  auto be = cpu();
  const Model whole = Model::random(tiny_config(), *be, 5);
  for (int size : {2, 4, 8})  // 8 > 4 KV heads: copies
    for (int rank = 0; rank < size; ++rank) {
      const Model shard = Model::random(tiny_config().sharded(rank, size), *be, 5);
      expect_shard_is_slice(whole, shard, rank, size);
    }
}

TEST(TensorParallel, LoadedShardIsTheSliceOfTheCheckpoint) {
  auto be = cpu();
  for (const char* name : {"qwen2_untied", "qwen3_tied", "llama_hd64"}) {  // llama_hd64: 1 KV head, copied
    const std::string dir = test::kHfFixtureDir + name;
    // F32 storage (the default for these F32 safetensors is BF16) to compare values as floats.
    const Model whole = Model::load(dir, *be, {}, WeightFormat::F32);
    for (int rank = 0; rank < 2; ++rank) {
      const Model shard = Model::load(dir, *be, TpShard{rank, 2}, WeightFormat::F32);
      expect_shard_is_slice(whole, shard, rank, 2);
    }
  }
}

TEST(TensorParallel, HostAllReduceSumsInRankOrderOnEveryRank) {
  auto a = cpu(), b = cpu(), c = cpu();
  make_tp_group({a.get(), b.get(), c.get()});
  EXPECT_EQ(c->tp_rank(), 2);
  EXPECT_EQ(a->tp_size(), 3);
  std::vector<std::vector<float>> x = {{1e8f, 1.f, 2.f}, {1.f, 2.f, 3.f}, {-1e8f, 4.f, 5.f}};
  std::vector<Backend*> be = {a.get(), b.get(), c.get()};
  std::vector<std::thread> t;
  for (int r = 0; r < 3; ++r)
    t.emplace_back([&, r] {
      for (int rep = 0; rep < 50; ++rep) {  // the same calls again: the group is reusable
        std::vector<float> v = x[r];
        be[r]->all_reduce(Tensor(v.data(), DType::F32, {3}));
        if (rep == 49) x[r] = v;
      }
    });
  for (auto& th : t) th.join();
  const float first = (1e8f + 1.f) + -1e8f;  // rank order, not the exact sum
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(x[r][0], first);
    EXPECT_EQ(x[r][1], 7.f);
    EXPECT_EQ(x[r][2], 10.f);
  }
  auto d = cpu();
  expect_error([&] { make_tp_group({a.get(), d.get()}); }, {"already in a group"});
  expect_error([&] { make_tp_group({d.get(), d.get()}); }, {"named twice"});
}

// Two CPU ranks running the shards give the whole model's logits (up to the
// order of the partial sums) and the same sampled tokens through the engine.
struct TpRig {
  std::unique_ptr<Backend> whole_be = cpu(), r0 = cpu(), r1 = cpu();
  Model whole, s0, s1;
  explicit TpRig(const ModelConfig& c)
      : whole(Model::random(c, *whole_be, 9)), s0(Model::random(c.sharded(0, 2), *r0, 9)),
        s1(Model::random(c.sharded(1, 2), *r1, 9)) {
    make_tp_group({r0.get(), r1.get()});
  }
  std::vector<ExecutorRank> ranks() { return {{&s0, r0.get()}, {&s1, r1.get()}}; }
};

std::vector<float> step_logits(ExecutorGroup& g, const std::vector<int>& pages, int start,
                               const std::vector<int32_t>& tokens, int page_size) {
  std::vector<int32_t> slots;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int p = start + static_cast<int>(i);
    slots.push_back(pages[p / page_size] * page_size + p % page_size);
  }
  g.begin();
  const int seq = g.add_seq(pages, start, tokens, slots);
  for (int r = 0; r < static_cast<int>(tokens.size()); ++r) g.add_logits(seq, r);
  g.download_logits();
  return g.collect(g.launch()).logits;
}

TEST(TensorParallel, TwoCpuRanksComputeTheWholeModel) {
  ModelConfig one_kv = tiny_config();
  one_kv.n_kv_heads = 1;  // two ranks: each holds a copy of the one KV head
  for (const ModelConfig& c : {tiny_config(), one_kv}) {
    TpRig rig(c);
    for (bool graphs : {false, true}) {
      ExecutorConfig ec = tp_exec_config();
      ec.graphs = graphs;
      if (c.n_kv_heads > 1) {
        ec.policy.kind = AttnKind::BlockTopK;  // the selection splits with the KV heads
        ec.policy.topk_pages = 2;
        ec.policy.local_pages = 1;
      }
      ExecutorGroup one({{&rig.whole, rig.whole_be.get()}}, ec), two(rig.ranks(), ec);
      EXPECT_EQ(two.size(), 2);
      const std::vector<int> pages = {5, 2, 9, 0, 7, 11, 3, 1};
      std::vector<int32_t> prompt(21);
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37 + 11) % 97);
      std::vector<float> a = step_logits(one, pages, 0, prompt, 4), b = step_logits(two, pages, 0, prompt, 4);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4) << "prefill logit " << i;
      for (int t = 0; t < 8; ++t) {  // decode rows (graphs when on), past the local window
        const std::vector<int32_t> tok = {static_cast<int32_t>((t * 13 + 5) % 97)};
        a = step_logits(one, pages, 21 + t, tok, 4);
        b = step_logits(two, pages, 21 + t, tok, 4);
        for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4) << "decode " << t << " logit " << i;
      }
    }
  }
}

// GGUF shards keep the stored formats (WeightFormat native) where a slice keeps
// quantised blocks whole (row slices); a column slice (o_proj, down_proj) that
// would split blocks falls back to BF16 (see Loader::part). Two CPU ranks of
// the shards compute the whole model's logits.
TEST(TensorParallel, QuantisedGgufShardsComputeTheWholeModel) {
  for (const char* name : {"tiny_llama.gguf", "tiny_qwen3.gguf"}) {
    const std::string path = std::string(KINFER_SOURCE_DIR "/tests/fixtures/gguf/") + name;
    auto whole_be = cpu(), r0 = cpu(), r1 = cpu();
    const Model whole = Model::load(path, *whole_be, {}, WeightFormat::Native);
    const Model s0 = Model::load(path, *r0, TpShard{0, 2}, WeightFormat::Native);
    const Model s1 = Model::load(path, *r1, TpShard{1, 2}, WeightFormat::Native);
    std::printf("%s: whole %s, shard %s\n", name, whole.weights().matrix_dtypes().c_str(),
                s0.weights().matrix_dtypes().c_str());
    make_tp_group({r0.get(), r1.get()});
    const ExecutorConfig ec = tp_exec_config();
    ExecutorGroup one({{&whole, whole_be.get()}}, ec), two({{&s0, r0.get()}, {&s1, r1.get()}}, ec);
    const std::vector<int> pages = {5, 2, 9, 0, 7, 11, 3, 1};
    std::vector<int32_t> prompt(13);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7 + 3) % 16);
    const std::vector<float> a = step_logits(one, pages, 0, prompt, 4), b = step_logits(two, pages, 0, prompt, 4);
    ASSERT_EQ(a.size(), b.size());
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    std::printf("%s: max |whole - tp 2| logit = %.3g\n", name, worst);
    EXPECT_LT(worst, 2e-2) << name;
  }
}

TEST(TensorParallel, CopiedKvHeadsRefuseQuerySelectedPolicies) {
  ModelConfig c = tiny_config();
  c.n_kv_heads = 1;
  TpRig rig(c);
  ExecutorConfig ec;
  ec.kv_pages = 8;
  ec.policy.kind = AttnKind::BlockTopK;
  expect_error([&] { ExecutorGroup g(rig.ranks(), ec); }, {"--tp 2", "copy of one of the model's 1 KV heads", "blocktopk"});
}

Request request(int len, uint32_t seed, int n, int max_tokens, float temp = 1.f) {
  std::mt19937 rng(seed);
  Request r;
  for (int i = 0; i < len; ++i) r.prompt.push_back(static_cast<int>(rng() % 97));
  r.n = n;
  r.max_tokens = max_tokens;
  r.sampling.temperature = temp;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 77;
  r.rng_key = seed;
  return r;
}

EngineConfig engine_config(int kv_pages = 300) {
  EngineConfig c;
  c.page_size = 4;
  c.kv_pages = kv_pages;
  c.max_step_tokens = 64;
  c.repetition.enabled = false;
  return c;
}

TEST(TensorParallel, EngineOnTwoCpuRanksSamplesTheWholeModelsTokens) {
  TpRig rig(tiny_config());
  const std::vector<Request> reqs = {request(9, 1, 3, 20), request(14, 2, 1, 25, 0.f), request(5, 3, 2, 18)};
  EngineConfig c = engine_config();
  c.graphs = EngineConfig::Mode::Always;  // padded decode steps replayed on both ranks
  Engine one(rig.whole, *rig.whole_be, c), two(rig.ranks(), c);
  const auto a = test::run_to_end(one, reqs), b = test::run_to_end(two, reqs);
  for (size_t i = 0; i < reqs.size(); ++i)
    for (int s = 0; s < reqs[i].n; ++s) EXPECT_EQ(a[i][s].tokens, b[i][s].tokens) << "request " << i << " sample " << s;
  EXPECT_GT(two.stats().graph_steps, 0);
  EXPECT_EQ(two.stats().kv_bytes_read, one.stats().kv_bytes_read);  // both ranks' heads counted
}

TEST(TensorParallel, MismatchedRanksAreRefused) {
  TpRig rig(tiny_config());
  ExecutorConfig ec;
  ec.kv_pages = 8;
  expect_error([&] { ExecutorGroup g({{&rig.s1, rig.r1.get()}, {&rig.s0, rig.r0.get()}}, ec); },
               {"holds model shard 1 of 2"});
  auto lone = cpu();
  expect_error([&] { Engine e(rig.s0, *lone, engine_config()); }, {"shard 0 of 2"});
}

// A rank that fails mid-step must not leave its peers waiting in an
// all-reduce forever (before the abort this test hung until ctest's timeout):
// the peer fails too, the group reports the failure that came first, and
// refuses later steps, naming it.
TEST(TensorParallel, AFailingRankAbortsItsPeersAllReduce) {
  {
    auto a = cpu(), b = cpu();
    make_tp_group({a.get(), b.get()});
    std::string peer_error;
    std::thread peer([&] {
      std::vector<float> v = {1.f, 2.f};
      try {
        b->all_reduce(Tensor(v.data(), DType::F32, {2}));
      } catch (const Error& e) {
        peer_error = e.what();
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the peer is waiting by now
    a->abort_tp_group("rank 0: out of memory (test)");
    peer.join();
    EXPECT_NE(peer_error.find("aborted"), std::string::npos) << peer_error;
    EXPECT_NE(peer_error.find("out of memory (test)"), std::string::npos) << peer_error;
    std::vector<float> v = {1.f};
    expect_error([&] { a->all_reduce(Tensor(v.data(), DType::F32, {1})); }, {"aborted", "out of memory (test)"});
  }
  TpRig rig(tiny_config());
  ExecutorGroup two(rig.ranks(), tp_exec_config());
  // Rank 0 waits in the all-reduce that rank 1 never reaches.
  expect_error(
      [&] {
        two.on_ranks([](int r, StepExecutor& e) {
          if (r == 1) fail("rank 1 could not allocate its scratch (test)");
          std::vector<float> v(4, 1.f);
          e.backend().all_reduce(Tensor(v.data(), DType::F32, {4}));
        });
      },
      {"rank 1 could not allocate its scratch (test)"});
  const std::vector<int> pages = {0, 1, 2};
  expect_error([&] { step_logits(two, pages, 0, {3, 4, 5}, 4); },
               {"cannot run steps after a rank failed", "rank 1: rank 1 could not allocate"});
}

// ---- data parallelism ------------------------------------------------------------

std::vector<dist::Replica> cpu_replicas(int n, const ModelConfig& c) {
  std::vector<dist::Replica> reps(n);
  for (dist::Replica& r : reps) {
    r.backends.push_back(cpu());
    r.models.push_back(std::make_unique<Model>(Model::random(c, *r.backends[0], 3)));
  }
  return reps;
}

std::map<int64_t, std::vector<SampleResult>> run_set(dist::ReplicaSet& set, const std::vector<Request>& reqs,
                                                     std::vector<int64_t>* ids = nullptr) {
  std::vector<int64_t> local;
  for (const Request& r : reqs) local.push_back(set.submit(r));
  std::map<int64_t, std::vector<SampleResult>> out;
  while (out.size() < reqs.size())
    for (FinishedRequest& f : set.wait_finished(std::chrono::milliseconds(100))) out[f.id] = std::move(f.samples);
  if (ids) *ids = local;
  return out;
}

TEST(DataParallel, TwoCpuReplicasGiveOneEnginesTokensBitForBit) {
  ModelConfig c = tiny_config();
  std::vector<Request> reqs;
  for (int i = 0; i < 12; ++i) reqs.push_back(request(4 + (i * 5) % 17, 100 + i, 1 + i % 4, 10 + (i * 7) % 23));
  std::vector<dist::Replica> one_rep = cpu_replicas(1, c), two_reps = cpu_replicas(2, c);
  EngineConfig cfg = engine_config();
  cfg.max_seqs = 6;  // part of the job waits in the set's queue and goes to whoever has room
  Engine ref(one_rep[0].model(), one_rep[0].backend(), cfg);
  const auto expect = test::run_to_end(ref, reqs);
  dist::ReplicaSet set(two_reps, cfg);
  std::vector<int64_t> ids;
  const auto got = run_set(set, reqs, &ids);
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<SampleResult>& g = got.at(ids[i]);
    ASSERT_EQ(g.size(), expect[i].size());
    for (size_t s = 0; s < g.size(); ++s) {
      EXPECT_EQ(g[s].tokens, expect[i][s].tokens) << "request " << i << " sample " << s;
      EXPECT_EQ(g[s].stop, expect[i][s].stop);
    }
  }
  const std::vector<dist::ReplicaStats> per = set.replica_stats();
  ASSERT_EQ(per.size(), 2u);
  EXPECT_GT(per[0].requests, 0);  // both replicas took work
  EXPECT_GT(per[1].requests, 0);
  EXPECT_EQ(per[0].requests + per[1].requests, 12);
  EXPECT_EQ(set.stats().generated_tokens, ref.stats().generated_tokens);
  EXPECT_EQ(set.generated_tokens(), ref.stats().generated_tokens);
}

TEST(DataParallel, SplitSamplesEqualOneRequest) {
  std::vector<dist::Replica> reps = cpu_replicas(2, tiny_config());
  Request r = request(11, 42, 5, 16);
  const std::vector<Request> parts = dist::split_samples(r, 2);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].n, 3);
  EXPECT_EQ(parts[1].n, 2);
  EXPECT_EQ(parts[1].first_sample, 3);
  EXPECT_EQ(dist::split_samples(r, 9).size(), 5u);  // never an empty part
  Engine ref(reps[0].model(), reps[0].backend(), engine_config());
  const auto whole = test::run_to_end(ref, {r});
  dist::ReplicaSet set(reps, engine_config());
  std::vector<int64_t> ids;
  const auto got = run_set(set, parts, &ids);
  std::vector<SampleResult> joined = got.at(ids[0]);
  for (const SampleResult& s : got.at(ids[1])) joined.push_back(s);
  ASSERT_EQ(joined.size(), 5u);
  for (int s = 0; s < 5; ++s) EXPECT_EQ(joined[s].tokens, whole[0][s].tokens) << "sample " << s;
}

TEST(DataParallel, CancelAndBadRequests) {
  std::vector<dist::Replica> reps = cpu_replicas(2, tiny_config());
  EngineConfig cfg = engine_config();
  cfg.max_seqs = 2;
  dist::ReplicaSet set(reps, cfg);
  expect_error([&] { set.submit(request(0, 1, 1, 5)); }, {"prompt is empty"});
  expect_error([&] { set.submit(request(5, 1, 3, 5)); }, {"--max-seqs"});
  // Long requests fill both replicas; a later one waits in the queue and is cancelled there.
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(set.submit(request(6, i, 2, 400)));
  set.cancel(ids[3]);
  for (int64_t id : ids) set.cancel(id);
  std::map<int64_t, FinishedRequest> done;
  while (done.size() < ids.size())
    for (FinishedRequest& f : set.wait_finished(std::chrono::milliseconds(100))) done[f.id] = std::move(f);
  for (int64_t id : ids)
    for (const SampleResult& s : done.at(id).samples) EXPECT_EQ(s.stop, StopReason::Cancelled) << "request " << id;
  EXPECT_TRUE(set.take_finished().empty());
}

// submit_all queues its requests together or not at all: a malformed one
// anywhere refuses the lot, and a replica takes the rest in one go, so the
// engine runs the steps one engine given them up front runs (bench generate
// --requests counts steps: a request taken a step late would add one).
TEST(DataParallel, SubmitAllQueuesTogetherOrNothing) {
  std::vector<dist::Replica> reps = cpu_replicas(1, tiny_config());
  std::vector<Request> reqs = {request(9, 1, 2, 12), request(7, 2, 1, 15), request(12, 3, 3, 9)};
  Engine ref(reps[0].model(), reps[0].backend(), engine_config());
  const auto expect = test::run_to_end(ref, reqs);
  for (int round = 0; round < 3; ++round) {  // the same steps every time, whatever the threads' timing
    dist::ReplicaSet set(reps, engine_config());
    std::vector<Request> bad = reqs;
    bad.insert(bad.begin() + 1, request(0, 4, 1, 5));
    expect_error([&] { set.submit_all(bad); }, {"prompt is empty"});
    const std::vector<int64_t> ids = set.submit_all(reqs);
    ASSERT_EQ(ids.size(), reqs.size());
    std::map<int64_t, FinishedRequest> done;
    while (done.size() < ids.size())
      for (FinishedRequest& f : set.wait_finished(std::chrono::milliseconds(100))) done[f.id] = std::move(f);
    EXPECT_EQ(done.size(), ids.size()) << "the refused batch queued nothing";
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(done.at(ids[i]).samples[0].tokens, expect[i][0].tokens);
    EXPECT_EQ(set.stats().steps, ref.stats().steps) << "round " << round;
    EXPECT_EQ(set.stats().prefill_tokens, ref.stats().prefill_tokens);
  }
}

// The page hashes a replica remembers are the KV cache's chain (a prompt's
// first full pages); a lookup counts leading pages; the least recently used
// are forgotten beyond the capacity.
TEST(DataParallel, PrefixAffinityMatchesLeadingPagesAndForgetsTheOldest) {
  dist::PrefixAffinity seen(4, 8);
  const std::vector<int> a = request(18, 1, 1, 1).prompt, b = request(18, 2, 1, 1).prompt;
  const std::vector<uint64_t> ha = seen.page_hashes(a), hb = seen.page_hashes(b);
  ASSERT_EQ(ha.size(), 4u);  // full pages only
  uint64_t h = kPrefixRoot;
  for (int j = 0; j < 4; ++j) EXPECT_EQ(ha[j], h = prefix_hash(h, std::span<const int>(a).subspan(4 * j, 4)));
  EXPECT_EQ(seen.match(ha), 0);
  seen.note(std::span<const uint64_t>(ha).first(2));
  EXPECT_EQ(seen.match(ha), 2);
  std::vector<int> a_other_tail = a;
  a_other_tail[9] += 1;  // the third page differs
  EXPECT_EQ(seen.match(seen.page_hashes(a_other_tail)), 2);
  std::vector<int> a_other_head = a;
  a_other_head[0] += 1;  // the chain starts at the first page
  EXPECT_EQ(seen.match(seen.page_hashes(a_other_head)), 0);
  EXPECT_TRUE(dist::PrefixAffinity(4, 8, 2).page_hashes(a).size() == 2u);  // at most max_pages
  seen.note(ha);
  seen.note(hb);
  EXPECT_EQ(seen.size(), 8u);
  seen.note(std::vector<uint64_t>{99});  // over 8: the older half goes (a's pages)
  EXPECT_LE(seen.size(), 5u);
  EXPECT_EQ(seen.match(ha), 0);
  EXPECT_EQ(seen.match(hb), 4);
  EXPECT_THROW(dist::PrefixAffinity(0), Error);
}

// With the prefix cache, two CPU replicas send each request where its prompt
// went before: after a first wave of prompts A and B, requests of both,
// interleaved, each share all but their last two rows (none prefills its
// prompt again on a replica that had not seen it), and the tokens equal one
// engine's without the cache. When the replica holding A is busier than the
// other by more than the slack, the other takes A's requests too; the parts
// of a request split over replicas go by load.
TEST(DataParallel, PrefixCacheRoutesRequestsToTheReplicaThatHasTheirPages) {
  const Request a = request(30, 1, 1, 6), b = request(30, 2, 1, 6);  // 7 full pages of 4: 28 rows shared
  auto with_key = [](Request r, int64_t key, int max_tokens) {
    r.rng_key = key;
    r.max_tokens = max_tokens;
    return r;
  };
  const std::vector<Request> wave1 = {a, b};
  std::vector<Request> wave2;
  for (int i = 0; i < 3; ++i) {
    wave2.push_back(with_key(a, 10 + i, 6));
    wave2.push_back(with_key(b, 20 + i, 6));
  }
  EngineConfig cfg = engine_config();
  std::vector<dist::Replica> one = cpu_replicas(1, tiny_config()), two = cpu_replicas(2, tiny_config());
  Engine ref(one[0].model(), one[0].backend(), cfg);
  const auto want1 = test::run_to_end(ref, wave1), want2 = test::run_to_end(ref, wave2);
  cfg.prefix_cache = true;
  {
    dist::ReplicaSet set(two, cfg);
    std::vector<int64_t> ids;
    run_set(set, wave1);
    const std::vector<dist::ReplicaStats> before = set.replica_stats();
    const auto got = run_set(set, wave2, &ids);
    for (size_t i = 0; i < wave2.size(); ++i) EXPECT_EQ(got.at(ids[i])[0].tokens, want2[i][0].tokens) << i;
    const std::vector<dist::ReplicaStats> after = set.replica_stats();
    int64_t cached = 0, routed = 0;
    for (size_t r = 0; r < after.size(); ++r) {
      cached += after[r].engine.prefix_cached_rows - before[r].engine.prefix_cached_rows;
      routed += after[r].prefix_routed - before[r].prefix_routed;
    }
    EXPECT_EQ(cached, 6 * 28) << "a request prefilled its prompt on a replica that had not seen it";
    EXPECT_EQ(routed, 6);
  }
  {
    // A chat's next turn: its prompt quotes A's prompt (7 pages of 4) and a
    // 16-token answer (rows for 45 tokens: 11 pages) and 30 more tokens (19
    // pages). A's prompt alone is under half of them, the answer's pages
    // make it more: it goes to the replica that ran A and shares 11 pages,
    // though that replica is busier (a long request of A's prompt runs
    // there), where load would send it to the other.
    dist::ReplicaSet set(two, cfg);
    const Request a16 = with_key(a, 1, 16);
    const auto first = run_set(set, {a16, b});
    std::vector<int64_t> ids;
    const std::vector<int>& answer = first.begin()->second[0].tokens;
    ASSERT_EQ(answer.size(), 16u);
    Request next = request(30, 60, 1, 4);
    next.prompt.insert(next.prompt.begin(), answer.begin(), answer.end());
    next.prompt.insert(next.prompt.begin(), a.prompt.begin(), a.prompt.end());
    ASSERT_EQ(next.prompt.size(), 76u);
    const std::vector<dist::ReplicaStats> before = set.replica_stats();
    const int64_t busy = set.submit(with_key(a, 2, 4000));  // to A's replica (its whole prompt matches)
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (set.replica_stats()[0].requests + set.replica_stats()[1].requests == before[0].requests + before[1].requests &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    run_set(set, {next}, &ids);
    set.cancel(busy);
    while (set.wait_finished(std::chrono::milliseconds(100)).empty()) {
    }
    const std::vector<dist::ReplicaStats> after = set.replica_stats();
    int64_t cached = 0, routed = 0;
    for (size_t r = 0; r < after.size(); ++r) {
      cached += after[r].engine.prefix_cached_rows - before[r].engine.prefix_cached_rows;
      routed += after[r].prefix_routed - before[r].prefix_routed;
    }
    EXPECT_EQ(routed, 2);  // the long request and the next turn
    EXPECT_EQ(cached, 28 + 11 * 4);
  }
  // Requests too long to end before all are taken, submitted after the first
  // wave: how many each replica took (then they are cancelled).
  auto taken_by = [&](dist::ReplicaSet& set, const std::vector<Request>& reqs) {
    const std::vector<dist::ReplicaStats> before = set.replica_stats();
    const std::vector<int64_t> ids = set.submit_all(reqs);
    auto taken = [&](size_t r) { return set.replica_stats()[r].requests - before[r].requests; };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (taken(0) + taken(1) < static_cast<int64_t>(reqs.size()) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const std::pair<int64_t, int64_t> got{taken(0), taken(1)};
    for (int64_t id : ids) set.cancel(id);
    size_t done = 0;
    while (done < ids.size()) done += set.wait_finished(std::chrono::milliseconds(100)).size();
    return got;
  };
  {
    // max_seqs 8: slack 2. The replica holding A takes A's requests until it
    // is 3 samples busier than the other, which takes the rest.
    cfg.max_seqs = 8;
    dist::ReplicaSet set(two, cfg);
    EXPECT_EQ(set.affinity_slack(), 2);
    run_set(set, wave1);
    std::vector<Request> many;
    for (int i = 0; i < 8; ++i) many.push_back(with_key(a, 30 + i, 4000));
    const auto [t0, t1] = taken_by(set, many);
    EXPECT_EQ(t0 + t1, 8);
    EXPECT_GT(t0, 0);
    EXPECT_GT(t1, 0);
  }
  cfg.max_seqs = 256;  // slack 64: only the routing rules below decide
  {
    // The parts of a split request spread by load, though their prompt is A's.
    dist::ReplicaSet set(two, cfg);
    run_set(set, wave1);
    Request two_samples = with_key(a, 40, 4000);
    two_samples.n = 2;
    const std::vector<Request> parts = dist::split_samples(two_samples, 2);
    ASSERT_EQ(parts.size(), 2u);
    ASSERT_TRUE(parts[0].route_by_load && parts[1].route_by_load);
    EXPECT_EQ(taken_by(set, parts), std::make_pair(int64_t{1}, int64_t{1}));
  }
  {
    // Prompts that share only A's first page of 7 (under half) go by load.
    dist::ReplicaSet set(two, cfg);
    run_set(set, wave1);
    std::vector<Request> heads;
    for (int i = 0; i < 2; ++i) {
      Request r = with_key(request(30, 50 + i, 1, 1), 50 + i, 4000);
      std::copy(a.prompt.begin(), a.prompt.begin() + 4, r.prompt.begin());
      heads.push_back(r);
    }
    EXPECT_EQ(taken_by(set, heads), std::make_pair(int64_t{1}, int64_t{1}));
  }
}

// A replica's routing record forgets the pages its cache evicts. After A's
// prompt (7 full pages) ran on one replica, a request that shares A's first
// 4 pages (half of its 8, so it goes there too) needs all but those 4 of the
// pool's 38 pages and evicts A's other cached pages: the record then holds 4
// of A's pages, as the cache does, not 7 (a request of A's prompt shares 16
// rows there).
TEST(DataParallel, PrefixRecordForgetsThePagesTheCacheEvicts) {
  const Request a = request(30, 1, 1, 6), b = request(30, 2, 1, 6);
  EngineConfig cfg = engine_config(38);
  cfg.prefix_cache = true;
  std::vector<dist::Replica> two = cpu_replicas(2, tiny_config());
  dist::ReplicaSet set(two, cfg);
  run_set(set, {a, b});
  int owner = -1;
  for (int r = 0; r < 2; ++r)
    if (set.prefix_pages(r, a.prompt) == 7) owner = r;
  ASSERT_GE(owner, 0);
  Request evictor = request(16, 70, 1, 120);  // 32 + 119 rows: 38 pages
  evictor.prompt.insert(evictor.prompt.begin(), a.prompt.begin(), a.prompt.begin() + 16);
  const std::vector<dist::ReplicaStats> before = set.replica_stats();
  run_set(set, {evictor});
  std::vector<dist::ReplicaStats> after = set.replica_stats();
  EXPECT_EQ(after[owner].requests - before[owner].requests, 1) << "routed by its first 4 pages";
  EXPECT_GE(after[owner].engine.prefix_cache_evictions - before[owner].engine.prefix_cache_evictions, 4);
  EXPECT_EQ(set.prefix_pages(owner, a.prompt), 4);
  EXPECT_EQ(set.prefix_pages(1 - owner, a.prompt), 0);
  Request again = a;
  again.rng_key = 71;
  run_set(set, {again});
  const std::vector<dist::ReplicaStats> last = set.replica_stats();
  EXPECT_EQ(last[owner].requests - after[owner].requests, 1);
  EXPECT_EQ(last[owner].engine.prefix_cached_rows - after[owner].engine.prefix_cached_rows, 16);
}

TEST(Placement, FlagsAreCheckedWithClearErrors) {
  using dist::PlacementFlags;
  auto make = [](PlacementFlags f, int visible = 2, bool nccl = true) { return dist::make_placement(f, visible, nccl); };
  PlacementFlags f;
  EXPECT_EQ(make(f).device, Device::CPU);
  f.replicas = 3;
  EXPECT_EQ(make(f).replicas(), 3);
  f = {};
  f.tp = 2;
  expect_error([&] { make(f); }, {"the CPU backend runs whole models"});
  f = {};
  f.devices = "0,1";
  dist::Placement p = make(f);
  EXPECT_EQ(p.device, Device::CUDA);
  EXPECT_EQ(p.replicas(), 2);
  f.tp = 2;
  EXPECT_EQ(make(f).replicas(), 1);
  f = {};
  f.devices = "0,2";
  expect_error([&] { make(f); }, {"GPU 2 does not exist (2 visible: 0, 1)"});
  f.devices = "1,1";
  expect_error([&] { make(f); }, {"GPU 1 is named twice"});
  f.devices = "0,x";
  expect_error([&] { make(f); }, {"--devices '0,x': expected GPU numbers"});
  f = {};
  f.device = "cuda";
  expect_error([&] { make(f, 0); }, {"no GPU is visible"});
  f.num_gpus = 3;
  expect_error([&] { make(f); }, {"--num-gpus 3"});
  f = {};
  f.num_gpus = 3;
  f.tp = 2;
  expect_error([&] { make(f, 4); }, {"multiple of 2"});
  f.num_gpus = 4;
  EXPECT_EQ(make(f, 4).replicas(), 2);
  expect_error([&] { make(f, 4, false); }, {"without NCCL"});
  f = {};
  f.devices = "0";
  f.replicas = 2;
  expect_error([&] { make(f); }, {"--replicas is for CPU"});
  f = {};
  f.device = "tpu";
  expect_error([&] { make(f); }, {"--device must be cpu or cuda"});
}

}  // namespace
