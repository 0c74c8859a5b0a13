// HttpServer: HTTP/1.1 over TCP on standalone Asio, event-driven: a few I/O
// threads run every connection as a coroutine on its own strand, so an open
// stream costs a socket and a coroutine frame, not a thread (1,000 open
// streams do not starve new requests). Keep-alive and pipelined requests;
// a reply whose body comes from a BodySource is sent when the source is done
// (or streamed as chunks); while it waits, the socket is watched for the
// client hanging up, which cancels the source. The only file that includes
// Asio (build time: see README, Serving).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "server/http.h"

namespace kf::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = any free port (see HttpServer::port)
  int threads = 2;  // I/O threads
  RequestParser::Limits limits;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions opt, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws kf::Error when the address is taken), then
  // serves on the I/O threads.
  void start();
  int port() const;  // the bound port
  // Closes the listening socket: no new connections (open ones go on).
  void stop_accepting();
  // Connections open, and those with a request being handled or replied to.
  int64_t open_connections() const;
  int64_t busy_connections() const;
  // Closes every connection and joins the I/O threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kf::server
