// HTTP/1.1 for the server, without any I/O: an incremental request parser
// (request line, headers, a Content-Length body; no chunked request bodies),
// the reply a handler gives back, and how a reply is written on the wire.
// http_server.h runs it over sockets.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kf::server {

struct HttpRequest {
  std::string method;  // GET, POST, ...
  std::string path;    // the target without its query string
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  bool keep_alive = true;  // HTTP/1.1 default, or Connection: keep-alive on 1.0
  const std::string* header(std::string_view name) const;  // lower-case name; null if absent
};

// Parses requests from bytes as they arrive. feed() consumes what it can;
// once a request is complete, take() moves it out and parsing resumes with
// the bytes left over (pipelining).
class RequestParser {
 public:
  struct Limits {
    size_t max_head = 64 * 1024;          // request line + headers
    size_t max_body = 32 * 1024 * 1024;   // Content-Length at most
  };
  RequestParser() = default;
  explicit RequestParser(Limits limits) : limits_(limits) {}

  enum class State { Incomplete, Complete, Error };
  // Appends bytes and parses; Error sets status (400, 411, 413, 431, 501, 505) and message.
  State feed(std::string_view bytes);
  State state() const { return state_; }
  HttpRequest take();  // the complete request; parsing of the buffered rest starts
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_; }
  bool buffered() const { return !buf_.empty(); }

 private:
  State parse();
  State fail(int status, std::string message);
  Limits limits_;
  std::string buf_;
  State state_ = State::Incomplete;
  bool have_head_ = false;
  size_t body_len_ = 0;
  HttpRequest req_;
  int error_status_ = 0;
  std::string error_;
};

// Where a deferred reply's body comes from (a request the engine works on).
// The connection calls poll() on its own thread whenever it is woken (the
// source wakes it through the notifier it was made with) and cancel() when
// the client went away before the body was done. Thread-safe.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Appends the bytes ready now to `out`; true once the body is complete.
  // `status` may be changed until then (a non-streaming reply that failed).
  virtual bool poll(std::string& out, int& status) = 0;
  virtual void cancel() = 0;
};

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // the whole body (no source)
  // A deferred body: streamed as chunks (Transfer-Encoding: chunked) as it
  // comes when `stream`, else sent whole with the status poll() left.
  std::shared_ptr<BodySource> source;
  bool stream = false;
};

// A thread-safe way to wake the connection that will poll a reply's source.
using Notifier = std::function<void()>;
// The application: a reply for each request. Runs on an I/O thread: it must
// not block (work goes to the engine, whose progress arrives through a source).
using Handler = std::function<Reply(const HttpRequest&, const Notifier&)>;

const char* status_text(int status);
// OpenAI's error object: {"error": {"message", "type", "param", "code"}};
// type defaults by status (invalid_request_error, authentication_error,
// not_found_error, rate_limit_error, internal_error, ...), code = status.
std::string error_body(int status, std::string_view message, std::string_view type = {},
                       std::string_view param = {});
// The status line and headers of a reply ("Content-Length: n" when
// content_length >= 0, else chunked).
std::string reply_head(const Reply& r, long long content_length, bool keep_alive);
// One chunk of a chunked body (an empty `data` gives nothing: use last_chunk()).
std::string chunk(std::string_view data);
inline const char* last_chunk() { return "0\r\n\r\n"; }

}  // namespace kf::server
