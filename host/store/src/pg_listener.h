// The PostgreSQL store's wake-up: a dedicated connection that LISTENs on the
// `kiln_work` channel from a background thread, so that idle workers start
// new work as soon as any process commits an enqueue, release, reap, finish
// or cancel. Internal to kiln_store.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "kiln/domain/result.h"

namespace kiln::store::postgres {

inline constexpr const char* kWorkChannel = "kiln_work";

class Listener {
 public:
  // Connects and LISTENs before returning (kUnavailable if it cannot), then
  // keeps listening from its own thread, reconnecting when the connection
  // breaks.
  static Result<std::unique_ptr<Listener>> start(const std::string& url);
  ~Listener();  // stops and joins the thread
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Blocks the calling thread until a wake-up it has not seen yet arrives,
  // or `max_wait` passed. A wake-up that arrived since this thread's
  // previous wait returns at once, so none is lost between a claim that
  // found nothing and the wait that follows it.
  void wait(std::chrono::milliseconds max_wait);
  // Wakes waiters of this process at once (the NOTIFY follows via the
  // server).
  void wakeLocal();

 private:
  struct Connection;
  explicit Listener(std::string url);
  void run(std::unique_ptr<Connection> conn);
  void bump();

  const std::string url_;
  int wake_fd_ = -1;  // eventfd: interrupts the thread's poll() for shutdown
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;
  std::unordered_map<std::thread::id, uint64_t> seen_;  // per waiting thread
  std::thread thread_;
};

}  // namespace kiln::store::postgres
