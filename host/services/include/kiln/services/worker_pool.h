// The worker pool: N slots that claim builds from the store, run them
// through the executor while a heartbeat renews their leases, and record
// how they ended. Execution is at least once; the terminal transition is
// exactly once because every write carries the current lease token.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kiln/ports/executor.h"
#include "kiln/ports/store.h"

namespace kiln::services {

struct WorkerPoolOptions {
  int slots = 2;
  std::string worker_id;  // unique per process, e.g. "host:pid"
  std::chrono::milliseconds lease{30000};
  std::chrono::milliseconds heartbeat{10000};        // renew every; < lease
  std::chrono::milliseconds idle_wait{2000};         // max wait for work between claims
  std::chrono::milliseconds reap_every{5000};        // how often expired leases are reaped
  std::function<void(const std::string& line)> log;  // empty: stderr
  // A build's notifications (DeliveryPlanner::plan): called right before
  // finish() with the final outcome (finish() queues them in the same
  // transaction), and given to the reaper for builds it fails. Empty: none.
  ports::DeliveryPlan plan_deliveries;
  // Called after builds became terminal here (finished, or failed by the
  // reaper), e.g. to wake the notification dispatcher. Empty: nothing.
  std::function<void()> on_terminal;
};

class WorkerPool {
 public:
  WorkerPool(ports::Store& store, ports::BuildExecutor& executor, WorkerPoolOptions options);
  ~WorkerPool();  // drains with a zero deadline if still running
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void start();
  // Stops claiming; lets running builds finish for up to `deadline`, then
  // asks them to stop and releases them back to pending for another worker.
  void drain(std::chrono::milliseconds deadline);

  int running() const;  // builds in progress now
  int64_t finishedCount() const { return finished_.load(); }
  bool claimingPaused() const { return paused_.load(); }

 private:
  struct Active {
    std::string lease_token;
    std::atomic<bool> cancel_requested{false};
    std::atomic<bool> lease_lost{false};
    std::atomic<bool> stop_for_drain{false};
  };

  void slotLoop(int slot);
  void heartbeatLoop();
  void runOne(ports::Claim claim);
  void log(const std::string& line) const;

  ports::Store& store_;
  ports::BuildExecutor& executor_;
  WorkerPoolOptions options_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};  // a renew failed for infrastructure reasons
  std::atomic<int64_t> finished_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Active>> active_;  // by task id
  std::vector<std::thread> threads_;
  std::thread heartbeat_;
  std::chrono::steady_clock::time_point last_reap_{};
};

}  // namespace kiln::services
