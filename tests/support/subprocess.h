// Test support: run a child process (argv, no shell) with captured output,
// read its stdout line by line with a deadline, signal it, and reap it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kiln::testing {

class Subprocess {
 public:
  // Starts argv[0] with extra environment variables; throws on failure.
  explicit Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Subprocess();  // kills and reaps the child if it still runs
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // The next stdout line (without '\n'), or nullopt at EOF or timeout.
  std::optional<std::string> readLine(std::chrono::milliseconds timeout);

  void signal(int sig);

  // Waits for exit; the exit code, or 128+signal, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);

  // Everything the child wrote to stderr/stdout so far.
  std::string err() const;
  std::string out() const;

 private:
  // Rationale: a reader thread drains both pipes all the time; a child that
  // logs more than a pipe holds (64 KiB) while nobody reads would block.
  void readerLoop();

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;          // all stdout
  size_t out_consumed_ = 0;  // bytes of out_ already returned by readLine
  std::string err_;
  bool eof_ = false;
  std::optional<int> status_;
  std::thread reader_;
};

// Runs a command to completion; returns {exit code, stdout, stderr}.
struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};
RunResult run(std::vector<std::string> argv, std::map<std::string, std::string> env = {},
              std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace kiln::testing
