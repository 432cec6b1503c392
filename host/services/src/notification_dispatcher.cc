#include "kiln/services/notification_dispatcher.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <utility>

namespace kiln::services {

using domain::TimeMs;

NotificationDispatcher::NotificationDispatcher(ports::Store& store,
                                               NotificationDispatcherOptions options)
    : store_(store), options_(std::move(options)), prng_(std::random_device{}()) {}

NotificationDispatcher::~NotificationDispatcher() {
  stop();
}

void NotificationDispatcher::log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << "kiln notifications: " << line << "\n";
  }
}

TimeMs NotificationDispatcher::now() const {
  return options_.clock ? options_.clock() : domain::nowMs();
}

double NotificationDispatcher::random() {
  if (options_.random) return options_.random();
  std::lock_guard<std::mutex> lock(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(prng_);
}

void NotificationDispatcher::start() {
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    threads_.emplace_back([this, i] { threadLoop(i); });
  }
}

void NotificationDispatcher::wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++wake_generation_;
  }
  cv_.notify_all();
}

void NotificationDispatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

std::chrono::milliseconds NotificationDispatcher::backoff(
    const NotificationDispatcherOptions& options, int failed_attempts) {
  const int64_t first = std::max<int64_t>(1, options.first_backoff.count());
  const int64_t cap = std::max(first, static_cast<int64_t>(options.max_backoff.count()));
  int64_t delay = first;
  for (int i = 1; i < failed_attempts && delay < cap; ++i) delay *= 2;
  return std::chrono::milliseconds(std::min(delay, cap));
}

std::optional<TimeMs> NotificationDispatcher::nextAttemptAt(
    const NotificationDispatcherOptions& options, TimeMs created_at, int failed_attempts,
    TimeMs now, double random01) {
  const double jitter = std::clamp(options.jitter, 0.0, 1.0);
  const double factor = 1.0 + jitter * (2.0 * std::clamp(random01, 0.0, 1.0) - 1.0);
  const auto delay = static_cast<TimeMs>(
      std::llround(static_cast<double>(backoff(options, failed_attempts).count()) * factor));
  const TimeMs next = now + std::max<TimeMs>(1, delay);
  if (next > created_at + static_cast<TimeMs>(options.max_age.count())) return std::nullopt;
  return next;
}

bool NotificationDispatcher::isRetryable(const Error& error) {
  // Transport trouble is worth another try whatever the notifier said; a
  // cancelled attempt was cut short by a shutdown, not refused.
  return error.retryable || error.code == ErrorCode::kUnavailable ||
         error.code == ErrorCode::kTimeout || error.code == ErrorCode::kCancelled;
}

void NotificationDispatcher::threadLoop(int index) {
  const std::string owner = options_.owner + "/d" + std::to_string(index);
  while (!stopping_) {
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen = wake_generation_;
      if (next_due_ && *next_due_ <= now()) next_due_.reset();  // being picked up now
    }
    dispatchDue(owner);
    std::unique_lock<std::mutex> lock(mu_);
    auto wait = options_.scan_every;
    if (next_due_) {
      wait = std::min(wait, std::chrono::milliseconds(std::max<TimeMs>(0, *next_due_ - now())));
    }
    cv_.wait_for(lock, wait, [&] { return stopping_.load() || wake_generation_ != seen; });
  }
}

int NotificationDispatcher::dispatchDue(const std::string& owner) {
  int made = 0;
  const int batch = std::clamp(options_.batch, 1, 100);
  while (!stopping_) {
    auto claimed = store_.claimDueDeliveries(owner, batch, options_.lease);
    if (!claimed.ok()) {
      log("cannot claim due deliveries: " + claimed.error().message);
      break;
    }
    for (const domain::Delivery& d : *claimed) {
      // Left unattempted, a claimed delivery waits for its lease to expire.
      if (stopping_) break;
      attempt(owner, d);
      ++made;
    }
    if (static_cast<int>(claimed->size()) < batch) break;
  }
  return made;
}

void NotificationDispatcher::attempt(const std::string& owner, const domain::Delivery& d) {
  const std::string which = "delivery " + std::to_string(d.id) + " of build " + d.task_id +
                            " to notifier \"" + d.notifier + "\"";
  domain::DeliveryAttempt a;
  a.at = now();
  const auto t0 = std::chrono::steady_clock::now();
  Result<std::string> sent = makeError(ErrorCode::kInternal, "no notify function configured");
  if (options_.notify) {
    const std::function<bool()> stopping = [this] { return stopping_.load(); };
    try {
      sent = options_.notify(d, stopping);
    } catch (const std::exception& e) {
      sent = makeError(ErrorCode::kInternal, std::string("notify threw: ") + e.what());
    }
  }
  a.duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  a.ok = sent.ok();
  a.detail = sent.ok() ? (sent->empty() ? std::string("delivered") : *sent) : sent.error().message;
  ++attempts_made_;

  const int number = d.attempts + 1;
  std::optional<TimeMs> next;
  if (!sent.ok() && isRetryable(sent.error())) {
    next = nextAttemptAt(options_, d.created_at, number, now(), random());
  }
  auto recorded = store_.recordDeliveryAttempt(d.id, owner, a, next);
  if (!recorded.ok()) {
    log("cannot record attempt " + std::to_string(number) + " of " + which + ": " +
        recorded.error().message);
    return;
  }
  if (sent.ok()) return;
  if (next) {
    log(which + ": attempt " + std::to_string(number) + " failed (" + a.detail + "); retrying at " +
        domain::formatTime(*next));
    bool earlier = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!next_due_ || *next < *next_due_) {
        next_due_ = next;
        // Sleeping threads recompute how long to wait.
        ++wake_generation_;
        earlier = true;
      }
    }
    if (earlier) cv_.notify_all();
  } else {
    log(which + ": giving up after " + std::to_string(number) + " attempt" +
        (number == 1 ? "" : "s") + ": " + a.detail);
  }
}

}  // namespace kiln::services
