// The Backend interface: every numeric operation the model forward and the
// engine need. cpu/ is the plain reference, cuda/ the fast one. Model code
// calls only this interface (no #ifdef, no device checks).
//
// Conventions
// - Tensors are contiguous row-major views on the backend's device.
// - Activations are F32 on CPU and BF16 on CUDA. Weights carry their own
//   dtype, one the backend takes (takes_weight): CUDA converts every weight to
//   BF16 at load; the CPU keeps GGUF blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K), F16
//   and BF16 as they are, or F32. Accumulation is always fp32.
// - Index tensors (ids, positions, page tables, slots) are I32 on the backend's
//   device; the engine fills host copies and calls upload() once per step.
// - No op allocates: outputs and workspaces are Buffers the caller owns.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attn/policy.h"
#include "util/tensor.h"

namespace kf {

struct RopeParams {
  float theta = 10000.f;
  int rotary_dim = 0;  // rotate the first rotary_dim dims of each head (= head_dim usually)
  // Precomputed inverse frequencies [rotary_dim/2] (host), with any scaling
  // (linear, llama3) already applied by ModelConfig::rope_inv_freq().
  const float* inv_freq = nullptr;
};

// One layer's paged KV pool. Page = page_size tokens of one layer.
struct KvLayer {
  Tensor k;        // [n_pages, n_kv_heads, page_size, head_dim]
  Tensor v;        // [n_pages, n_kv_heads, page_size, head_dim]
  Tensor summary;  // [n_pages, n_kv_heads, head_dim]: mean post-RoPE key of a full page, in the act dtype
                   // (CUDA also takes F32), or U8: int8 codes (attn/summary.h) scaled by summary_scale
  Tensor summary_scale = {};  // [n_pages, n_kv_heads] F32 for U8 summaries, else empty
};

// A batch of sequences for one forward step. Sequence s owns query rows
// [q_start[s], q_start[s+1]); after this step's K/V are written its cache
// holds ctx_len[s] tokens, so query row r of s sits at position
// ctx_len[s] - (q_start[s+1]-q_start[s]) + (r - q_start[s]) and attends
// causally. Rows of a sequence with one query (decode) follow its policy;
// sequences with several rows (prefill chunks) are always dense causal.
struct AttnBatch {
  int n_seqs = 0;
  int max_pages = 0;   // columns of page_table
  Tensor q_start;      // [n_seqs + 1] I32
  Tensor ctx_len;      // [n_seqs] I32
  Tensor page_table;   // [n_seqs, max_pages] I32 physical page ids (-1 = none)
  // Per-sequence decode policy [n_seqs, 3] I32 (AttnKind, local_pages,
  // topk_pages), so requests with different policies share a step; empty:
  // every sequence follows the policy passed to attention().
  Tensor seq_policy;
};

// Per (sequence, KV head) list of physical pages a decode query reads,
// ascending by position. Written by attention() for policies that select.
struct PageSelection {
  Tensor pages;   // [n_seqs, n_kv_heads, max_pages] I32
  Tensor counts;  // [n_seqs, n_kv_heads] I32
};

// Per-row sampling parameters for Backend::sample, all [m] on the backend's
// device (the executor uploads them with the step's other index tensors).
struct SampleArgs {
  Tensor logit_row;    // [m] I32: the logits row a sampled row reads (Best-of-N siblings share one)
  Tensor temperature;  // [m] F32, 0 = greedy (argmax, ties -> lowest id)
  Tensor top_k;        // [m] I32, 0 = off
  Tensor top_p;        // [m] F32, 1 = off
  Tensor min_p;        // [m] F32, 0 = off
  Tensor uniform;      // [m] F32 in [0, 1): the row's draw (Philox)
  Tensor forced;       // [m] I32: a token to emit instead of sampling (-1 = sample)
};

// Penalties of kf::Sampler (backend/sampler.h) for Backend::apply_penalties,
// one entry per logits row, all on the backend's device. A row penalises the
// history of sequence seq[r] of the step's AttnBatch: the tokens the token
// pool holds at its positions [0, ctx_len), of which those at positions >=
// prompt_len[r] are generated.
struct PenaltyArgs {
  Tensor seq;         // [m] I32
  Tensor prompt_len;  // [m] I32
  Tensor repetition;  // [m] F32, HF over prompt + generated (l > 0 ? l / r : l * r); 1 = off
  Tensor presence;    // [m] F32, OpenAI over generated (l -= p once per distinct token); 0 = off
  Tensor frequency;   // [m] F32, OpenAI over generated (l -= f per occurrence); 0 = off
};

// Where the elements of a tensor sit in a bigger [*, full_cols] matrix whose
// random values are drawn by element index (Backend::fill_uniform): element
// (r, c) of t, viewed as [rows, t.dim(-1)], draws index
// (row0 + r) * full_cols + col0 + c. full_cols 0 = t is the whole tensor. A
// tensor-parallel shard fills its slice of a random weight with it, so the
// shard equals that slice of the full random model.
struct FillIndex {
  int64_t row0 = 0, col0 = 0, full_cols = 0;
};

// A recorded step that replays without host work (a CUDA graph).
class Graph {
 public:
  virtual ~Graph() = default;
};

// A backend drives one device (the CPU, or one GPU given by its ordinal) and
// is the Allocator of that device's memory: Buffer(dtype, shape, backend).
class Backend : public Allocator {
 public:
  ~Backend() override = default;
  Device device() const override = 0;
  int device_index() const { return device_index_; }  // the GPU ordinal (0 on the CPU)
  virtual std::string name() const = 0;
  // Activations, KV and logits dtype (F32 on the CPU, BF16 on CUDA). Weights
  // carry their own dtype: matmul dispatches on the weight tensor's format.
  DType act_dtype() const { return device() == Device::CPU ? DType::F32 : DType::BF16; }
  // Whether matmul and embed take weights stored as t (every backend takes
  // act_dtype()), so a loader can keep a checkpoint's tensors in their format.
  virtual bool takes_weight(DType t) const { return t == act_dtype(); }
  // A matrix [rows, cols] in a dtype it takes, rearranged into the layout its
  // matmul reads fastest, values unchanged (the CPU: Q8_0, Q4_0, Q4_1 with
  // four rows interleaved, backend/cpu/packed_weights.h). By default as is.
  virtual Buffer pack_weight(Buffer w) { return w; }
  // An MLP's stacked [gate; up] matrix [2f, d] in the layout mlp() reads
  // fastest (CUDA: rows interleaved by 8, so its decode GEMM can end in
  // silu_mul). Only mlp() may read the result; it also takes matrices that
  // did not come from here. By default pack_weight(w).
  virtual Buffer pack_mlp_gate_up(Buffer w) { return pack_weight(std::move(w)); }

