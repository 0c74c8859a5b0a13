#include "tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace kf {
namespace {

// Rust's char::is_whitespace (the White_Space property), used by lstrip/rstrip.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c == '_') return true;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

// Last code point of a valid string (0 when empty).
char32_t last_char(std::string_view s) {
  if (s.empty()) return 0;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return utf8::next(s, i);
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  return true;
}

std::string utf8proc_apply(std::string_view s, int options) {
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  if (n < 0) fail("unicode normalisation failed: {}", utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, void (*)(void*)> owned(out, std::free);
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

std::string normalize(const std::vector<NormStep>& steps, std::string_view text) {
  std::string s(text);
  for (NormStep step : steps) {
    switch (step) {
      case NormStep::NFC:
        if (!is_ascii(s)) s = utf8proc_apply(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        break;
      case NormStep::NFD:
        if (!is_ascii(s)) s = utf8proc_apply(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        break;
      case NormStep::NFKC:
        if (!is_ascii(s)) s = utf8proc_apply(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
        break;
      case NormStep::NFKD:
        if (!is_ascii(s)) s = utf8proc_apply(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
        break;
      case NormStep::Lowercase: {
        std::string low;
        for (size_t i = 0; i < s.size();)
          utf8::append(low, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(utf8::next(s, i)))));
        s = std::move(low);
        break;
      }
    }
  }
  return s;
}

// A piece of the input: plain text to tokenize, or one added token.
struct Chunk {
  std::string_view text;
  int32_t id;  // -1 for plain text
};

// Cuts the added tokens of one table out of `text` (leftmost, then longest
// match), as HF's AddedVocabulary does, honouring lstrip/rstrip/single_word.
void split_added(const Tokenizer::Impl& t, bool normalized_pass, bool parse_special, std::string_view text,
                 std::vector<Chunk>& out) {
  const auto& by_first = normalized_pass ? t.norm_by_first : t.raw_by_first;
  const auto& first = normalized_pass ? t.norm_first : t.raw_first;
  size_t chunk_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    uint8_t b = static_cast<uint8_t>(text[i]);
    if (!first[b]) {
      ++i;
      continue;
    }
    const AddedToken* hit = nullptr;
    for (int32_t k : by_first[b]) {
      const AddedToken& a = t.added[k];
      if (a.special && !parse_special) continue;
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word) {
        size_t e = i + a.content.size();
        size_t j = e;
        bool word_before = i > 0 && is_word_char(last_char(text.substr(0, i)));
        bool word_after = e < text.size() && is_word_char(utf8::next(text, j));
        if (word_before || word_after) continue;
      }
      hit = &a;
      break;
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->content.size();
    if (hit->lstrip) {
      while (start > chunk_start) {
        size_t p = start - 1;
        while (p > chunk_start && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!is_white_space(utf8::next(text, q))) break;
        start = p;
      }
    }
    if (hit->rstrip) {
      while (stop < text.size()) {
        size_t q = stop;
        if (!is_white_space(utf8::next(text, q))) break;
        stop = q;
      }
    }
    if (start > chunk_start) out.push_back({text.substr(chunk_start, start - chunk_start), -1});
    out.push_back({text.substr(start, stop - start), hit->id});
    chunk_start = i = stop;
  }
  if (chunk_start < text.size()) out.push_back({text.substr(chunk_start), -1});
}

}  // namespace

void Tokenizer::Impl::finish() {
  piece_to_id.clear();
  piece_to_id.reserve(pieces.size());
  for (size_t id = 0; id < pieces.size(); ++id)
    if (!pieces[id].empty()) piece_to_id.emplace(pieces[id], static_cast<int32_t>(id));
  special.assign(pieces.size(), 0);
  for (auto& by : raw_by_first) by.clear();
  for (auto& by : norm_by_first) by.clear();
  raw_first.fill(false);
  norm_first.fill(false);
  for (size_t k = 0; k < added.size(); ++k) {
    const AddedToken& a = added[k];
    if (a.special) special[a.id] = 1;
    if (a.content.empty()) continue;
    // Normalised tokens are matched in their normalised form.
    std::string content = a.normalized ? normalize(normalizer, a.content) : a.content;
    uint8_t b = static_cast<uint8_t>(content[0]);
    (a.normalized ? norm_by_first : raw_by_first)[b].push_back(static_cast<int32_t>(k));
    (a.normalized ? norm_first : raw_first)[b] = true;
    if (a.normalized && content != a.content) {
      added[k].content = content;
      bytes[a.id] = content;  // HF decodes a normalised added token to its normalised text
    }
  }
  for (auto* table : {&raw_by_first, &norm_by_first})
    for (auto& by : *table)
      std::stable_sort(by.begin(), by.end(),
                       [&](int32_t x, int32_t y) { return added[x].content.size() > added[y].content.size(); });
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::vector<int32_t> Tokenizer::encode(std::string_view raw, bool parse_special, bool add_special) const {
  KF_CHECK(impl_, "encode on an empty Tokenizer");
  const Impl& t = *impl_;
  std::string clean;
  std::string_view text = raw;
  if (!utf8::is_valid(raw)) {
    clean = utf8::sanitize(raw);
    text = clean;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special) ids.insert(ids.end(), t.prefix_ids.begin(), t.prefix_ids.end());

  std::vector<Chunk> chunks, sub;
  std::vector<std::string_view> pieces;
  split_added(t, false, parse_special, text, chunks);
  for (const Chunk& c : chunks) {
    if (c.id >= 0) {
      ids.push_back(c.id);
      continue;
    }
    std::string owned;
    std::string_view body = c.text;
    if (!t.normalizer.empty()) {
      owned = normalize(t.normalizer, c.text);
      body = owned;
    }
    if (t.pre.add_prefix_space() && !body.starts_with(' ')) {
      std::string spaced(1, ' ');
      spaced.append(body);
      owned = std::move(spaced);
      body = owned;
    }
    sub.clear();
    split_added(t, true, parse_special, body, sub);
    for (const Chunk& s : sub) {
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      pieces.clear();
      t.pre.split(s.text, pieces);
      for (std::string_view p : pieces) t.bpe.encode_piece(p, ids);
    }
  }
  if (add_special) ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  KF_CHECK(impl_, "decode on an empty Tokenizer");
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;  // as HF: unknown ids decode to nothing
    if (skip_special && impl_->special[id]) continue;
    bytes += impl_->bytes[id];
  }
  return utf8::is_valid(bytes) ? bytes : utf8::sanitize(bytes);
}

std::string Tokenizer::token_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->pieces[id];
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string empty;
  if (id < 0 || id >= vocab_size()) return empty;
  return impl_->bytes[id];
}

int32_t Tokenizer::token_id(std::string_view piece) const {
  auto it = impl_->piece_to_id.find(std::string(piece));
  return it == impl_->piece_to_id.end() ? -1 : it->second;
}

int32_t Tokenizer::vocab_size() const { return impl_ ? static_cast<int32_t>(impl_->pieces.size()) : 0; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
const std::vector<int32_t>& Tokenizer::eos_ids() const { return impl_->eos; }
bool Tokenizer::is_eos(int32_t id) const {
  return std::find(impl_->eos.begin(), impl_->eos.end(), id) != impl_->eos.end();
}
bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->special[id]; }
bool Tokenizer::add_bos() const {
  return impl_->bos >= 0 && !impl_->prefix_ids.empty() && impl_->prefix_ids.front() == impl_->bos;
}
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::string& Tokenizer::chat_template_text() const { return impl_->chat_template; }

ChatTemplate Tokenizer::chat_template(const std::string& override_name) const {
  if (!override_name.empty()) return chat_template_by_name(override_name);
  return detect_chat_template(impl_->chat_template);
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, const ChatOptions& opts) const {
  std::string bos_text = impl_->bos >= 0 ? impl_->pieces[impl_->bos] : "";
  return render_chat(chat_template(opts.template_name), messages, opts, bos_text);
}

std::vector<int32_t> Tokenizer::encode_chat(const std::vector<ChatMessage>& messages, const ChatOptions& opts) const {
  return encode(apply_chat_template(messages, opts), /*parse_special=*/true);
}

std::string StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tok_.vocab_size()) return "";
  if (skip_special_ && tok_.is_special(id)) return "";
  pending_ += tok_.token_bytes(id);
  size_t hold = utf8::incomplete_tail(pending_);
  std::string_view ready = std::string_view(pending_).substr(0, pending_.size() - hold);
  std::string out = utf8::is_valid(ready) ? std::string(ready) : utf8::sanitize(ready);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8::sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace kf
