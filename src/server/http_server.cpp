#include "server/http_server.h"

#include <sys/socket.h>

// Asio 1.22 looks for co_await on clang only through libc++'s
// <experimental/coroutine>; clang with libstdc++'s <coroutine> has it too.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

#include "util/error.h"

namespace kf::server {

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

// A connection: its socket, its strand, and the waker a BodySource's notifier pulls.
struct Conn : std::enable_shared_from_this<Conn> {
  explicit Conn(tcp::socket s) : sock(std::move(s)), timer(sock.get_executor()) {}
  tcp::socket sock;
  asio::steady_timer timer;    // a deferred reply waits on it; notify() cancels it
  std::atomic<bool> woken{false};
  bool closed = false;         // the client hung up (strand only)
  uint64_t watch_gen = 0;      // the current hang-up watcher (strand only)

  // From any thread: wake the coroutine waiting for its source.
  Notifier notifier() {
    std::weak_ptr<Conn> weak = weak_from_this();
    return [weak] {
      std::shared_ptr<Conn> c = weak.lock();
      if (!c || c->woken.exchange(true)) return;
      asio::post(c->sock.get_executor(), [c] { c->timer.cancel(); });
    };
  }
  // On the strand: returns at once if woken since the last wait, else waits
  // for a wake (or `most`, a safety net).
  awaitable<void> wait(std::chrono::milliseconds most) {
    if (woken.exchange(false)) co_return;
    timer.expires_after(most);
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
  }
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions opt;
  Handler handler;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  std::atomic<int64_t> open{0}, busy{0};
  int bound_port = 0;
  bool started = false;

  // Writes all of `data`; false when the client is gone.
  static awaitable<bool> write(Conn& c, std::string_view data) {
    asio::error_code ec;
    co_await asio::async_write(c.sock, asio::buffer(data.data(), data.size()), asio::redirect_error(use_awaitable, ec));
    co_return !ec;
  }

  // While a deferred reply is pending: a readable socket that reads EOF (or
  // fails) means the client hung up. Bytes of a pipelined request end the watch.
  static awaitable<void> watch(std::shared_ptr<Conn> c, uint64_t gen) {
    asio::error_code ec;
    co_await c->sock.async_wait(tcp::socket::wait_read, asio::redirect_error(use_awaitable, ec));
    if (gen != c->watch_gen || ec == asio::error::operation_aborted) co_return;
    char b = 0;
    const ssize_t r = ec ? -1 : ::recv(c->sock.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      c->closed = true;
      c->notifier()();
    }
  }

  // Sends a reply whose body comes from its source; false when the client is gone.
  awaitable<bool> send_deferred(std::shared_ptr<Conn> c, Reply& rep, bool keep_alive) {
    const uint64_t gen = ++c->watch_gen;
    asio::co_spawn(c->sock.get_executor(), watch(c, gen), asio::detached);
    bool ok = true;
    if (rep.stream) ok = co_await write(*c, reply_head(rep, -1, keep_alive));
    std::string body, part;
    int status = rep.status;
    while (ok) {
      part.clear();
      const bool done = rep.source->poll(part, status);
      if (rep.stream) {
        if (!part.empty()) ok = co_await write(*c, chunk(part));
      } else {
        body += part;
      }
      if (done || !ok) break;
      if (c->closed) {
        ok = false;
        break;
      }
      co_await c->wait(std::chrono::milliseconds(1000));
    }
    ++c->watch_gen;  // ends the watcher (its wait is cancelled below)
    asio::error_code ec;
    c->sock.cancel(ec);
    if (!ok || c->closed) {
      rep.source->cancel();
      co_return false;
    }
    if (rep.stream) co_return co_await write(*c, last_chunk());
    rep.status = status;
    co_return co_await write(*c, reply_head(rep, static_cast<long long>(body.size()), keep_alive) + body);
  }

