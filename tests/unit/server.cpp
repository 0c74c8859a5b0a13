// The server's pieces without sockets: the HTTP request parser, a sample's
// text (stop strings held back and cut, UTF-8 kept whole, Qwen3's reasoning
// split on a real Qwen3 tokenizer) and request validation.
#include <gtest/gtest.h>

#include "server/api.h"
#include "server/http.h"
#include "server/text.h"
#include "unit/tokenizer_fixtures.h"

using namespace kf;
using namespace kf::server;

TEST(ServerHttp, ParsesPipelinedRequestsFedByteByByte) {
  const std::string two =
      "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
      "GET /health HTTP/1.0\r\n\r\n";
  RequestParser p;
  size_t fed = 0;
  while (p.state() == RequestParser::State::Incomplete && fed < two.size()) p.feed(two.substr(fed++, 1));
  ASSERT_EQ(p.state(), RequestParser::State::Complete);
  HttpRequest a = p.take();
  EXPECT_EQ(a.method, "POST");
  EXPECT_EQ(a.path, "/v1/completions");
  EXPECT_EQ(a.query, "x=1");
  EXPECT_EQ(a.body, "hello");
  EXPECT_TRUE(a.keep_alive);
  ASSERT_NE(a.header("host"), nullptr);
  p.feed(two.substr(fed));
  ASSERT_EQ(p.state(), RequestParser::State::Complete);
  HttpRequest b = p.take();
  EXPECT_EQ(b.path, "/health");
  EXPECT_FALSE(b.keep_alive);  // HTTP/1.0
  EXPECT_EQ(p.state(), RequestParser::State::Incomplete);
}