  // Device memory: bytes free now and in all (the CPU: available and total RAM).
  struct Memory {
    int64_t free = 0, total = 0;
  };
  virtual Memory memory() const = 0;

  // Makes the calling thread's work go to this backend's device (CUDA:
  // cudaSetDevice). A thread that drives a backend whose GPU may not be the
  // current one (replicas and tensor-parallel ranks, one thread each) calls
  // it before any other call; allocation binds by itself.
  virtual void bind_thread() {}

  // Tensor parallelism: this backend's rank in its group and the group's size
  // (0 of 1 until make_tp_group puts it in one).
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }
  // Sums x over the ranks of the tensor-parallel group, in place; every rank
  // ends with the same bits. Each rank calls it from its own thread, in the
  // same order as the others (CUDA: an NCCL all-reduce on the backend's
  // stream, which graphs capture). One rank (the default) has nothing to add: a no-op.
  virtual void all_reduce(const Tensor& x) { (void)x; }
  // A rank of this backend's group failed mid-step (`why`): collectives the
  // other ranks wait in, or have pending on their devices, end instead of
  // waiting for it, and every later collective of the group fails, naming
  // `why`. Any rank's thread may call it, also while others are inside
  // all_reduce; the group cannot be used again. One rank: nothing to do.
  virtual void abort_tp_group(const std::string& why) { (void)why; }

