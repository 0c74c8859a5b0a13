#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenizer.h"

#include <pcre2.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace kf {
namespace {

// A segment of the input: [begin, end) and whether the splitter matched it.
struct Segment {
  size_t begin, end;
  bool match;
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// One compiled pattern; owns the PCRE2 code.
class Regex {
 public:
  explicit Regex(const std::string& pattern) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
    if (!code_)
      fail("pre-tokenizer regex '{}' does not compile at offset {}: {}", pattern, err_off,
           pcre2_message(err));
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping, non-empty matches of the pattern in a valid UTF-8 subject.
  void find_all(std::string_view s, pcre2_match_data* md, std::vector<Segment>& out) const {
    auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos < s.size()) {
      int rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // pathological backtracking: the interpreter uses the heap
        rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0)
        fail("pre-tokenizer regex '{}' failed on a {}-byte piece: {}", pattern_, s.size(), pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step over one character
        size_t i = b;
        if (i < s.size()) utf8::next(s, i);
        pos = i;
        continue;
      }
      out.push_back({b, e, true});
      pos = e;
    }
  }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

// Rust's char::is_numeric (what HF's Digits pre-tokenizer tests): Nd, Nl, No.
bool is_numeric(char32_t cp) {
  auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

PreTokenizer::Behavior parse_behavior(const std::string& name) {
  using B = PreTokenizer::Behavior;
  if (name == "Isolated") return B::Isolated;
  if (name == "Removed") return B::Removed;
  if (name == "MergedWithPrevious") return B::MergedWithPrevious;
  if (name == "MergedWithNext") return B::MergedWithNext;
  if (name == "Contiguous") return B::Contiguous;
  fail("unknown pre-tokenizer split behavior '{}'", name);
}

// PCRE2 source for a literal string.
std::string quote_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

struct PreTokenizer::Step {
  enum class Kind { Regex, Digits } kind = Kind::Regex;
  std::unique_ptr<Regex> regex;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool individual_digits = false;

  // Splits one piece into its segments (covering it), as HF's split would.
  void segments(std::string_view s, pcre2_match_data* md, std::vector<Segment>& hits,
                std::vector<Segment>& out) const {
    hits.clear();
    if (kind == Kind::Regex) {
      regex->find_all(s, md, hits);
    } else {
      for (size_t i = 0; i < s.size();) {
        size_t b = i;
        bool num = is_numeric(utf8::next(s, i));
        if (!num) continue;
        if (!individual_digits && !hits.empty() && hits.back().end == b) {
          hits.back().end = i;
        } else {
          hits.push_back({b, i, true});
        }
      }
    }
    // Fill the gaps so the segments cover s.
    size_t pos = 0;
    for (const Segment& h : hits) {
      if (h.begin > pos) out.push_back({pos, h.begin, invert});
      out.push_back({h.begin, h.end, !invert});
      pos = h.end;
    }
    if (pos < s.size()) out.push_back({pos, s.size(), invert});
  }

  void apply(std::string_view s, pcre2_match_data* md, std::vector<Segment>& hits,
             std::vector<Segment>& segs, std::vector<std::string_view>& out) const {
    segs.clear();
    segments(s, md, hits, segs);
    auto view = [&](size_t b, size_t e) { return s.substr(b, e - b); };
    switch (behavior) {
      case Behavior::Isolated:
        for (const Segment& g : segs) out.push_back(view(g.begin, g.end));
        break;
      case Behavior::Removed:
        for (const Segment& g : segs)
          if (!g.match) out.push_back(view(g.begin, g.end));
        break;
      case Behavior::MergedWithPrevious: {
        // A match joins the piece before it.
        size_t start = 0;
        for (const Segment& g : segs) {
          if (!g.match) continue;
          out.push_back(view(start, g.end));
          start = g.end;
        }
        if (start < s.size()) out.push_back(view(start, s.size()));
        break;
      }
      case Behavior::MergedWithNext: {
        // A match starts a piece that runs up to the next match.
        size_t start = 0;
        for (const Segment& g : segs) {
          if (g.match && g.begin > start) {
            out.push_back(view(start, g.begin));
            start = g.begin;
          }
        }
        if (start < s.size()) out.push_back(view(start, s.size()));
        break;
      }
      case Behavior::Contiguous: {
        // Adjacent matches fuse into one piece.
        for (size_t k = 0; k < segs.size(); ++k) {
          if (segs[k].match && k > 0 && segs[k - 1].match) {
            out.back() = view(segs[k - 1].begin, segs[k].end);
            segs[k].begin = segs[k - 1].begin;
          } else {
            out.push_back(view(segs[k].begin, segs[k].end));
          }
        }
        break;
      }
    }
  }
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

void PreTokenizer::add_regex_split(const std::string& pattern, Behavior behavior, bool invert) {
  auto step = std::make_unique<Step>();
  step->kind = Step::Kind::Regex;
  step->regex = std::make_unique<Regex>(pattern);
  step->behavior = behavior;
  step->invert = invert;
  steps_.push_back(std::move(step));
}

void PreTokenizer::add_digits(bool individual) {
  auto step = std::make_unique<Step>();
  step->kind = Step::Kind::Digits;
  step->individual_digits = individual;
  step->behavior = individual ? Behavior::Isolated : Behavior::Contiguous;
  steps_.push_back(std::move(step));
}

void PreTokenizer::add_from_json(const nlohmann::json& j) {
  KF_CHECK(j.is_object() && j.contains("type"), "pre_tokenizer entry without a type: {}", j.dump());
  std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& sub : j.at("pretokenizers")) add_from_json(sub);
  } else if (type == "Split") {
    const auto& pat = j.at("pattern");
    std::string regex;
    if (pat.contains("Regex")) {
      regex = pat.at("Regex").get<std::string>();
    } else if (pat.contains("String")) {
      regex = quote_literal(pat.at("String").get<std::string>());
    } else {
      fail("pre_tokenizer Split without a Regex or String pattern: {}", pat.dump());
    }
    add_regex_split(regex, parse_behavior(j.value("behavior", std::string("Isolated"))), j.value("invert", false));
  } else if (type == "Digits") {
    add_digits(j.value("individual_digits", false));
  } else if (type == "ByteLevel") {
    byte_level_ = true;
    add_prefix_space_ = add_prefix_space_ || j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) add_regex_split(kGpt2Regex, Behavior::Isolated, false);
  } else {
    fail("pre_tokenizer type '{}' is not supported (kinfer reads byte-level BPE tokenizers)", type);
  }
}

