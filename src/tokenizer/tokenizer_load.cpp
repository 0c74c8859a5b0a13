// The tokenizer.json / tokenizer_config.json and GGUF loaders.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer_impl.h"
#include "util/error.h"
#include "util/file.h"

namespace kf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Ids beyond this are taken as corrupt input rather than allocated for.
constexpr int64_t kMaxVocab = 1 << 21;

// Texts of the tokens that end a generation when the model has them.
constexpr const char* kEndOfGeneration[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                                            "<|eom_id|>"};

std::string read_text_file(const fs::path& p) {
  std::optional<std::string> text = kf::read_file(p.string());
  KF_CHECK(text, "cannot open {}", p.string());
  return std::move(*text);
}

json parse_json(std::string_view text, const std::string& name) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", name, e.what());
  }
}

void add_eos(Tokenizer::Impl& t, int32_t id) {
  if (id < 0 || id >= static_cast<int32_t>(t.pieces.size())) return;
  if (std::find(t.eos.begin(), t.eos.end(), id) == t.eos.end()) t.eos.push_back(id);
}

void add_known_eos(Tokenizer::Impl& t) {
  for (const char* text : kEndOfGeneration) {
    auto it = t.piece_to_id.find(text);
    if (it != t.piece_to_id.end() && t.special[it->second]) add_eos(t, it->second);
  }
}

// tokenizer_config.json's token fields: "text" or {"content": "text"} or null.
std::string token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template}.
std::string chat_template_from(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_array())
    for (const auto& e : j)
      if (e.value("name", "") == "default" && e.contains("template")) return e["template"].get<std::string>();
  return "";
}

void parse_normalizer(const json& j, std::vector<NormStep>& out) {
  if (j.is_null()) return;
  std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& sub : j.at("normalizers")) parse_normalizer(sub, out);
  } else if (type == "NFC") {
    out.push_back(NormStep::NFC);
  } else if (type == "NFD") {
    out.push_back(NormStep::NFD);
  } else if (type == "NFKC") {
    out.push_back(NormStep::NFKC);
  } else if (type == "NFKD") {
    out.push_back(NormStep::NFKD);
  } else if (type == "Lowercase") {
    out.push_back(NormStep::Lowercase);
  } else {
    fail("normalizer '{}' is not supported", type);
  }
}

// Special tokens before and after "$A" in a TemplateProcessing "single" template.
void parse_post_processor(const json& j, Tokenizer::Impl& t) {
  if (j.is_null()) return;
  std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& sub : j.at("processors")) parse_post_processor(sub, t);
    return;
  }
  if (type != "TemplateProcessing") return;  // ByteLevel and the like leave the ids alone
  bool after = false;
  for (const auto& piece : j.at("single")) {
    if (piece.contains("Sequence")) {
      after = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) continue;
    std::string name = piece["SpecialToken"].at("id").get<std::string>();
    const auto& st = j.at("special_tokens").at(name);
    for (const auto& id : st.at("ids")) (after ? t.suffix_ids : t.prefix_ids).push_back(id.get<int32_t>());
  }
}

}  // namespace

