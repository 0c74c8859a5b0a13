// Native chat templates (no Jinja): each reproduces one family's Jinja
// template output exactly for role/content conversations.
//   chatml   <|im_start|>role\ncontent<|im_end|>\n ...; an optional default
//            system prompt when the first message is not a system one
//            (SmolLM2: "You are a helpful AI assistant named SmolLM, trained
//            by Hugging Face"; Qwen2/2.5: "You are Qwen, created by Alibaba
//            Cloud. You are a helpful assistant.").
//   qwen3    ChatML; earlier assistant turns lose their <think> blocks, the
//            turns after the last user message keep them; the generation
//            prompt gets an empty "<think>\n\n</think>\n\n" when thinking is off.
//   llama3   <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n
//            content.strip()<|eot_id|> ...
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace kf {

struct ChatMessage {
  std::string role;  // system, user, assistant, tool
  std::string content;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = true;   // Qwen3 only
  std::string template_name;     // "" = the model's; else a kChatTemplateNames entry
};

enum class ChatFormat { ChatML, Qwen3, Llama3 };

struct ChatTemplate {
  std::string name;             // chatml, smollm2, qwen2.5, qwen3, llama3
  ChatFormat format = ChatFormat::ChatML;
  std::string default_system;   // ChatML: inserted when the first message is not system
};

inline constexpr const char* kChatTemplateNames[] = {"chatml", "smollm2", "qwen2", "qwen2.5", "qwen3", "llama3"};

// The template for a name above; throws kf::Error listing the names otherwise.
ChatTemplate chat_template_by_name(std::string_view name);
// Recognises a Jinja template text from model metadata (ChatML with its
// default system prompt, Qwen3, Llama-3); throws kf::Error when unknown.
ChatTemplate detect_chat_template(std::string_view jinja);

// bos_text: the BOS token's text (Llama-3 starts the prompt with it).
std::string render_chat(const ChatTemplate& t, const std::vector<ChatMessage>& messages, const ChatOptions& opts,
                        std::string_view bos_text);

}  // namespace kf
