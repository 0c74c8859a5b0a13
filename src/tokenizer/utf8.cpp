#include "tokenizer/utf8.h"

namespace kf::utf8 {
namespace {

// Expected sequence length for a lead byte (0 = never a lead byte), and the
// allowed range of the second byte (Unicode table 3-7, well-formed sequences).
struct Lead {
  int len;
  uint8_t lo, hi;
};

Lead lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes after s[i] that continue a well-formed sequence (capped at len-1).
size_t matched_continuations(std::string_view s, size_t i, const Lead& l) {
  size_t n = 0;
  for (int k = 1; k < l.len && i + k < s.size(); ++k) {
    uint8_t c = static_cast<uint8_t>(s[i + k]);
    uint8_t lo = k == 1 ? l.lo : 0x80, hi = k == 1 ? l.hi : 0xBF;
    if (c < lo || c > hi) break;
    ++n;
  }
  return n;
}

}  // namespace

size_t valid_length(std::string_view s, size_t i) {
  Lead l = lead_info(static_cast<uint8_t>(s[i]));
  if (l.len == 0) return 0;
  if (l.len == 1) return 1;
  return matched_continuations(s, i, l) == static_cast<size_t>(l.len - 1) ? l.len : 0;
}

size_t invalid_length(std::string_view s, size_t i) {
  Lead l = lead_info(static_cast<uint8_t>(s[i]));
  if (l.len <= 1) return 1;
  return 1 + matched_continuations(s, i, l);
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = valid_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    size_t n = valid_length(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      append(out, kReplacement);
      i += invalid_length(s, i);
    }
  }
  return out;
}

char32_t next(std::string_view s, size_t& i) {
  auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  char32_t c = b(0);
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    c = ((c & 0x1F) << 6) | (b(1) & 0x3F);
    i += 2;
  } else if (c < 0xF0) {
    c = ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    i += 3;
  } else {
    c = ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    i += 4;
  }
  return c;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_tail(std::string_view s) {
  // A sequence is at most 4 bytes, so only a lead among the last 3 bytes can be waiting.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    size_t i = s.size() - back;
    uint8_t b = static_cast<uint8_t>(s[i]);
    if (b >= 0x80 && b < 0xC0) continue;  // continuation byte: look further back
    Lead l = lead_info(b);
    if (l.len <= 1) return 0;
    bool waiting = static_cast<size_t>(l.len) > back && matched_continuations(s, i, l) == back - 1;
    return waiting ? back : 0;
  }
  return 0;
}

bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string_view python_strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t j = begin;
    if (!is_python_space(next(s, j))) break;
    begin = j;
  }
  size_t end = begin;
  for (size_t i = begin; i < s.size();) {
    if (!is_python_space(next(s, i))) end = i;
  }
  return s.substr(begin, end - begin);
}

ByteLevelTable::ByteLevelTable() {
  // Printable bytes keep their code point; the rest get 256, 257, ... in byte order.
  char32_t extra = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_to_cp[b] = printable ? static_cast<char32_t>(b) : extra++;
  }
  cp_to_byte_.fill(-1);
  for (int b = 0; b < 256; ++b) cp_to_byte_[byte_to_cp[b]] = static_cast<int16_t>(b);
}

int ByteLevelTable::cp_to_byte(char32_t cp) const {
  return cp < cp_to_byte_.size() ? cp_to_byte_[cp] : -1;
}

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

bool byte_level_decode(std::string_view token, std::string& out) {
  const ByteLevelTable& t = byte_level_table();
  out.clear();
  if (!is_valid(token)) return false;
  for (size_t i = 0; i < token.size();) {
    char32_t cp = next(token, i);
    int b = t.cp_to_byte(cp);
    if (b < 0) return false;
    out += static_cast<char>(b);
  }
  return true;
}

}  // namespace kf::utf8
