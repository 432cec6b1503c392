#include "kiln/services/worker_pool.h"

#include <iostream>

namespace kiln::services {

using domain::BuildStatus;
using domain::ErrorKind;

WorkerPool::WorkerPool(ports::Store& store, ports::BuildExecutor& executor,
                       WorkerPoolOptions options)
    : store_(store), executor_(executor), options_(std::move(options)) {}

WorkerPool::~WorkerPool() {
  if (!threads_.empty()) drain(std::chrono::milliseconds(0));
}

void WorkerPool::log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << "kiln worker " << options_.worker_id << ": " << line << "\n";
  }
}

void WorkerPool::start() {
  for (int i = 0; i < options_.slots; ++i) threads_.emplace_back([this, i] { slotLoop(i); });
  heartbeat_ = std::thread([this] { heartbeatLoop(); });
}

int WorkerPool::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(active_.size());
}

void WorkerPool::slotLoop(int slot) {
  while (!stopping_) {
    // A worker that cannot renew its leases claims nothing new.
    if (paused_) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, options_.idle_wait, [this] { return stopping_.load(); });
      continue;
    }
    if (slot == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_reap_ >= options_.reap_every) {
        last_reap_ = now;
        auto reaped = store_.reapExpiredLeases(options_.plan_deliveries);
        if (reaped.ok() && *reaped > 0) {
          log("returned " + std::to_string(*reaped) + " build(s) with expired leases");
          if (options_.on_terminal) options_.on_terminal();  // some may have failed
        }
      }
    }
    auto claimed = store_.claim(options_.worker_id, options_.lease);
    if (!claimed.ok()) {
      log("claim failed: " + claimed.error().message);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, options_.idle_wait, [this] { return stopping_.load(); });
      continue;
    }
    if (!claimed->has_value()) {
      store_.waitForWork(std::min(options_.idle_wait, options_.reap_every));
      continue;
    }
    runOne(std::move(**claimed));
  }
}

void WorkerPool::runOne(ports::Claim claim) {
  const std::string task_id = claim.build.task_id;
  auto active = std::make_shared<Active>();
  active->lease_token = claim.lease_token;
  // A build cancelled while it was running and then released or reaped comes
  // back with the request still set: honour it before doing any work.
  active->cancel_requested = claim.build.cancel_requested;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_[task_id] = active;
  }
  ports::Outcome outcome;
  auto project = store_.getProject(claim.build.project_id);
  if (!project.ok()) {
    outcome.status = BuildStatus::kFailed;
    outcome.error_kind = ErrorKind::kInfrastructure;
    outcome.error = "cannot load project: " + project.error().message;
  } else if (active->cancel_requested) {
    outcome.status = BuildStatus::kCancelled;  // set below; nothing to run
  } else {
    ports::ExecutionControl control;
    control.should_stop = [active] {
      return active->cancel_requested || active->lease_lost || active->stop_for_drain;
    };
    control.log = [this, task_id](std::string_view line) {
      log("build " + task_id + ": " + std::string(line));
    };
    try {
      outcome = executor_.execute(claim.build, *project, control);
    } catch (const std::exception& e) {
      outcome = ports::Outcome{};
      outcome.status = BuildStatus::kFailed;
      outcome.error_kind = ErrorKind::kInfrastructure;
      outcome.error = std::string("executor error: ") + e.what();
    }
  }

  if (active->lease_lost) {
    // Another attempt owns the build now; our result must not land.
    log("build " + task_id + ": lease lost, dropping this attempt's outcome");
  } else if (active->stop_for_drain && !active->cancel_requested) {
    auto released = store_.release(task_id, active->lease_token, "worker draining");
    if (!released.ok()) log("build " + task_id + ": release failed: " + released.error().message);
  } else if (outcome.retryable && outcome.status == BuildStatus::kFailed &&
             !active->cancel_requested && claim.build.attempts < claim.build.max_attempts) {
    // Infrastructure trouble that may pass: another attempt, not a failure.
    auto released =
        store_.release(task_id, active->lease_token, "retrying after: " + outcome.error);
    if (!released.ok()) log("build " + task_id + ": release failed: " + released.error().message);
  } else {
    if (active->cancel_requested) {
      outcome.status = BuildStatus::kCancelled;
      outcome.error_kind = ErrorKind::kCancelled;
      if (outcome.error.empty()) outcome.error = "cancelled while running";
    }
    if (outcome.error.empty()) outcome.error = outcome.result.error;
    if (options_.plan_deliveries) {
      try {
        outcome.deliveries = options_.plan_deliveries(claim.build, outcome);
      } catch (const std::exception& e) {
        log("build " + task_id + ": cannot plan its notifications: " + e.what());
      }
    }
    auto finished = store_.finish(task_id, active->lease_token, outcome);
    if (!finished.ok()) {
      log("build " + task_id + ": could not record the outcome: " + finished.error().message);
    } else if (options_.on_terminal) {
      options_.on_terminal();
    }
  }
  ++finished_;
  std::lock_guard<std::mutex> lock(mu_);
  active_.erase(task_id);
  cv_.notify_all();
}

void WorkerPool::heartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_ || !active_.empty()) {
    cv_.wait_for(lock, options_.heartbeat);
    const auto snapshot = active_;
    lock.unlock();
    bool renew_failed = false;
    for (const auto& [task_id, active] : snapshot) {
      if (active->lease_lost) continue;
      auto renewed = store_.renew(task_id, active->lease_token, options_.lease);
      if (renewed.ok()) {
        if (renewed->cancel_requested) active->cancel_requested = true;
      } else if (renewed.error().code == ErrorCode::kConflict) {
        std::lock_guard<std::mutex> relock(mu_);
        // A build that finished since the snapshot was taken is not lost.
        if (active_.count(task_id) == 0) continue;
        active->lease_lost = true;
        log("build " + task_id + ": " + renewed.error().message);
      } else {
        renew_failed = true;
        log("build " + task_id + ": cannot renew lease: " + renewed.error().message);
      }
    }
    if (paused_ != renew_failed) {
      paused_ = renew_failed;
      log(renew_failed ? "pausing claims until leases can be renewed" : "resuming claims");
    }
    lock.lock();
    if (stopping_ && active_.empty()) break;
  }
}

void WorkerPool::drain(std::chrono::milliseconds deadline) {
  stopping_ = true;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.notify_all();
    if (!cv_.wait_for(lock, deadline, [this] { return active_.empty(); })) {
      log("drain deadline passed with " + std::to_string(active_.size()) +
          " build(s) running; releasing them");
      for (auto& [id, a] : active_) a->stop_for_drain = true;
    }
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  if (heartbeat_.joinable()) heartbeat_.join();
}

}  // namespace kiln::services
