// Parity with HF tokenizers on the fixture corpus (2,000+ strings: prose,
// code, LaTeX, digits, CJK, Arabic, emoji, combining marks, invalid UTF-8,
// the data sets) for SmolLM2 (GGUF vocabulary), Qwen3 (tokenizer.json) and a
// small Llama-3-style tokenizer.json (ignore_merges, BOS, NFKC, strip flags):
// ids with and without special-token parsing, decode, streaming decode.
#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/utf8.h"
#include "tokenizer_fixtures.h"

using namespace kf;
using kf::test::show_ids;

namespace {

struct Mismatches {
  int count = 0;
  std::string first;
  void add(size_t line, const std::string& what, const std::string& detail) {
    if (count++ < 8) first += "line " + std::to_string(line) + " " + what + ": " + detail + "\n";
  }
};

void check_parity(const std::string& name, bool add_special = false) {
  const Tokenizer& tok = test::tokenizer_named(name);
  auto corpus = test::read_jsonl_gz(test::fixture_dir() + "/corpus.jsonl.gz");
  auto expect = test::read_jsonl_gz(test::fixture_dir() + "/" + name + "_ids.jsonl.gz");
  ASSERT_EQ(corpus.size(), expect.size());
  ASSERT_GE(corpus.size(), 2000u);
  Mismatches ids_special, ids_plain, dec, dec_skip, stream;
  size_t total_tokens = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string input = test::corpus_input(corpus[i]);
    const std::string text = utf8::sanitize(input);  // what HF saw (Python replaced invalid bytes)
    const auto& e = expect[i];
    auto want = e["ids"].get<std::vector<int32_t>>();
    auto want_plain = e.contains("ids_plain") ? e["ids_plain"].get<std::vector<int32_t>>() : want;
    std::string want_dec = e.value("dec", text);
    std::string want_dec_skip = e.value("dec_skip", want_dec);
    total_tokens += want.size();

    auto got = tok.encode(input, /*parse_special=*/true, add_special);
    if (got != want) ids_special.add(i, "ids", "want " + show_ids(want) + "\n  got  " + show_ids(got));
    auto got_plain = tok.encode(input, /*parse_special=*/false, add_special);
    if (got_plain != want_plain)
      ids_plain.add(i, "ids_plain", "want " + show_ids(want_plain) + "\n  got  " + show_ids(got_plain));
    std::string d = tok.decode(want, false);
    if (d != want_dec) dec.add(i, "decode", "want '" + want_dec + "' got '" + d + "'");
    std::string ds = tok.decode(want, true);
    if (ds != want_dec_skip) dec_skip.add(i, "decode(skip_special)", "want '" + want_dec_skip + "' got '" + ds + "'");
    StreamDecoder sd(tok, /*skip_special=*/true);
    std::string streamed;
    for (int32_t id : want) {
      std::string part = sd.push(id);
      if (!utf8::is_valid(part)) stream.add(i, "stream", "emitted invalid UTF-8");
      streamed += part;
    }
    streamed += sd.flush();
    if (streamed != want_dec_skip) stream.add(i, "stream", "want '" + want_dec_skip + "' got '" + streamed + "'");
  }
  EXPECT_GT(total_tokens, 100000u);
  EXPECT_EQ(ids_special.count, 0) << ids_special.first;
  EXPECT_EQ(ids_plain.count, 0) << ids_plain.first;
  EXPECT_EQ(dec.count, 0) << dec.first;
  EXPECT_EQ(dec_skip.count, 0) << dec_skip.first;
  EXPECT_EQ(stream.count, 0) << stream.first;
}

}  // namespace

TEST(TokenizerParity, Qwen3MatchesHF) { check_parity("qwen3"); }
TEST(TokenizerParity, SmolLM2GgufMatchesHF) { check_parity("smollm2"); }
TEST(TokenizerParity, Llama3StyleMatchesHF) { check_parity("llama3tiny", /*add_special=*/true); }

TEST(Tokenizer, Llama3StyleMetadata) {
  const Tokenizer& tok = test::llama3tiny_tokenizer();
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_TRUE(tok.is_eos(1));  // <|end_of_text|>
  EXPECT_TRUE(tok.is_eos(2));  // <|eot_id|>
  auto ids = tok.encode("a  <lstrip>b", false, true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(tok.decode(ids, true), "a<lstrip>b");  // lstrip swallowed the spaces, as in HF
}

TEST(Tokenizer, Qwen3Metadata) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 151669);
  EXPECT_EQ(tok.bos_id(), -1);
  ASSERT_FALSE(tok.eos_ids().empty());
  EXPECT_EQ(tok.eos_ids()[0], 151645);  // <|im_end|>
  EXPECT_TRUE(tok.is_eos(151643));      // <|endoftext|>
  EXPECT_TRUE(tok.is_special(151644));
  EXPECT_FALSE(tok.is_special(151667));  // <think> is an added, non-special token
  EXPECT_EQ(tok.token_id("<think>"), 151667);
  EXPECT_EQ(tok.token_piece(14990), "hello");
  EXPECT_EQ(tok.chat_template(tok.chat_template_text().empty() ? "qwen3" : "").name, "qwen3");
  EXPECT_FALSE(tok.add_bos());
}