  awaitable<void> session(tcp::socket sock) {
    auto c = std::make_shared<Conn>(std::move(sock));
    ++open;
    struct Count {
      std::atomic<int64_t>& n;
      ~Count() { --n; }
    } count{open};
    asio::error_code ec;
    c->sock.set_option(tcp::no_delay(true), ec);
    RequestParser parser(opt.limits);
    std::vector<char> buf(16 * 1024);
    for (;;) {
      while (parser.state() == RequestParser::State::Incomplete) {
        const size_t n = co_await c->sock.async_read_some(asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
        if (ec) co_return;  // closed (or the server is stopping)
        parser.feed(std::string_view(buf.data(), n));
      }
      ++busy;
      struct Busy {
        std::atomic<int64_t>& n;
        ~Busy() { --n; }
      } busy_scope{busy};
      if (parser.state() == RequestParser::State::Error) {
        Reply r;
        r.status = parser.error_status();
        r.body = error_body(r.status, parser.error_message());
        co_await write(*c, reply_head(r, static_cast<long long>(r.body.size()), false) + r.body);
        c->sock.shutdown(tcp::socket::shutdown_both, ec);
        co_return;
      }
      HttpRequest req = parser.take();
      const bool keep = req.keep_alive;
      Reply rep;
      try {
        rep = handler(req, c->notifier());
      } catch (const std::exception& e) {  // a bug in a handler must not take the server down
        rep = Reply{};
        rep.status = 500;
        rep.body = error_body(500, e.what());
      }
      bool ok = true;
      if (rep.source) {
        ok = co_await send_deferred(c, rep, keep);
      } else {
        ok = co_await write(*c, reply_head(rep, static_cast<long long>(rep.body.size()), keep) + rep.body);
      }
      if (!ok || !keep) {
        c->sock.shutdown(tcp::socket::shutdown_both, ec);
        co_return;
      }
    }
  }

  awaitable<void> accept_loop() {
    for (;;) {
      asio::error_code ec;
      tcp::socket sock = co_await acceptor.async_accept(asio::make_strand(io), asio::redirect_error(use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        continue;  // e.g. out of file descriptors: keep serving the open ones
      }
      auto ex = sock.get_executor();
      asio::co_spawn(ex, session(std::move(sock)), asio::detached);
    }
  }
};

HttpServer::HttpServer(HttpServerOptions opt, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(opt);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  Impl& m = *impl_;
  KF_CHECK(!m.started, "http server: already started");
  asio::error_code ec;
  const asio::ip::address addr = asio::ip::make_address(m.opt.host, ec);
  KF_CHECK(!ec, "--host '{}' is not an IP address ({})", m.opt.host, ec.message());
  KF_CHECK(m.opt.port >= 0 && m.opt.port <= 65535, "--port {} is outside [0, 65535]", m.opt.port);
  const tcp::endpoint ep(addr, static_cast<unsigned short>(m.opt.port));
  m.acceptor.open(ep.protocol(), ec);
  if (!ec) m.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(ep, ec);
  if (!ec) m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  KF_CHECK(!ec, "cannot listen on {}:{}: {}", m.opt.host, m.opt.port, ec.message());
  m.bound_port = m.acceptor.local_endpoint().port();
  asio::co_spawn(m.io, m.accept_loop(), asio::detached);
  m.started = true;
  for (int i = 0; i < std::max(1, m.opt.threads); ++i) m.threads.emplace_back([&m] { m.io.run(); });
}

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::stop_accepting() {
  asio::post(impl_->io, [&m = *impl_] {
    asio::error_code ec;
    m.acceptor.close(ec);
  });
}

int64_t HttpServer::open_connections() const { return impl_->open.load(); }
int64_t HttpServer::busy_connections() const { return impl_->busy.load(); }

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.started) return;
  m.io.stop();
  for (std::thread& t : m.threads) t.join();
  m.threads.clear();
  m.started = false;
}

}  // namespace kf::server
