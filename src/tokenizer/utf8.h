// UTF-8 helpers for the tokenizer: decoding with validation, the replacement
// of invalid input the way Python's bytes.decode(errors="replace") and Rust's
// String::from_utf8_lossy do it (one U+FFFD per maximal invalid subpart), and
// GPT-2's byte <-> printable-character table used by byte-level BPE.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kf::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Length of the valid code point starting at s[i] (1..4), or 0 when the bytes
// there are not a complete, valid sequence.
size_t valid_length(std::string_view s, size_t i);
// Length of the maximal subpart at s[i] that starts a valid sequence but is cut
// short or broken (at least 1): the bytes one U+FFFD replaces.
size_t invalid_length(std::string_view s, size_t i);

// True when s is entirely valid UTF-8.
bool is_valid(std::string_view s);
// s with every invalid subpart replaced by U+FFFD (returns s unchanged when valid).
std::string sanitize(std::string_view s);

// Decodes the code point at s[i] of a VALID string and advances i.
char32_t next(std::string_view s, size_t& i);
void append(std::string& out, char32_t cp);

// Bytes at the end of s that begin a code point still waiting for continuation
// bytes (0..3); a streaming decoder holds them back.
size_t incomplete_tail(std::string_view s);

// True for the characters Python's str.isspace() accepts (used by templates' trim/strip).
bool is_python_space(char32_t cp);
// Python's str.strip() with no arguments on valid UTF-8.
std::string_view python_strip(std::string_view s);

// GPT-2 byte-level alphabet: each byte maps to one printable code point.
struct ByteLevelTable {
  std::array<char32_t, 256> byte_to_cp{};
  ByteLevelTable();
  // Code point -> byte, or -1 when cp is not in the alphabet.
  int cp_to_byte(char32_t cp) const;

 private:
  std::array<int16_t, 256 + 68> cp_to_byte_{};  // the alphabet ends at U+0143
};
const ByteLevelTable& byte_level_table();

// Maps a byte-level token string back to raw bytes; false when a character is
// outside the alphabet (then `out` is unspecified).
bool byte_level_decode(std::string_view token, std::string& out);

}  // namespace kf::utf8
