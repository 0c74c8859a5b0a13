#include "server/http.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kf::server {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Whether a comma-separated header value holds `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  const std::string v = lower(value);
  size_t at = 0;
  while (at <= v.size()) {
    const size_t end = std::min(v.find(',', at), v.size());
    if (trim(std::string_view(v).substr(at, end - at)) == token) return true;
    at = end + 1;
  }
  return false;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

RequestParser::State RequestParser::fail(int status, std::string message) {
  state_ = State::Error;
  error_status_ = status;
  error_ = std::move(message);
  return state_;
}

RequestParser::State RequestParser::feed(std::string_view bytes) {
  if (state_ == State::Error) return state_;
  buf_.append(bytes);
  if (state_ == State::Complete) return state_;
  return parse();
}

RequestParser::State RequestParser::parse() {
  if (!have_head_) {
    // Tolerate empty lines before a request (RFC 9112 2.2).
    size_t lead = 0;
    while (lead + 1 < buf_.size() && buf_[lead] == '\r' && buf_[lead + 1] == '\n') lead += 2;
    if (lead) buf_.erase(0, lead);
    const size_t end = buf_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (buf_.size() > limits_.max_head) return fail(431, "request headers too large");
      return state_ = State::Incomplete;
    }
    if (end > limits_.max_head) return fail(431, "request headers too large");
    const std::string_view head(buf_.data(), end);
    const size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return fail(400, "malformed request line");
    req_ = HttpRequest{};
    req_.method = std::string(line.substr(0, sp1));
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (req_.method.empty() || !std::all_of(req_.method.begin(), req_.method.end(), is_token_char))
      return fail(400, "malformed request method");
    if (target.empty() || target.front() != '/' || target.find(' ') != std::string_view::npos)
      return fail(400, "malformed request target");
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
      if (version.substr(0, 5) == "HTTP/") return fail(505, "HTTP version not supported");
      return fail(400, "malformed request line");
    }
    const size_t q = target.find('?');
    req_.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) req_.query = std::string(target.substr(q + 1));
    req_.keep_alive = version == "HTTP/1.1";
    size_t at = line_end == std::string_view::npos ? head.size() : line_end + 2;
    bool have_length = false;
    while (at < head.size()) {
      const size_t e = std::min(head.find("\r\n", at), head.size());
      const std::string_view h = head.substr(at, e - at);
      at = e + 2;
      const size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0 ||
          !std::all_of(h.begin(), h.begin() + colon, is_token_char))
        return fail(400, "malformed header line");
      std::string name = lower(h.substr(0, colon));
      std::string value(trim(h.substr(colon + 1)));
      if (name == "content-length") {
        size_t n = 0;
        const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
        if (ec != std::errc() || p != value.data() + value.size() || value.empty())
          return fail(400, "malformed Content-Length");
        if (have_length && n != body_len_) return fail(400, "conflicting Content-Length headers");
        if (n > limits_.max_body) return fail(413, fmt::format("request body over {} bytes", limits_.max_body));
        body_len_ = n;
        have_length = true;
      } else if (name == "transfer-encoding") {
        return fail(411, "chunked request bodies are not supported: send Content-Length");
      } else if (name == "connection") {
        if (has_token(value, "close")) req_.keep_alive = false;
        else if (has_token(value, "keep-alive")) req_.keep_alive = true;
      }
      req_.headers.emplace_back(std::move(name), std::move(value));
    }
    if (!have_length) body_len_ = 0;
    buf_.erase(0, end + 4);
    have_head_ = true;
  }
  if (buf_.size() < body_len_) return state_ = State::Incomplete;
  req_.body = buf_.substr(0, body_len_);
  buf_.erase(0, body_len_);
  return state_ = State::Complete;
}

HttpRequest RequestParser::take() {
  HttpRequest r = std::move(req_);
  req_ = HttpRequest{};
  have_head_ = false;
  body_len_ = 0;
  state_ = State::Incomplete;
  parse();
  return r;
}

const char* status_text(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string error_body(int status, std::string_view message, std::string_view type, std::string_view param) {
  if (type.empty()) {
    type = status == 401   ? "authentication_error"
           : status == 404 ? "not_found_error"
           : status == 429 ? "rate_limit_error"
           : status == 503 ? "service_unavailable"
           : status >= 500 ? "internal_error"
                           : "invalid_request_error";
  }
  nlohmann::json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}};
  if (!param.empty()) e["param"] = param;
  return nlohmann::json{{"error", e}}.dump();
}

std::string reply_head(const Reply& r, long long content_length, bool keep_alive) {
  std::string h = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\n", r.status, status_text(r.status), r.content_type);
  if (content_length >= 0) h += fmt::format("Content-Length: {}\r\n", content_length);
  else h += "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n";
  for (const auto& [k, v] : r.headers) h += fmt::format("{}: {}\r\n", k, v);
  h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return h;
}

std::string chunk(std::string_view data) {
  if (data.empty()) return {};
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

}  // namespace kf::server