Tokenizer Tokenizer::from_hf_json_text(std::string_view tokenizer_json, std::string_view config_json,
                                       const std::string& name) {
  auto t = std::make_unique<Impl>();
  t->name = name;
  json j = parse_json(tokenizer_json, name);
  try {
    const json& model = j.at("model");
    std::string type = model.value("type", "BPE");
    KF_CHECK(type == "BPE", "{}: model type '{}' is not supported (byte-level BPE only)", name, type);
    KF_CHECK(!model.value("byte_fallback", false), "{}: byte_fallback BPE (SentencePiece style) is not supported",
             name);
    // A token id: an integer (a float's cast would be undefined past int64_t) in [0, kMaxVocab).
    auto token_id = [&](const json& v, const std::string& what) {
      KF_CHECK(v.is_number_integer(), "{}: {} must be an integer (got {})", name, what, v.dump());
      const int64_t id = v.get<int64_t>();
      KF_CHECK(id >= 0 && id < kMaxVocab, "{}: {} {} is out of range", name, what, id);
      return id;
    };
    // Vocabulary: model.vocab plus added tokens (which may have ids beyond it).
    std::vector<std::string> vocab;
    for (const auto& [piece, id_j] : model.at("vocab").items()) {
      const int64_t id = token_id(id_j, fmt::format("vocab id of '{}'", piece));
      if (static_cast<size_t>(id) >= vocab.size()) vocab.resize(id + 1);
      vocab[id] = piece;
    }
    std::vector<std::pair<std::string, std::string>> merges;
    for (const auto& m : model.at("merges")) {
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        KF_CHECK(sp != std::string::npos, "{}: merge '{}' has no space", name, s);
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else {
        KF_CHECK(m.is_array() && m.size() == 2, "{}: bad merge {}", name, m.dump());
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }
    t->bpe = BpeModel(vocab, merges, model.value("ignore_merges", false));
    t->pieces = vocab;
    for (const auto& a : j.value("added_tokens", json::array())) {
      AddedToken tok;
      tok.id = static_cast<int32_t>(token_id(a.at("id"), "added token id"));
      tok.content = a.at("content").get<std::string>();
      tok.special = a.value("special", false);
      tok.lstrip = a.value("lstrip", false);
      tok.rstrip = a.value("rstrip", false);
      tok.single_word = a.value("single_word", false);
      tok.normalized = a.value("normalized", !tok.special);
      if (static_cast<size_t>(tok.id) >= t->pieces.size()) t->pieces.resize(tok.id + 1);
      t->pieces[tok.id] = tok.content;
      t->added.push_back(tok);
    }
    parse_normalizer(j.value("normalizer", json()), t->normalizer);
    t->pre = PreTokenizer::from_hf_json(j.value("pre_tokenizer", json()));
    KF_CHECK(t->pre.has_byte_level(), "{}: not a byte-level BPE (no ByteLevel pre_tokenizer)", name);
    parse_post_processor(j.value("post_processor", json()), *t);
  } catch (const json::exception& e) {
    fail("{}: unexpected tokenizer.json layout: {}", name, e.what());
  }
  // Decoded bytes: model tokens through the byte alphabet, added tokens as their text.
  t->bytes.resize(t->pieces.size());
  for (size_t id = 0; id < t->pieces.size(); ++id)
    t->bytes[id] = static_cast<int32_t>(id) < t->bpe.size() ? t->bpe.token_bytes(static_cast<int32_t>(id)) : "";
  for (const AddedToken& a : t->added)
    if (t->bytes[a.id].empty()) t->bytes[a.id] = a.content;
  t->finish();

  if (!config_json.empty()) {
    json c = parse_json(config_json, name + " (tokenizer_config.json)");
    KF_CHECK(c.is_object(), "{}: tokenizer_config.json is not an object", name);
    std::string bos, eos;
    try {
      t->chat_template = chat_template_from(c.value("chat_template", json()));
      bos = token_text(c.value("bos_token", json()));
      eos = token_text(c.value("eos_token", json()));
    } catch (const json::exception& e) {
      fail("{}: unexpected tokenizer_config.json layout: {}", name, e.what());
    }
    if (!bos.empty() && t->piece_to_id.count(bos)) t->bos = t->piece_to_id[bos];
    if (!eos.empty() && t->piece_to_id.count(eos)) add_eos(*t, t->piece_to_id[eos]);
  }
  if (t->bos < 0 && !t->prefix_ids.empty()) t->bos = t->prefix_ids.front();
  add_known_eos(*t);
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::from_hf_json(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) p /= "tokenizer.json";
  std::string text = read_text_file(p);
  fs::path cfg = p.parent_path() / "tokenizer_config.json";
  std::string config = fs::exists(cfg) ? read_text_file(cfg) : "";
  Tokenizer tok = from_hf_json_text(text, config, p.string());
  // generation_config.json's eos_token_id (an id or a list) also ends generation.
  fs::path gen = p.parent_path() / "generation_config.json";
  if (fs::exists(gen)) {
    json g = parse_json(read_text_file(gen), gen.string());
    json e = g.value("eos_token_id", json());
    if (e.is_number_integer()) add_eos(*tok.impl_, e.get<int32_t>());
    if (e.is_array())
      for (const auto& id : e)
        if (id.is_number_integer()) add_eos(*tok.impl_, id.get<int32_t>());
  }
  return tok;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& g) {
  auto t = std::make_unique<Impl>();
  t->name = g.path();
  std::string model = g.get_str_or("tokenizer.ggml.model", "");
  KF_CHECK(model == "gpt2", "{}: tokenizer.ggml.model '{}' is not supported (byte-level BPE 'gpt2' only)", g.path(),
           model);
  std::vector<std::string> tokens = g.get_str_array("tokenizer.ggml.tokens");
  std::vector<int32_t> types;
  if (g.has("tokenizer.ggml.token_type")) types = g.get_i32_array("tokenizer.ggml.token_type");
  KF_CHECK(types.empty() || types.size() == tokens.size(), "{}: {} token types for {} tokens", g.path(),
           types.size(), tokens.size());
  std::vector<std::pair<std::string, std::string>> merges;
  for (const std::string& m : g.get_str_array("tokenizer.ggml.merges")) {
    size_t sp = m.find(' ');
    KF_CHECK(sp != std::string::npos, "{}: merge '{}' has no space", g.path(), m);
    merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  std::string pre = g.get_str_or("tokenizer.ggml.pre", "gpt2");

  // Control (3) and user-defined (4) tokens are added tokens; BPE never makes them.
  std::vector<std::string> vocab = tokens;
  for (size_t id = 0; id < tokens.size(); ++id) {
    int32_t type = types.empty() ? 1 : types[id];
    if (type != 3 && type != 4) continue;
    AddedToken a;
    a.id = static_cast<int32_t>(id);
    a.content = tokens[id];
    a.special = type == 3;
    t->added.push_back(a);
    vocab[id].clear();
  }
  t->bpe = BpeModel(vocab, merges, pre == "llama-bpe" || pre == "llama3");
  t->pieces = tokens;
  t->pre = PreTokenizer::from_gguf_name(pre);
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") t->normalizer.push_back(NormStep::NFC);  // as Qwen's tokenizer.json
  t->bytes.resize(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) t->bytes[id] = t->bpe.token_bytes(static_cast<int32_t>(id));
  for (const AddedToken& a : t->added) t->bytes[a.id] = a.content;
  t->finish();

  auto id_key = [&](const char* key) -> int32_t {
    if (!g.has(key)) return -1;
    int64_t v = g.get_i64(key);
    return v >= 0 && v < static_cast<int64_t>(tokens.size()) ? static_cast<int32_t>(v) : -1;
  };
  t->bos = id_key("tokenizer.ggml.bos_token_id");
  add_eos(*t, id_key("tokenizer.ggml.eos_token_id"));
  add_eos(*t, id_key("tokenizer.ggml.eot_token_id"));
  add_eos(*t, id_key("tokenizer.ggml.eom_token_id"));
  add_known_eos(*t);
  if (t->bos >= 0 && g.get_bool_or("tokenizer.ggml.add_bos_token", false)) t->prefix_ids.push_back(t->bos);
  int32_t eos = t->eos.empty() ? -1 : t->eos.front();
  if (eos >= 0 && g.get_bool_or("tokenizer.ggml.add_eos_token", false)) t->suffix_ids.push_back(eos);
  t->chat_template = g.get_str_or("tokenizer.chat_template", "");
  return Tokenizer(std::move(t));
}

Tokenizer load_tokenizer_for(const Checkpoint& ckpt) {
  if (ckpt.gguf()) return Tokenizer::from_gguf(*ckpt.gguf());
  return Tokenizer::from_hf_json(ckpt.path());
}

Tokenizer load_tokenizer(const std::string& model_spec) {
  std::string spec = model_spec == "default" ? resolve_default_model() : model_spec;
  fs::path p(spec);
  if (fs::is_directory(p) || p.extension() == ".json") return Tokenizer::from_hf_json(spec);
  KF_CHECK(fs::exists(p), "model '{}' not found (a GGUF file, an HF directory, tokenizer.json or 'default')", spec);
  return Tokenizer::from_gguf(GgufFile(spec));
}

}  // namespace kf
