// Native chat templates against transformers' apply_chat_template (text and
// ids) on single- and multi-turn conversations: SmolLM2's ChatML (from its
// GGUF), Qwen3 with thinking on/off/unset (from its tokenizer_config.json),
// Qwen2.5's ChatML and Llama-3 (template texts in the fixture script).
#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"
#include "tokenizer_fixtures.h"

using namespace kf;

TEST(ChatTemplate, MatchesTransformers) {
  auto cases = nlohmann::json::parse(test::read_text(test::fixture_dir() + "/chat.json"));
  ASSERT_GE(cases.size(), 40u);
  int checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const Tokenizer& tok = test::tokenizer_named(c["tokenizer"].get<std::string>());
    std::vector<ChatMessage> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    ChatOptions opts;
    opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    opts.enable_thinking = c.value("enable_thinking", true);
    std::string name = c["template"].get<std::string>();
    if (name != "auto") opts.template_name = name;
    std::string text = name == "llama3"
                           ? render_chat(chat_template_by_name("llama3"), msgs, opts, "<|begin_of_text|>")
                           : tok.apply_chat_template(msgs, opts);
    EXPECT_EQ(text, c["text"].get<std::string>()) << "case " << i << " (" << c["tokenizer"] << ", " << name << ")";
    if (c.contains("ids")) {
      EXPECT_EQ(tok.encode_chat(msgs, opts), c["ids"].get<std::vector<int32_t>>()) << "case " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases.size()));
}

TEST(ChatTemplate, DetectsFamilies) {
  EXPECT_EQ(detect_chat_template("{{'<|im_start|>' + message['role']}}").name, "chatml");
  EXPECT_EQ(detect_chat_template("<|im_start|> {% if enable_thinking is defined %}").name, "qwen3");
  EXPECT_EQ(detect_chat_template("{{ '<|start_header_id|>' }}").name, "llama3");
  ChatTemplate q = detect_chat_template(
      "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
      "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}");
  EXPECT_EQ(q.name, "qwen2.5");
  EXPECT_THROW(detect_chat_template("[INST] {{ message }} [/INST]"), Error);
  EXPECT_THROW(detect_chat_template(""), Error);
  EXPECT_THROW(chat_template_by_name("vicuna"), Error);
}

TEST(ChatTemplate, Qwen3ThinkingOffAddsEmptyBlock) {
  const Tokenizer& tok = test::qwen3_tokenizer();
  ChatOptions off;
  off.enable_thinking = false;
  std::string p = tok.apply_chat_template({{"user", "hi"}}, off);
  EXPECT_EQ(p, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  auto ids = tok.encode(p, true);
  EXPECT_EQ(ids[ids.size() - 4], 151667);  // <think>
  EXPECT_EQ(ids[ids.size() - 2], 151668);  // </think>
}