  // Host <-> device copies (bytes = dst.nbytes()), in order with the ops.
  // upload() returns at once (the host memory must then stay unchanged until
  // the copy ran: page-locked memory from pinned() for copies that overlap);
  // download() waits for the copy; download_async() does not (wait on an
  // Event recorded after it). The CPU backend copies at once.
  virtual void upload(const Tensor& dst, const void* host) = 0;
  virtual void download(void* host, const Tensor& src) = 0;
  virtual void download_async(void* host, const Tensor& src) { download(host, src); }
  virtual void synchronize() {}
  // Page-locked host memory for overlapped copies (plain host memory on the CPU).
  virtual Allocator& pinned() { return host_allocator(); }

  // A point in the backend's work: record() marks it after everything issued
  // so far, wait() blocks the host until that work is done, and ms_between()
  // times the device between two recorded events (0 on the CPU).
  class Event {
   public:
    virtual ~Event() = default;
  };
  virtual std::unique_ptr<Event> make_event() { return std::make_unique<Event>(); }
  virtual void record(Event& e) { (void)e; }
  virtual void wait(Event& e) { (void)e; }
  virtual double ms_between(Event& a, Event& b) {
    (void)a;
    (void)b;
    return 0;
  }

  // Graphs for decode steps. record() runs `ops` now and returns a recording
  // of them that replay() runs again (CUDA: the ops run once for real, then
  // are captured into a graph; the CPU keeps `ops` and calls it). `ops` may
  // only issue this backend's ops (no uploads, downloads or host syncs), on
  // tensors that stay where they are, with the same shapes and scalars every
  // time. A graph recorded at an older scratch_epoch() is stale: the
  // backend's scratch memory has moved since.
  virtual std::unique_ptr<Graph> record(std::function<void()> ops);
  virtual void replay(Graph& graph);
  virtual uint64_t scratch_epoch() const { return 0; }

