#include "tokenizer/chat_template.h"

#include <fmt/format.h>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace kf {
namespace {

constexpr const char* kSmolLM2System = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
constexpr const char* kQwen25System = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
constexpr const char* kQwen2System = "You are a helpful assistant.";

// Python's str.lstrip/rstrip/strip with a set of characters ('\n' here).
std::string_view lstrip_char(std::string_view s, char c) {
  while (!s.empty() && s.front() == c) s.remove_prefix(1);
  return s;
}
std::string_view rstrip_char(std::string_view s, char c) {
  while (!s.empty() && s.back() == c) s.remove_suffix(1);
  return s;
}

// Jinja string-literal escapes we may meet inside a default system prompt.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
  }
  return out;
}

// The literal text after "<|im_start|>system" + newline up to "<|im_end|>" in
// one string literal of the template: a ChatML template's default system prompt.
std::string find_default_system(std::string_view jinja) {
  const std::string_view head = "<|im_start|>system";
  for (size_t at = jinja.find(head); at != std::string_view::npos; at = jinja.find(head, at + 1)) {
    size_t p = at + head.size();
    if (jinja.substr(p, 2) == "\\n") {
      p += 2;
    } else if (jinja.substr(p, 1) == "\n") {
      p += 1;
    } else {
      continue;
    }
    size_t end = jinja.find("<|im_end|>", p);
    if (end == std::string_view::npos) break;
    std::string_view text = jinja.substr(p, end - p);
    if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) continue;
    return unescape(text);
  }
  return "";
}

void render_chatml(const ChatTemplate& t, const std::vector<ChatMessage>& msgs, const ChatOptions& opts,
                   std::string& out) {
  if (!t.default_system.empty() && !msgs.empty() && msgs[0].role != "system")
    out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
  for (const ChatMessage& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (opts.add_generation_prompt) out += "<|im_start|>assistant\n";
}

bool is_tool_response(const std::string& s) {
  std::string_view v = s;
  return v.starts_with("<tool_response>") && v.ends_with("</tool_response>");
}

void render_qwen3(const std::vector<ChatMessage>& msgs, const ChatOptions& opts, std::string& out) {
  const size_t n = msgs.size();
  if (n > 0 && msgs[0].role == "system") out += "<|im_start|>system\n" + msgs[0].content + "<|im_end|>\n";
  // The last real user query: assistant turns after it keep their reasoning.
  size_t last_query = n == 0 ? 0 : n - 1;
  for (size_t k = n; k-- > 0;) {
    if (msgs[k].role == "user" && !is_tool_response(msgs[k].content)) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "user" || (m.role == "system" && i > 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string_view content = m.content, reasoning;
      size_t close = content.find("</think>");
      if (close != std::string_view::npos) {
        std::string_view all = m.content;
        content = lstrip_char(all.substr(all.rfind("</think>") + 8), '\n');
        std::string_view before = rstrip_char(all.substr(0, close), '\n');
        size_t open = before.rfind("<think>");
        reasoning = lstrip_char(open == std::string_view::npos ? before : before.substr(open + 7), '\n');
      }
      out += "<|im_start|>assistant\n";
      if (i > last_query && (i + 1 == n || !reasoning.empty())) {
        out += "<think>\n";
        out += rstrip_char(lstrip_char(reasoning, '\n'), '\n');
        out += "\n</think>\n\n";
        out += lstrip_char(content, '\n');
      } else {
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == n || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (opts.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!opts.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
}

void render_llama3(const std::vector<ChatMessage>& msgs, const ChatOptions& opts, std::string_view bos,
                   std::string& out) {
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n";
    out += utf8::python_strip(msgs[i].content);
    out += "<|eot_id|>";
  }
  if (opts.add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

}  // namespace

ChatTemplate chat_template_by_name(std::string_view name) {
  if (name == "chatml") return {"chatml", ChatFormat::ChatML, ""};
  if (name == "smollm2") return {"smollm2", ChatFormat::ChatML, kSmolLM2System};
  if (name == "qwen2") return {"qwen2", ChatFormat::ChatML, kQwen2System};
  if (name == "qwen2.5") return {"qwen2.5", ChatFormat::ChatML, kQwen25System};
  if (name == "qwen3") return {"qwen3", ChatFormat::Qwen3, ""};
  if (name == "llama3") return {"llama3", ChatFormat::Llama3, ""};
  std::string known;
  for (const char* n : kChatTemplateNames) known += std::string(known.empty() ? "" : ", ") + n;
  fail("unknown chat template '{}' (known: {})", name, known);
}

ChatTemplate detect_chat_template(std::string_view jinja) {
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) return chat_template_by_name("llama3");
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    if (jinja.find("enable_thinking") != std::string_view::npos || jinja.find("</think>") != std::string_view::npos)
      return chat_template_by_name("qwen3");
    ChatTemplate t = chat_template_by_name("chatml");
    t.default_system = find_default_system(jinja);
    if (t.default_system == kSmolLM2System) t.name = "smollm2";
    if (t.default_system == kQwen25System) t.name = "qwen2.5";
    if (t.default_system == kQwen2System) t.name = "qwen2";
    return t;
  }
  if (jinja.empty()) fail("the model has no chat template; pass one by name (--chat-template chatml|qwen3|llama3|...)");
  fail("unrecognised chat template (not ChatML, Qwen3 or Llama-3); pass one by name with --chat-template. "
       "It begins: {}",
       jinja.substr(0, 120));
}

std::string render_chat(const ChatTemplate& t, const std::vector<ChatMessage>& messages, const ChatOptions& opts,
                        std::string_view bos_text) {
  std::string out;
  switch (t.format) {
    case ChatFormat::ChatML:
      render_chatml(t, messages, opts, out);
      break;
    case ChatFormat::Qwen3:
      render_qwen3(messages, opts, out);
      break;
    case ChatFormat::Llama3:
      render_llama3(messages, opts, bos_text, out);
      break;
  }
  return out;
}

}  // namespace kf
