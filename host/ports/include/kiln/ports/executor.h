// The BuildExecutor port: runs one attempt of a build. The worker pool owns
// leases and status; the executor only does the work and reports how it went.
#pragma once

#include <functional>
#include <string_view>

#include "kiln/domain/build.h"
#include "kiln/ports/store.h"

namespace kiln::ports {

// What the executor may ask of the worker while it runs. Thread-safe.
struct ExecutionControl {
  // True once the build was cancelled, its lease was lost, or the worker is
  // draining past its deadline: stop as soon as possible.
  std::function<bool()> should_stop;
  // Appends to the build's log.
  std::function<void(std::string_view line)> log;
};

class BuildExecutor {
 public:
  virtual ~BuildExecutor() = default;
  // Runs the attempt and returns its outcome (completed or failed, with
  // error_kind). When it stopped because should_stop() turned true, the
  // worker decides the final status (cancelled, or released on drain).
  virtual Outcome execute(const domain::Build& build, const domain::Project& project,
                          const ExecutionControl& control) = 0;
};

}  // namespace kiln::ports