TEST(ServerHttp, RejectsMalformedRequests) {
  auto status = [](const std::string& text, RequestParser::Limits lim = {}) {
    RequestParser p(lim);
    p.feed(text);
    return p.state() == RequestParser::State::Error ? p.error_status() : 0;
  };
  EXPECT_EQ(status("GARBAGE\r\n\r\n"), 400);
  EXPECT_EQ(status("GET nopath HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(status("GET / HTTP/2.0\r\n\r\n"), 505);
  EXPECT_EQ(status("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
  EXPECT_EQ(status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
  EXPECT_EQ(status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
  EXPECT_EQ(status("GET / HTTP/1.1\r\nbad header\r\n\r\n"), 400);
  RequestParser::Limits small;
  small.max_body = 10;
  small.max_head = 64;
  EXPECT_EQ(status("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", small), 413);
  EXPECT_EQ(status("GET / HTTP/1.1\r\nX: " + std::string(100, 'a'), small), 431);
  EXPECT_EQ(status("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 0);
}

TEST(ServerHttp, ReplyFramingAndErrorObject) {
  Reply r;
  r.status = 429;
  EXPECT_NE(reply_head(r, 12, true).find("HTTP/1.1 429 Too Many Requests\r\n"), std::string::npos);
  EXPECT_NE(reply_head(r, 12, true).find("Content-Length: 12\r\n"), std::string::npos);
  EXPECT_NE(reply_head(r, -1, false).find("Transfer-Encoding: chunked\r\n"), std::string::npos);
  EXPECT_EQ(chunk("hello"), "5\r\nhello\r\n");
  const nlohmann::json e = nlohmann::json::parse(error_body(400, "bad n", {}, "n"));
  EXPECT_EQ(e["error"]["message"], "bad n");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "n");
  EXPECT_EQ(e["error"]["code"], 400);
}

namespace {
std::string all(const std::vector<TextDelta>& ds, bool reasoning) {
  std::string s;
  for (const TextDelta& d : ds) s += reasoning ? d.reasoning : d.content;
  return s;
}
}  // namespace

// Qwen3 with thinking on: the model writes <think>..</think> then the
// answer; reasoning_content and content come apart, token by token.
TEST(ServerText, Qwen3ReasoningSplitsFromContent) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  const std::vector<int32_t> ids = tok.encode("<think>\nTwo and two make four.\n</think>\n\nThe answer is 4.", true);
  ASSERT_GE(tok.token_id("</think>"), 0);
  for (bool starts_thinking : {true, false}) {
    SampleText t(&tok, {}, true, starts_thinking);
    std::vector<TextDelta> ds;
    for (int32_t id : ids) ds.push_back(t.push(id));
    ds.push_back(t.finish());
    EXPECT_EQ(all(ds, true), "Two and two make four.\n");
    EXPECT_EQ(all(ds, false), "The answer is 4.");
    EXPECT_EQ(t.reasoning(), "Two and two make four.\n");
    EXPECT_EQ(t.content(), "The answer is 4.");
  }
  // Thinking cut by the budget mid-way: what came before </think> is reasoning.
  SampleText cut(&tok, {}, true, true);
  for (int32_t id : tok.encode("still thinking", false)) cut.push(id);
  cut.push(tok.token_id("</think>"));
  for (int32_t id : tok.encode("\n\nDone.", false)) cut.push(id);
  cut.finish();
  EXPECT_EQ(cut.reasoning(), "still thinking");
  EXPECT_EQ(cut.content(), "Done.");
  // Thinking off (the template closed it in the prompt) or no split: all content.
  SampleText plain(&tok, {}, false, true);
  for (int32_t id : ids) plain.push(id);
  plain.finish();
  EXPECT_EQ(plain.reasoning(), "");
  EXPECT_NE(plain.content().find("<think>"), std::string::npos);
}

// Stop strings: text that may start one is held back; the text ends before
// the first one, even across tokens; multi-byte characters are never split.
TEST(ServerText, StopStringsHeldBackAndCut) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  SampleText t(&tok, {"END", "é!"}, false, false);
  std::vector<TextDelta> ds;
  for (int32_t id : tok.encode("café! and more", false)) ds.push_back(t.push(id));
  EXPECT_TRUE(t.stopped());
  ds.push_back(t.finish());
  EXPECT_EQ(all(ds, false), "caf");
  SampleText u(&tok, {"END"}, false, false);
  std::string streamed;
  for (int32_t id : tok.encode("one EN two END three", false)) {
    const std::string d = u.push(id).content;
    streamed += d;
    EXPECT_EQ(std::string("one EN two ").substr(0, streamed.size()), streamed);  // never past the stop
  }
  streamed += u.finish().content;
  EXPECT_EQ(streamed, "one EN two ");
  // Without a tokenizer the text is the ids.
  SampleText ids(nullptr, {}, false, false);
  EXPECT_EQ(ids.push(12).content + ids.push(7).content + ids.finish().content, "12 7 ");
}

TEST(ServerApi, ValidatesFieldsTypesRangesAndContext) {
  ApiLimits lim;
  lim.vocab = 100;
  lim.max_model_len = 50;
  lim.max_seqs = 8;
  lim.kv_tokens = 1000;
  auto status = [&](const nlohmann::json& body, Endpoint ep = Endpoint::Completions) -> std::string {
    try {
      parse_request(ep, body, nullptr, lim);
      return "ok";
    } catch (const ApiError& e) {
      return std::to_string(e.status) + " " + e.param;
    }
  };
  using J = nlohmann::json;
  EXPECT_EQ(status(J{{"prompt", {1, 2, 3}}}), "ok");
  EXPECT_EQ(status(J{{"prompt", J::array({J{1, 2}, J{3}})}, {"n", 8}}), "ok");
  EXPECT_EQ(status(J{{"prompt", "text"}}), "400 prompt");  // no tokenizer
  EXPECT_EQ(status(J{{"prompt", {1, 200}}}), "400 prompt");
  EXPECT_EQ(status(J{{"prompt", J::array()}}), "400 prompt");
  EXPECT_EQ(status(J::array()), "400 ");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"n", "2"}}), "400 n");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"n", 9}}), "400 n");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"temperature", 2.5}}), "400 temperature");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"top_p", 0}}), "400 top_p");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"logprobs", 21}}), "400 logprobs");
  // Integral values past int64_t (found by fuzz_server: the cast was undefined) and fractions.
  EXPECT_EQ(status(J{{"prompt", {1}}, {"logprobs", 1.1e102}}), "400 logprobs");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"max_tokens", -1e30}}), "400 max_tokens");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"max_tokens", 2.5}}), "400 max_tokens");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"max_tokens", 4.0}}), "ok");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"stop", 5}}), "400 stop");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"stream", "yes"}}), "400 stream");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"kinfer", {{"attn", "bogus"}}}}), "400 kinfer.attn");
  EXPECT_EQ(status(J{{"prompt", {1}}, {"thinking_budget", 10}}), "400 thinking_budget");  // no </think>
  EXPECT_EQ(status(J{{"prompt", std::vector<int>(50, 1)}}), "400 prompt");                // over the context
  EXPECT_EQ(status(J{{"prompt", std::vector<int>(40, 1)}, {"max_tokens", 11}}), "400 max_tokens");
  EXPECT_EQ(status(J{{"prompt", std::vector<int>(40, 1)}, {"max_tokens", 10}}), "ok");
  EXPECT_EQ(status(J{{"messages", J::array()}}, Endpoint::Chat), "400 messages");
  const GenParams p = parse_request(Endpoint::Completions,
                                    J{{"prompt", {1, 2}}, {"kinfer", {{"attn", "blocktopk"}, {"topk_pages", 3}}},
                                      {"stop", J::array({"x", 7})}, {"seed", 5}, {"top_k", -1}},
                                    nullptr, lim);
  ASSERT_TRUE(p.policy.has_value());
  EXPECT_EQ(p.policy->kind, AttnKind::BlockTopK);
  EXPECT_EQ(p.policy->topk_pages, 3);
  EXPECT_EQ(p.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(p.stop_token_ids, std::vector<int>{7});
  EXPECT_TRUE(p.seed_given);
  EXPECT_EQ(p.sampling.top_k, 0);
}
