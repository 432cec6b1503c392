// The notification dispatcher: threads that claim due deliveries from the
// store's outbox, hand each to its notifier instance, record every attempt,
// and schedule retries with exponential backoff and jitter until the
// delivery succeeds, fails permanently or grows too old.
//
// Delivery is at least once: an attempt whose outcome could not be recorded
// (the process died, the lease expired) is made again, with the same event
// id, so receivers dedupe on it (Standard Webhooks' webhook-id).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kiln/domain/delivery.h"
#include "kiln/domain/result.h"
#include "kiln/ports/store.h"

namespace kiln::services {

struct NotificationDispatcherOptions {
  std::string owner;  // unique per process, e.g. "host:pid"; thread i leases as "<owner>/d<i>"
  int threads = 2;    // deliveries attempted at the same time
  // Deliveries claimed at a time per thread. Attempts run one after another,
  // so `lease` must cover `batch` attempts (a notifier's timeout each).
  int batch = 1;
  std::chrono::milliseconds lease{2 * 60 * 1000};
  // The delay after the n-th failed attempt is first_backoff * 2^(n-1),
  // capped at max_backoff, scaled by a random factor in [1 - jitter,
  // 1 + jitter]. A retry that would start later than created_at + max_age
  // is not made: the delivery fails. The defaults (5 s doubling to 1 h, for
  // 12 h) give about 20 attempts.
  std::chrono::milliseconds first_backoff{5000};
  std::chrono::milliseconds max_backoff{60 * 60 * 1000};
  std::chrono::milliseconds max_age{12 * 60 * 60 * 1000};
  double jitter = 0.2;
  // How often the store is scanned for due deliveries without a wake():
  // retries this process scheduled are picked up on time anyway; the scan
  // finds those of other processes, expired leases and work left from before
  // a restart.
  std::chrono::milliseconds scan_every{15000};
  // Makes one attempt: the notifier's detail ("HTTP 204") when delivered,
  // otherwise why not. The error decides what follows: retryable (or
  // kUnavailable, kTimeout, kCancelled) -> retried with backoff; anything
  // else (a missing instance, bad input, a plugin bug) -> failed at once.
  // `stopping` turns true when the dispatcher stops. Called from the
  // dispatcher's threads, concurrently.
  std::function<Result<std::string>(const domain::Delivery& delivery,
                                    const std::function<bool()>& stopping)>
      notify;
  std::function<void(const std::string& line)> log;  // empty: stderr
  std::function<domain::TimeMs()> clock;             // empty: domain::nowMs
  std::function<double()> random;                    // in [0, 1); empty: a seeded PRNG
};

class NotificationDispatcher {
 public:
  NotificationDispatcher(ports::Store& store, NotificationDispatcherOptions options);
  ~NotificationDispatcher();  // stop()
  NotificationDispatcher(const NotificationDispatcher&) = delete;
  NotificationDispatcher& operator=(const NotificationDispatcher&) = delete;

  void start();
  // Deliveries may be due now (a build finished). Thread-safe, cheap.
  void wake();
  // Stops claiming and returns once the attempts in flight are recorded.
  void stop();

  // Claims and attempts due deliveries as `owner` until none is due (or the
  // dispatcher stops); returns how many attempts it made. The threads run
  // this; tests may call it directly instead of start().
  int dispatchDue(const std::string& owner);

  // The retry policy, apart so that it can be checked on its own.
  // The delay after `failed_attempts` (>= 1) failures, before jitter.
  static std::chrono::milliseconds backoff(const NotificationDispatcherOptions& options,
                                           int failed_attempts);
  // When to try again after the `failed_attempts`-th failure at `now`, with
  // `random01` in [0, 1) choosing the jitter; nullopt: give up.
  static std::optional<domain::TimeMs> nextAttemptAt(const NotificationDispatcherOptions& options,
                                                     domain::TimeMs created_at, int failed_attempts,
                                                     domain::TimeMs now, double random01);
  // Whether a failed attempt is worth repeating.
  static bool isRetryable(const Error& error);

  int64_t attemptsMade() const { return attempts_made_.load(); }

 private:
  void threadLoop(int index);
  void attempt(const std::string& owner, const domain::Delivery& delivery);
  void log(const std::string& line) const;
  domain::TimeMs now() const;
  double random();

  ports::Store& store_;
  NotificationDispatcherOptions options_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> attempts_made_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t wake_generation_ = 0;            // guarded by mu_
  std::optional<domain::TimeMs> next_due_;  // earliest retry this process scheduled; mu_
  std::mt19937_64 prng_;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace kiln::services
