// kinfer tokenize / detokenize: text -> ids and pieces (optionally through the
// model's chat template), and ids -> text.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cli {
namespace {

std::string read_stdin() {
  return std::string((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
}

// A printable form of raw token bytes: control and non-UTF-8 bytes as \xNN.
std::string escape_bytes(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  CLI::App app{"Tokenize text (ids and pieces), optionally as a chat prompt", "kinfer tokenize"};
  std::string model = "default", text, system, template_name, thinking = "on";
  bool chat = false, parse_special = false, add_special = false, no_gen_prompt = false, json = false;
  app.add_option("text", text, "text to tokenize ('-' or nothing: read stdin)");
  app.add_option("--model,-m", model, "GGUF file, HF directory, tokenizer.json or 'default'");
  app.add_flag("--chat", chat, "wrap TEXT as a user message in the model's chat template");
  app.add_option("--system", system, "system message for --chat");
  app.add_option("--chat-template", template_name, "override the template: chatml, smollm2, qwen2, qwen2.5, qwen3, llama3");
  app.add_option("--thinking", thinking, "Qwen3 thinking for --chat: on or off")->check(CLI::IsMember({"on", "off"}));
  app.add_flag("--no-generation-prompt", no_gen_prompt, "do not end the chat prompt with the assistant header");
  app.add_flag("--parse-special", parse_special, "turn special-token text (<|im_end|>) into its id (always with --chat)");
  app.add_flag("--add-special", add_special, "apply the model's post-processor (e.g. a leading BOS)");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  if (text.empty() || text == "-") text = read_stdin();

  Tokenizer tok = load_tokenizer(model);
  std::string input = text;
  std::string template_used;
  if (chat) {
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", text});
    ChatOptions opts;
    opts.add_generation_prompt = !no_gen_prompt;
    opts.enable_thinking = thinking == "on";
    opts.template_name = template_name;
    template_used = tok.chat_template(template_name).name;
    input = tok.apply_chat_template(messages, opts);
    parse_special = true;
  }
  std::vector<int32_t> ids = tok.encode(input, parse_special, add_special);

  if (json) {
    nlohmann::json j = {{"model", model}, {"n_tokens", ids.size()}, {"ids", ids}};
    nlohmann::json pieces = nlohmann::json::array();
    for (int32_t id : ids) pieces.push_back(tok.token_piece(id));
    j["pieces"] = pieces;
    if (chat) {
      j["chat_template"] = template_used;
      j["prompt"] = input;
    }
    std::printf("%s\n", dump(j).c_str());
    return 0;
  }
  if (chat) std::printf("chat template: %s\nprompt:\n%s\n---\n", template_used.c_str(), input.c_str());
  for (int32_t id : ids)
    std::printf("%8d  %-24s %s\n", id, tok.token_piece(id).c_str(), escape_bytes(tok.token_bytes(id)).c_str());
  std::printf("%zu tokens\n", ids.size());
  return 0;
}

int cmd_detokenize(int argc, char** argv) {
  CLI::App app{"Turn token ids back into text", "kinfer detokenize"};
  std::string model = "default";
  std::vector<std::string> args;
  bool skip_special = false, json = false;
  app.add_option("ids", args, "token ids, separated by spaces or commas (nothing: read stdin)");
  app.add_option("--model,-m", model, "GGUF file, HF directory, tokenizer.json or 'default'");
  app.add_flag("--skip-special", skip_special, "leave special tokens (<|im_end|>, ...) out");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);

  std::string all;
  if (args.empty()) {
    all = read_stdin();
  } else {
    for (const std::string& a : args) all += a + " ";
  }
  for (char& c : all)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::vector<int32_t> ids;
  std::istringstream in(all);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KF_CHECK(used == word.size() && v >= 0 && v < (1LL << 31), "'{}' is not a token id", word);
    ids.push_back(static_cast<int32_t>(v));
  }
  Tokenizer tok = load_tokenizer(model);
  for (int32_t id : ids) KF_CHECK(id < tok.vocab_size(), "token id {} is outside the vocabulary ({})", id, tok.vocab_size());
  std::string text = tok.decode(ids, skip_special);
  if (json) {
    std::printf("%s\n", dump({{"model", model}, {"n_tokens", ids.size()}, {"text", text}}).c_str());
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

}  // namespace kf::cli
