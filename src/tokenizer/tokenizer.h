// Tokenizer: byte-level BPE that gives exactly HF `tokenizers`' ids, loaded
// from an HF tokenizer.json (+ tokenizer_config.json beside it) or from GGUF
// metadata (tokenizer.ggml.*), with special tokens, decoding, streaming
// decoding and the chat templates of the models kinfer serves.
//
// encode(text) follows HF's pipeline: invalid UTF-8 becomes U+FFFD (as
// Python's decode(errors="replace") does before HF sees the text); added
// tokens are cut out of the raw text (special ones only with parse_special);
// the rest is normalised (NFC for Qwen), pre-tokenized by regex, and BPE'd.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_template.h"

namespace kf {

class GgufFile;
class Checkpoint;

// One entry of tokenizer.json's added_tokens (GGUF: control and user-defined tokens).
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;     // control token: only parsed with parse_special, skipped by decode(skip_special)
  bool lstrip = false;      // the match swallows whitespace on its left
  bool rstrip = false;      // ... and on its right
  bool single_word = false; // only matches when not inside a word
  bool normalized = false;  // matched against the normalised text
};

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // tokenizer.json; reads tokenizer_config.json (chat_template, bos/eos) and
  // generation_config.json (eos ids) from the same directory when present.
  static Tokenizer from_hf_json(const std::string& path);
  // The same from in-memory JSON texts (config may be empty); `name` appears in errors.
  static Tokenizer from_hf_json_text(std::string_view tokenizer_json, std::string_view config_json,
                                     const std::string& name);
  static Tokenizer from_gguf(const GgufFile& gguf);

  // Ids of `text` (raw bytes; invalid UTF-8 is replaced). Special tokens in the
  // text become their ids only when parse_special; add_special applies the
  // model's post-processor (e.g. Llama-3's leading <|begin_of_text|>).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = false, bool add_special = false) const;
  // Text of `ids` (invalid UTF-8 across token boundaries becomes U+FFFD, as HF does).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The token as stored in the vocabulary (byte-level form, e.g. "Ġthe"); "" if out of range.
  std::string token_piece(int32_t id) const;
  // The raw bytes a token decodes to (may be part of a UTF-8 sequence).
  const std::string& token_bytes(int32_t id) const;
  // Id of a vocabulary piece or added token text ("<|im_end|>", "Ġthe"), or -1.
  int32_t token_id(std::string_view piece) const;

  int32_t vocab_size() const;                   // including added tokens
  int32_t bos_id() const;                       // -1 when the model has none
  const std::vector<int32_t>& eos_ids() const;  // every end-of-generation token, first = eos
  bool is_eos(int32_t id) const;
  bool is_special(int32_t id) const;
  bool add_bos() const;  // whether add_special prepends bos
  const std::vector<AddedToken>& added_tokens() const;

  // Chat: the template text from the metadata ("" if none), the native
  // template chosen from it, and the rendered prompt (encode it with
  // parse_special = true, as encode_chat does).
  const std::string& chat_template_text() const;
  ChatTemplate chat_template(const std::string& override_name = "") const;
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, const ChatOptions& opts = {}) const;
  std::vector<int32_t> encode_chat(const std::vector<ChatMessage>& messages, const ChatOptions& opts = {}) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The tokenizer of a checkpoint: GGUF metadata, or tokenizer.json in an HF directory.
Tokenizer load_tokenizer_for(const Checkpoint& ckpt);
// A model spec as --model takes it (GGUF file, HF directory, tokenizer.json, "default").
Tokenizer load_tokenizer(const std::string& model_spec);

// Incremental detokenizer for generation: push ids, print what it returns.
// Output never splits a UTF-8 code point; bytes that can no longer become
// valid are emitted as U+FFFD, exactly as decode() of all ids would.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true) : tok_(tok), skip_special_(skip_special) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (as U+FFFD)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace kf