  // Fills t (activation dtype) with uniform values in [lo, hi), a pure
  // function of (seed, element index); `at` places t's elements in a bigger
  // tensor (a shard's slice). Random weights, benchmarks, synthetic KV contexts.
  virtual void fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi, const FillIndex& at = {}) = 0;

  // out[i, :] = table[ids[i], :]. table [vocab, d] (a weight dtype), ids [n] I32, out [n, d]
  virtual void embed(const Tensor& table, const Tensor& ids, const Tensor& out) = 0;
  // y = x @ w^T (+ bias). x [n, in], w [out, in] (a weight dtype), bias [out] or null, y [n, out]
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) = 0;
  // y[r] = x[r] / rms(x[r]) * weight, rows of the last dim. x,y [rows, d] (may alias), weight [d]
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) = 0;
  // x += y (same shape)
  virtual void add(const Tensor& x, const Tensor& y) = 0;
  // HF "rotate_half" RoPE in place. x [n, heads, head_dim], positions [n] I32
  virtual void rope(const Tensor& x, const Tensor& positions, const RopeParams& p) = 0;
  // x += y, then out = rmsnorm(x) * weight: a residual add fused with the
  // norm that follows it. x, y, out [rows, d] (out may alias y, not x), weight [d]
  virtual void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps,
                           const Tensor& out) = 0;
  // out = silu(gate) * up, from the merged gate/up projection.
  // gate_up [n, 2f] (each row: gate | up), out [n, f]
  virtual void silu_mul(const Tensor& gate_up, const Tensor& out) = 0;
  // An output projection with the residual add and the norm after it (the
  // o_proj and down_proj of a layer): y = in w^T (summed over the
  // tensor-parallel group), x += y, out = rmsnorm(x) * norm_w; without norm_w
  // (the last layer) only x += y. in [n, k], w [d, k], x [n, d], out [n, d]
  // (scratch for y; apart from in and x). Default: matmul, all_reduce, add_rmsnorm.
  // CUDA splits the K dimension of decode-sized batches into fp32 partial
  // products that the norm kernel adds (KINFER_SPLIT_K).
  virtual void matmul_add_rmsnorm(const Tensor& in, const Tensor& w, const Tensor& x, const Tensor* norm_w, float eps,
                                  const Tensor& out);
  // The MLP block with its residual add and the next norm:
  // y = (silu(h w_gate^T) * h w_up^T) w_down^T, then x += y and
  // out = rmsnorm(x) * norm_w as in matmul_add_rmsnorm (without norm_w out
  // holds y). h [n, d], w_gate_up [2f, d] (gate rows, then up rows),
  // w_down [d, f], scratch gate_up [n, 2f] and ffn [n, f] (ffn holds
  // silu(gate) * up afterwards), x and out [n, d] (out may alias h).
  // Default: matmul(h, w_gate_up) -> gate_up, silu_mul -> ffn,
  // matmul_add_rmsnorm(ffn, w_down). CUDA can run the MLP of small decode
  // batches of small models as one fused kernel (backend/cuda/mlp.cu, opt-in).
  virtual void mlp(const Tensor& h, const Tensor& w_gate_up, const Tensor& w_down, const Tensor& gate_up,
                   const Tensor& ffn, const Tensor& x, const Tensor* norm_w, float eps, const Tensor& out);

  // Writes k, v [n, n_kv_heads, head_dim] to the slots slot[i] = page*page_size + offset
  // ([n] I32). When a write fills the last offset of a page, that page's
  // summary is set to the mean of its page_size keys.
  virtual void kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots) = 0;
  // The attention block's input stage in one op, from the merged projection
  // qkv [n, (Hq + 2*Hkv) * head_dim] (each row: q | k | v): every q and k head
  // gets RMSNorm with q_norm / k_norm [head_dim] when those are given (Qwen3),
  // then RoPE at positions [n]; q goes to q_out [n, Hq, head_dim], k and v to
  // the KV slots [n] exactly as kv_write does (summaries of filled pages too).
  // Same results as rmsnorm + rope + kv_write on split q, k, v.
  virtual void qkv_rope_write(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                              const Tensor& positions, const RopeParams& rope, const KvLayer& kv,
                              const Tensor& slots, const Tensor& q_out) = 0;
  // Copies whole pages src[i] -> dst[i] (K, V and summary). [n] I32 each. Used by copy-on-write.
  virtual void kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst) = 0;
  // Copies rows src[i] -> dst[i] of a 2-D tensor t ([rows, width], any plain
  // dtype); src, dst [n] I32. The token pool's copy-on-write.
  virtual void copy_rows(const Tensor& t, const Tensor& src, const Tensor& dst) = 0;

  // qkv_rope_write, then attention on its q_out (one decode layer's attention
  // input stage and attention); a backend may run the two as one kernel,
  // with the same results.
  virtual void qkv_attention(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                             const Tensor& positions, const RopeParams& rope, const KvLayer& kv,
                             const Tensor& slots, const Tensor& q, const AttnBatch& batch, const AttnPolicy& policy,
                             float scale, const Tensor& out, PageSelection* sel) {
    qkv_rope_write(qkv, q_norm, k_norm, eps, positions, rope, kv, slots, q);
    attention(q, kv, batch, policy, scale, out, sel);
  }

  // Paged attention with softmax scale `scale`.
  // q, out [n, n_heads, head_dim]; GQA: query head h reads KV head h / (n_heads/n_kv_heads).
  // Decode rows follow `policy`; if `sel` is non-null the chosen pages are
  // written there (for stats and tests).
  virtual void attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch,
                         const AttnPolicy& policy, float scale, const Tensor& out,
                         PageSelection* sel) = 0;

  // Picks one token per sampled row into tokens [m] I32 from logits
  // [rows, vocab] (F32, or the activation dtype) row a.logit_row[r]:
  // kf::Sampler's semantics after its penalties (backend/sampler.h):
  // temperature, then top-k, top-p, min-p over the order (prob desc, id asc),
  // then one inverse-CDF draw with uniform[r] over the kept ids in ascending
  // id order; a row with forced[r] >= 0 emits that token. Deterministic: the
  // same inputs give the same tokens.
  virtual void sample(const Tensor& logits, const SampleArgs& a, const Tensor& tokens) = 0;
  // Applies kf::Sampler's penalties to F32 logits [m, vocab] in place; rows
  // whose penalties are all off are left untouched. token_pool [pool slots]
  // I32 holds the token of every KV slot (resolve_tokens writes it).
  virtual void apply_penalties(const Tensor& logits, const PenaltyArgs& a, const AttnBatch& batch,
                               const Tensor& token_pool) = 0;
  // Log-probabilities where the logits are (no vocabulary-sized download).
  // For each of m entries i: the log-softmax of logits row rows[i] ([rows,
  // vocab] F32, or the activation dtype) at token targets[i] goes to
  // values[i, 0] / ids[i, 0]; the k largest log-probabilities of that row
  // (descending, ties -> lower id) go to values[i, 1..k] / ids[i, 1..k].
  // A target -j-1 < 0 names the token sampled in row j of this step
  // (sampled [>= j+1] I32, what sample() wrote). rows, targets [m] I32;
  // values [m, k+1] F32, ids [m, k+1] I32; 0 <= k <= kMaxTopLogprobs.
  static constexpr int kMaxTopLogprobs = 20;
  virtual void token_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& targets,
                              const Tensor& sampled, int k, const Tensor& values, const Tensor& ids) = 0;
  // The step's input tokens ids [n] I32, in place: an entry -k-1 < 0 becomes
  // prev[k], the token sampled in row k of the previous step (so a step can be
  // launched before the previous one's tokens reach the host). Then every
  // row's token is recorded in the token pool at its KV slot:
  // token_pool[slots[i]] = ids[i] (slots [n] I32; out-of-range slots skipped).
  virtual void resolve_tokens(const Tensor& ids, const Tensor& prev, const Tensor& slots,
                              const Tensor& token_pool) = 0;

 protected:
  // Throw unless the tensors of mlp() / matmul_add_rmsnorm() fit together (the shapes above).
  static void check_mlp(const Tensor& h, const Tensor& w_gate_up, const Tensor& w_down, const Tensor& gate_up,
                        const Tensor& ffn, const Tensor& x, const Tensor* norm_w, const Tensor& out);
  static void check_projection(const char* op, const Tensor& in, const Tensor& w, const Tensor& x,
                               const Tensor* norm_w, const Tensor& out);
  // The tail both compose: y summed over the tensor-parallel group, x += y,
  // then out = rmsnorm(x) * norm_w (add_rmsnorm; y may alias out) or, without
  // norm_w, only the add.
  void add_residual(const Tensor& x, const Tensor& y, const Tensor* norm_w, float eps, const Tensor& out);
  friend void make_tp_group(const std::vector<Backend*>& ranks);
  // Joins `ranks` (all of this backend's type; ranks[i] becomes rank i) into
  // one group whose all_reduce sums over them; sets their tp_rank_/tp_size_.
  virtual void form_tp_group(const std::vector<Backend*>& ranks);

  int device_index_ = 0;
  int tp_rank_ = 0, tp_size_ = 1;
};

// Makes ranks[i] rank i of one tensor-parallel group: afterwards all_reduce
// on each sums over all of them. CUDA backends (one per GPU) join one NCCL
// communicator (NCCL_NVLS_ENABLE defaults to 0: no NVLink multicast); CPU
// backends a host group, the reference the tests compare with. Throws for
// mixed backends, a GPU named twice, or a build without NCCL.
void make_tp_group(const std::vector<Backend*>& ranks);
// Whether this build can form tensor-parallel groups of CUDA backends (NCCL).
bool cuda_tp_available();

// Downloads src (F32 or BF16, any device) into dst as F32; BF16 goes through
// `staging`, which only grows.
void download_f32(Backend& be, const Tensor& src, float* dst, std::vector<uint16_t>& staging);

std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);  // 0 = all cores
std::unique_ptr<Backend> make_cuda_backend(int device = 0);     // throws without CUDA
int cuda_device_count();  // visible GPUs; 0 without a GPU or in a build without CUDA
// Whether GPU `device` is one this build's kernels run on (sm_90: H100/H200);
// make_cuda_backend refuses the others.
bool cuda_device_supported(int device);

}  // namespace kf
