// Test support: wait for a condition without sleeping a fixed time.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace kiln::testing {

// Polls `condition` every `poll` until it holds or `timeout` passes; the
// last check happens after the deadline, so a slow machine only waits.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10),
                       std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(poll);
  }
  return condition();
}

}  // namespace kiln::testing