TEST(Tokenizer, SmolLM2Metadata) {
  const Tokenizer& tok = test::smollm2_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  ASSERT_FALSE(tok.eos_ids().empty());
  EXPECT_EQ(tok.eos_ids()[0], 2);
  EXPECT_TRUE(tok.is_eos(0));  // <|endoftext|>
  EXPECT_EQ(tok.token_piece(2), "<|im_end|>");
  ChatTemplate t = tok.chat_template();
  EXPECT_EQ(t.name, "smollm2");
  EXPECT_EQ(t.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST(Tokenizer, SpecialTokensOnlyWhenAsked) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  auto with = tok.encode("<|im_start|>user", true);
  ASSERT_FALSE(with.empty());
  EXPECT_EQ(with[0], 151644);
  auto without = tok.encode("<|im_start|>user", false);
  for (int32_t id : without) EXPECT_FALSE(tok.is_special(id));
  EXPECT_EQ(tok.decode(without), "<|im_start|>user");
}

TEST(Tokenizer, StreamDecoderHoldsPartialCodePoints) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  // Byte tokens of "é" (0xC3 0xA9) and "😀" (4 bytes), pushed one at a time.
  std::string text = "é😀";
  std::vector<int32_t> ids;
  for (unsigned char c : text) {
    std::string one(1, static_cast<char>(c));
    // The single-byte token of each byte.
    for (int32_t id = 0; id < tok.vocab_size(); ++id)
      if (tok.token_bytes(id) == one) {
        ids.push_back(id);
        break;
      }
  }
  ASSERT_EQ(ids.size(), text.size());
  StreamDecoder sd(tok);
  std::vector<std::string> outs;
  for (int32_t id : ids) outs.push_back(sd.push(id));
  EXPECT_EQ(outs[0], "");
  EXPECT_EQ(outs[1], "é");
  EXPECT_EQ(outs[2], "");
  EXPECT_EQ(outs[3], "");
  EXPECT_EQ(outs[4], "");
  EXPECT_EQ(outs[5], "😀");
  EXPECT_EQ(sd.flush(), "");
  // A lead byte followed by ASCII: the broken byte becomes U+FFFD at once.
  StreamDecoder sd2(tok);
  EXPECT_EQ(sd2.push(ids[2]), "");
  EXPECT_EQ(sd2.push(tok.encode("a")[0]), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(sd2.push(ids[2]), "");
  EXPECT_EQ(sd2.flush(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, Utf8Replacement) {
  // Python: b"a\xf0\x9f\x98b\xff\xed\xa0\x80c".decode("utf-8", "replace")
  EXPECT_EQ(utf8::sanitize("a\xf0\x9f\x98" "b\xff\xed\xa0\x80" "c"),
            "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "c");
  EXPECT_EQ(utf8::incomplete_tail("ab\xe2\x82"), 2u);
  EXPECT_EQ(utf8::incomplete_tail("ab\xe2\x82\xac"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("\xff"), 0u);
}

TEST(Tokenizer, BadInputIsAnError) {
  EXPECT_THROW(Tokenizer::from_hf_json_text("{", "", "bad.json"), Error);
  EXPECT_THROW(Tokenizer::from_hf_json_text(R"({"model": {"type": "Unigram"}})", "", "u.json"), Error);
  EXPECT_THROW(Tokenizer::from_hf_json("/nonexistent/tokenizer.json"), Error);
  const char* bad_merge = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]},
                              "pre_tokenizer": {"type": "ByteLevel"}})";
  EXPECT_THROW(Tokenizer::from_hf_json_text(bad_merge, "", "m.json"), Error);
  // Ids must be integers: a float's cast to an integer is undefined past its range.
  const char* float_id = R"({"model": {"type": "BPE", "vocab": {"a": 1e100}, "merges": []},
                             "pre_tokenizer": {"type": "ByteLevel"}})";
  expect_error([&] { Tokenizer::from_hf_json_text(float_id, "", "f.json"); }, {"f.json", "vocab id of 'a'", "1e+100"});
  const char* float_added = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                "added_tokens": [{"id": 2.5, "content": "<x>"}],
                                "pre_tokenizer": {"type": "ByteLevel"}})";
  expect_error([&] { Tokenizer::from_hf_json_text(float_added, "", "g.json"); }, {"g.json", "added token id", "2.5"});
}
