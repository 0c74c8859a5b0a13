// SampleText: one sample's text as its tokens arrive, for streaming and for
// the final reply. UTF-8 is never split; text that could be the start of a
// stop string is held back until it is known not to be one, and the text
// ends before the first stop string (what OpenAI returns). With
// split_reasoning (a Qwen3-style model whose vocabulary has <think> and
// </think>), tokens before </think> are reasoning and the rest content; the
// markers themselves and the newlines right after each of them are dropped.
// Without a tokenizer the text is the token ids, "12 7 99 ".
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace kf {
class Tokenizer;
class StreamDecoder;
}

namespace kf::server {

struct TextDelta {
  std::string reasoning, content;
  bool empty() const { return reasoning.empty() && content.empty(); }
};

class SampleText {
 public:
  // thinking: the sample starts inside its thinking (Qwen3 with thinking on).
  SampleText(const Tokenizer* tok, std::vector<std::string> stop, bool split_reasoning, bool thinking);
  ~SampleText();
  SampleText(SampleText&&) noexcept;
  SampleText& operator=(SampleText&&) noexcept;

  // Feeds a generated token; returns the text that is now final.
  TextDelta push(int token);
  // The sample ended: everything still held back (up to a stop string).
  TextDelta finish();
  const std::string& content() const { return ch_[1].text; }
  const std::string& reasoning() const { return ch_[0].text; }
  bool stopped() const { return stopped_; }  // a stop string was found

 private:
  struct Channel {
    std::string text;   // final text (cut at a stop string)
    size_t sent = 0;    // bytes of text already returned
    bool started = false;  // a non-newline byte arrived (leading newlines are dropped)
  };
  void add(int channel, std::string piece, TextDelta& out, bool final);

  const Tokenizer* tok_;
  std::unique_ptr<StreamDecoder> dec_;
  std::vector<std::string> stop_;
  size_t hold_ = 0;  // longest stop string - 1
  int think_start_ = -1, think_end_ = -1;
  int channel_ = 1;  // 0 reasoning, 1 content
  bool stopped_ = false;
  Channel ch_[2];
};

}  // namespace kf::server
