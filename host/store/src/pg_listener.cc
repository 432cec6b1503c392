#include "pg_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

#include <pqxx/pqxx>

#include "pg_pool.h"

namespace kiln::store::postgres {

namespace {

class Receiver : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& conn, std::function<void()> on_notify)
      : pqxx::notification_receiver(conn, kWorkChannel), on_notify_(std::move(on_notify)) {}
  void operator()(const std::string&, int) override { on_notify_(); }

 private:
  std::function<void()> on_notify_;
};

}  // namespace

// The LISTEN connection and its receiver (which must go first).
struct Listener::Connection {
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<Receiver> receiver;
  ~Connection() { receiver.reset(); }
};

Result<std::unique_ptr<Listener>> Listener::start(const std::string& url) {
  std::unique_ptr<Listener> listener(new Listener(url));
  if (listener->wake_fd_ < 0) {
    return makeError(ErrorCode::kInternal, "cannot create the wake-up eventfd");
  }
  auto conn = connect(url, {});
  if (!conn.ok()) return conn.error();
  auto c = std::make_unique<Connection>();
  c->conn = std::move(conn).value();
  try {
    c->receiver = std::make_unique<Receiver>(*c->conn, [l = listener.get()] { l->bump(); });
  } catch (...) {
    return classifyCurrentException("listening for work", false, url).error;
  }
  listener->thread_ = std::thread(&Listener::run, listener.get(), std::move(c));
  return listener;
}

Listener::Listener(std::string url)
    : url_(std::move(url)), wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Listener::~Listener() {
  stopping_ = true;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Listener::bump() {
  {
    std::lock_guard lock(mu_);
    ++generation_;
  }
  cv_.notify_all();
}

void Listener::wakeLocal() {
  bump();
}

void Listener::wait(std::chrono::milliseconds max_wait) {
  std::unique_lock lock(mu_);
  // A thread's first wait returns at once if anything happened since the
  // store opened: that wake-up may have come after its first claim.
  uint64_t& seen = seen_.try_emplace(std::this_thread::get_id(), 0).first->second;
  if (seen == generation_) {
    cv_.wait_for(lock, max_wait, [&] { return generation_ != seen || stopping_; });
  }
  seen = generation_;
}

void Listener::run(std::unique_ptr<Connection> conn) {
  auto backoff = std::chrono::milliseconds(100);
  // Sleeps, or returns false when stopping.
  auto pause = [&](std::chrono::milliseconds d) {
    pollfd p{wake_fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(d.count()));
    return !stopping_;
  };
  while (!stopping_) {
    if (!conn) {
      auto c = connect(url_, {});
      if (!c.ok()) {
        if (!pause(backoff)) break;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        continue;
      }
      conn = std::make_unique<Connection>();
      conn->conn = std::move(c).value();
      try {
        conn->receiver = std::make_unique<Receiver>(*conn->conn, [this] { bump(); });
      } catch (...) {
        conn.reset();
        continue;
      }
      backoff = std::chrono::milliseconds(100);
      // Whatever was notified while we were disconnected is lost: wake
      // everyone to look.
      bump();
    }
    const int sock = conn->conn->sock();
    if (sock < 0) {
      conn.reset();
      continue;
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {sock, POLLIN, 0}};
    if (poll(fds, 2, 60000) < 0) continue;  // EINTR
    if (stopping_) break;
    if (fds[1].revents != 0) {
      try {
        conn->conn->get_notifs();
      } catch (...) {
        conn.reset();  // broken: reconnect on the next round
      }
    }
  }
  conn.reset();
  bump();
}

}  // namespace kiln::store::postgres