PreTokenizer PreTokenizer::from_hf_json(const nlohmann::json& j) {
  PreTokenizer p;
  if (!j.is_null()) p.add_from_json(j);
  return p;
}

PreTokenizer PreTokenizer::from_gguf_name(std::string_view name) {
  PreTokenizer p;
  p.byte_level_ = true;
  if (name == "gpt2" || name == "default") {
    p.add_regex_split(kGpt2Regex, Behavior::Isolated, false);
  } else if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell" ||
             name == "command-r") {
    p.add_digits(true);
    p.add_regex_split(kGpt2Regex, Behavior::Isolated, false);
  } else if (name == "qwen2" || name == "deepseek-r1-qwen") {
    p.add_regex_split(kQwen2Regex, Behavior::Isolated, false);
  } else if (name == "llama-bpe" || name == "llama3") {
    p.add_regex_split(kLlama3Regex, Behavior::Isolated, false);
  } else {
    fail("GGUF tokenizer.ggml.pre '{}' is not supported (known: gpt2, smollm, starcoder, refact, "
         "codeshell, command-r, qwen2, deepseek-r1-qwen, llama-bpe)",
         name);
  }
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  // One match block for the whole call (the code has no capture groups that matter).
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(pcre2_match_data_create(1, nullptr),
                                                                     pcre2_match_data_free);
  KF_CHECK(md, "out of memory creating PCRE2 match data");
  std::vector<std::string_view> cur{text}, next;
  std::vector<Segment> hits, segs;
  for (const auto& step : steps_) {
    next.clear();
    for (std::string_view piece : cur) step->apply(piece, md.get(), hits, segs, next);
    std::swap(cur, next);
  }
  for (std::string_view piece : cur)
    if (!piece.empty()) out.push_back(piece);
}

}  // namespace kf
