#include "server/text.h"

#include <fmt/format.h>

#include <algorithm>

#include "tokenizer/tokenizer.h"

namespace kf::server {

SampleText::SampleText(const Tokenizer* tok, std::vector<std::string> stop, bool split_reasoning, bool thinking)
    : tok_(tok), stop_(std::move(stop)) {
  if (tok_) dec_ = std::make_unique<StreamDecoder>(*tok_, true);
  for (const std::string& s : stop_) hold_ = std::max(hold_, s.empty() ? 0 : s.size() - 1);
  if (split_reasoning && tok_) {
    think_start_ = tok_->token_id("<think>");
    think_end_ = tok_->token_id("</think>");
    if (think_end_ >= 0 && thinking) channel_ = 0;
  }
}
SampleText::~SampleText() = default;
SampleText::SampleText(SampleText&&) noexcept = default;
SampleText& SampleText::operator=(SampleText&&) noexcept = default;

// Appends a decoded piece to a channel: drops leading newlines, cuts at the
// first stop string, and returns what is final (all but the bytes that may
// begin a stop string, never splitting a UTF-8 sequence; everything if final).
void SampleText::add(int c, std::string piece, TextDelta& out, bool final) {
  Channel& ch = ch_[c];
  if (!stopped_) {
    if (!ch.started) {
      const size_t first = piece.find_first_not_of('\n');
      piece.erase(0, first == std::string::npos ? piece.size() : first);
      ch.started = !piece.empty();
    }
    const size_t before = ch.text.size();
    ch.text += piece;
    size_t cut = std::string::npos;
    for (const std::string& s : stop_) {
      const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
      const size_t at = ch.text.find(s, from);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      ch.text.resize(cut);
      stopped_ = true;
    }
  }
  size_t ready = ch.text.size();
  if (!final && !stopped_) {
    ready = ready > hold_ ? ready - hold_ : 0;
    while (ready > ch.sent && ready < ch.text.size() && (static_cast<unsigned char>(ch.text[ready]) & 0xC0) == 0x80)
      --ready;  // not inside a UTF-8 sequence
  }
  if (ready > ch.sent) {
    (c == 0 ? out.reasoning : out.content) += ch.text.substr(ch.sent, ready - ch.sent);
    ch.sent = ready;
  }
}

TextDelta SampleText::push(int token) {
  TextDelta out;
  if (stopped_) return out;
  if (token == think_start_ || token == think_end_) {
    const std::string rest = dec_->flush();
    if (!rest.empty()) add(channel_, rest, out, false);
    add(channel_, {}, out, true);  // the channel ends: nothing is held back
    channel_ = token == think_start_ ? 0 : 1;
    return out;
  }
  add(channel_, tok_ ? dec_->push(token) : fmt::format("{} ", token), out, false);
  return out;
}

TextDelta SampleText::finish() {
  TextDelta out;
  add(channel_, dec_ && !stopped_ ? dec_->flush() : std::string(), out, true);
  for (int c = 0; c < 2; ++c) add(c, {}, out, true);
  return out;
}

}  // namespace kf::server
