// The process runner: runs a child process from an argv (never through a
// shell) with an exact environment, a working directory, optional stdin, a
// time limit and cancellation, streaming its output as it arrives.
//
// The child runs in its own process group, so that stopping it stops
// everything it started: on timeout or cancellation the WHOLE group gets
// SIGTERM, then SIGKILL after `kill_grace`. When the child exits on its own,
// whatever it left running in its group is killed too.
// Rationale: an agent that leaves a background process behind would keep a
// build's output pipes open (run would never see EOF) and outlive the
// build's workspace. A process that moves itself to another group or
// session (a daemon) escapes this; run then stops reading its pipes
// `kill_grace` after the child exited.
//
// Thread: run() may be called from many threads at once; it blocks the
// calling thread until the child is reaped. It never leaves a zombie or a
// file descriptor behind, and blocks SIGPIPE on the calling thread while it
// writes stdin (a child that does not read stdin must not kill the host).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/domain/result.h"

namespace kiln::process {

// The variables of the host's own environment a child may see by default.
inline constexpr std::array<std::string_view, 9> kDefaultEnvAllowList = {
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL"};

// The named variables of this process's environment that are set.
std::map<std::string, std::string> inheritedEnvironment(
    const std::vector<std::string_view>& names = {kDefaultEnvAllowList.begin(),
                                                  kDefaultEnvAllowList.end()});

struct ProcessRequest {
  // argv[0] is the program: a path (relative ones are resolved against
  // `cwd`) or a bare name looked up in the PATH of `env` (or
  // /usr/local/bin:/usr/bin:/bin when `env` has no PATH).
  std::vector<std::string> argv;
  std::string cwd;                         // empty: the host's own working directory
  std::map<std::string, std::string> env;  // exactly the child's environment
  std::optional<std::string> stdin_data;   // nullopt: /dev/null
  std::chrono::milliseconds timeout{600000};
  std::chrono::milliseconds kill_grace{2000};  // SIGTERM to SIGKILL
  // Per stream. When more arrives, the LAST bytes are kept: the end of an
  // agent's output holds its result and its error.
  size_t max_captured_bytes = size_t{1} << 20;
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that ended the child, 0 if it exited
  std::string stdout_data;
  std::string stderr_data;
  bool timed_out = false;
  bool cancelled = false;
  bool truncated = false;  // a stream produced more than max_captured_bytes
  int64_t duration_ms = 0;
};

// Runs the child to completion. `cancelled` is polled about every 50 ms (may
// be empty); `on_output` receives every chunk of output in the order it was
// read (is_stderr tells the stream; may be empty), on the calling thread.
// A child that runs and fails is a successful run() with its exit code.
// Errors: kInvalidArgument "cannot run <argv0>: <reason>" when the child
// cannot be started (empty argv, no such program, cwd missing);
// kInternal when the host runs out of pipes or processes.
Result<ProcessResult> run(
    const ProcessRequest& request, const std::function<bool()>& cancelled,
    const std::function<void(std::string_view chunk, bool is_stderr)>& on_output);

}  // namespace kiln::process
