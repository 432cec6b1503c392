#include "kiln/process/runner.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace kiln::process {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kPollInterval{50};
constexpr size_t kReadChunk = 64 * 1024;
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

bool makePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end->reset(fds[0]);
  write_end->reset(fds[1]);
  return true;
}

void setNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Blocks SIGPIPE on this thread while run() writes the child's stdin, and
// swallows the one a write to a closed pipe raised (EPIPE is handled).
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_mask_);
  }
  ~SigpipeGuard() {
    if (raised_ && !was_pending_) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_set_, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;
  void noteRaised() { raised_ = true; }

 private:
  sigset_t pipe_set_;
  sigset_t old_mask_;
  bool was_pending_ = false;
  bool raised_ = false;
};

// Resolves a bare program name with the CHILD's PATH (posix_spawnp would use
// ours). Returns the path to spawn, or "" with *err set.
std::string resolveProgram(const ProcessRequest& r, int* err) {
  const std::string& name = r.argv[0];
  if (name.find('/') != std::string::npos) return name;
  const auto it = r.env.find("PATH");
  const std::string path = it != r.env.end() ? it->second : kDefaultPath;
  *err = ENOENT;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    start = end + 1;
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    // A relative PATH entry means the child's working directory.
    const std::string probe = dir[0] != '/' && !r.cwd.empty() ? r.cwd + "/" + candidate : candidate;
    struct stat st {};
    if (::stat(probe.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::access(probe.c_str(), X_OK) == 0) return probe;
    *err = EACCES;
  }
  return "";
}

Error cannotRun(const ProcessRequest& r, const std::string& why, int err) {
  const std::string program = r.argv.empty() ? std::string("(empty argv)") : r.argv[0];
  const bool resources = err == EAGAIN || err == ENOMEM || err == EMFILE || err == ENFILE;
  return makeError(resources ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument,
                   "cannot run " + program + ": " + why, resources);
}

// Keeps the last `max` bytes of a stream.
void capture(std::string* into, std::string_view chunk, size_t max, bool* truncated) {
  into->append(chunk);
  // Trim in batches so that a chatty child costs amortized O(1) per byte.
  if (into->size() > 2 * max + kReadChunk) {
    into->erase(0, into->size() - max);
    *truncated = true;
  }
}

void finishCapture(std::string* s, size_t max, bool* truncated) {
  if (s->size() > max) {
    s->erase(0, s->size() - max);
    *truncated = true;
  }
}

}  // namespace

std::map<std::string, std::string> inheritedEnvironment(
    const std::vector<std::string_view>& names) {
  std::map<std::string, std::string> out;
  for (const auto name : names) {
    const std::string key(name);
    if (const char* v = std::getenv(key.c_str())) out[key] = v;
  }
  return out;
}

Result<ProcessResult> run(const ProcessRequest& r, const std::function<bool()>& cancelled,
                          const std::function<void(std::string_view, bool)>& on_output) {
  if (r.argv.empty() || r.argv[0].empty()) return cannotRun(r, "no program given", EINVAL);
  if (!r.cwd.empty()) {
    struct stat st {};
    if (::stat(r.cwd.c_str(), &st) != 0) {
      return cannotRun(r, "working directory " + r.cwd + ": " + std::strerror(errno), ENOENT);
    }
    if (!S_ISDIR(st.st_mode)) {
      return cannotRun(r, "working directory " + r.cwd + ": " + std::strerror(ENOTDIR), ENOTDIR);
    }
  }
  int resolve_err = 0;
  const std::string program = resolveProgram(r, &resolve_err);
  if (program.empty()) return cannotRun(r, std::strerror(resolve_err), resolve_err);

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w;
  if ((r.stdin_data && !makePipe(&in_r, &in_w)) || !makePipe(&out_r, &out_w) ||
      !makePipe(&err_r, &err_w)) {
    const int e = errno;
    return cannotRun(r, std::string("pipe: ") + std::strerror(e), e);
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (r.stdin_data) {
    posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  if (!r.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, r.cwd.c_str());
  // Descriptors some library opened without O_CLOEXEC must not reach the child.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);  // its own group: the unit we stop
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);    // worker threads may block signals
  posix_spawnattr_setsigdefault(&attr, &all);  // and ignore some (SIGPIPE)

  std::vector<std::string> env_strings;
  env_strings.reserve(r.env.size());
  for (const auto& [k, v] : r.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = r.argv;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);

  const Clock::time_point start = Clock::now();
  pid_t pid = -1;
  const int spawn_rc =
      posix_spawn(&pid, program.c_str(), &actions, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawn_rc != 0) return cannotRun(r, std::strerror(spawn_rc), spawn_rc);
  in_r.reset();
  out_w.reset();
  err_w.reset();
  setNonBlocking(out_r.get());
  setNonBlocking(err_r.get());
  if (in_w.open()) setNonBlocking(in_w.get());

  ProcessResult res;
  SigpipeGuard sigpipe_guard;
  bool reaped = false;
  int status = 0;
  // Whatever happens below (an on_output that throws), the group is stopped
  // and the child reaped before run() returns.
  struct Reaper {
    pid_t pid;
    bool* reaped;
    ~Reaper() {
      if (*reaped) return;
      ::kill(-pid, SIGKILL);
      int st;
      while (::waitpid(pid, &st, 0) == -1 && errno == EINTR) {
      }
    }
  } reaper{pid, &reaped};

  const std::string_view stdin_view = r.stdin_data ? std::string_view(*r.stdin_data) : "";
  size_t stdin_offset = 0;
  if (in_w.open() && stdin_view.empty()) in_w.reset();

  const Clock::time_point deadline = start + r.timeout;
  Clock::time_point next_cancel_check = start;
  Clock::time_point term_sent_at{};
  Clock::time_point drain_deadline{};
  bool stopping = false, killed = false;
  int idle_wait_ms = 1;
  auto stop = [&](Clock::time_point now) {
    ::kill(-pid, SIGTERM);
    stopping = true;
    term_sent_at = now;
    in_w.reset();
  };

  char buf[kReadChunk];
  auto drain = [&](UniqueFd& fd, bool is_stderr) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n > 0) {
      const std::string_view chunk(buf, static_cast<size_t>(n));
      if (on_output) on_output(chunk, is_stderr);
      capture(is_stderr ? &res.stderr_data : &res.stdout_data, chunk, r.max_captured_bytes,
              &res.truncated);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      fd.reset();
    }
  };

  while (true) {
    if (!reaped) {
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        // Not reaped yet, so the group id cannot be reused: kill what the
        // child left running in its group, then reap it.
        ::kill(-pid, SIGKILL);
        while (::waitpid(pid, &status, 0) == -1 && errno == EINTR) {
        }
        reaped = true;
        in_w.reset();
        // What is still in the pipes is read; only a process that escaped
        // the group can keep them open, and it gets this long.
        drain_deadline = Clock::now() + std::max(r.kill_grace, milliseconds(200));
      }
    }
    if (reaped && !out_r.open() && !err_r.open()) break;
    const Clock::time_point now = Clock::now();
    if (reaped && now >= drain_deadline) break;  // an escaped process holds the pipes
    if (!reaped && !stopping) {
      if (cancelled && now >= next_cancel_check) {
        next_cancel_check = now + kPollInterval;
        if (cancelled()) {
          res.cancelled = true;
          stop(now);
        }
      }
      if (!stopping && now >= deadline) {
        res.timed_out = true;
        stop(now);
      }
    }
    if (stopping && !killed && !reaped && now >= term_sent_at + r.kill_grace) {
      ::kill(-pid, SIGKILL);
      killed = true;
    }

    pollfd fds[3];
    nfds_t n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_r.open()) fds[out_i = static_cast<int>(n++)] = {out_r.get(), POLLIN, 0};
    if (err_r.open()) fds[err_i = static_cast<int>(n++)] = {err_r.get(), POLLIN, 0};
    if (in_w.open()) fds[in_i = static_cast<int>(n++)] = {in_w.get(), POLLOUT, 0};
    int wait_ms = static_cast<int>(kPollInterval.count());
    if (n == 0 && !reaped) {
      // Both pipes are closed, so the child is most likely exiting: look
      // again soon rather than a whole interval later.
      wait_ms = std::min(wait_ms, idle_wait_ms);
      idle_wait_ms = std::min(idle_wait_ms * 2, static_cast<int>(kPollInterval.count()));
    }
    if (!reaped && !stopping) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - now).count();
      wait_ms = static_cast<int>(std::clamp<int64_t>(left, 0, wait_ms));
    }
    const int ready = ::poll(fds, n, wait_ms);
    if (ready <= 0) continue;  // timeout or EINTR
    if (out_i >= 0 && fds[out_i].revents != 0) drain(out_r, false);
    if (err_i >= 0 && fds[err_i].revents != 0) drain(err_r, true);
    if (in_i >= 0 && fds[in_i].revents != 0) {
      if ((fds[in_i].revents & POLLOUT) != 0) {
        const size_t len = std::min(stdin_view.size() - stdin_offset, kReadChunk);
        const ssize_t w = ::write(in_w.get(), stdin_view.data() + stdin_offset, len);
        if (w > 0) stdin_offset += static_cast<size_t>(w);
        if (w < 0 && errno == EPIPE) sigpipe_guard.noteRaised();
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || stdin_offset == stdin_view.size()) {
          in_w.reset();  // all written (EOF for the child), or it stopped reading
        }
      } else {
        in_w.reset();  // POLLERR/POLLHUP: the child closed its stdin
      }
    }
  }

  res.duration_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
  if (WIFEXITED(status)) {
    res.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    res.signal = WTERMSIG(status);
  }
  finishCapture(&res.stdout_data, r.max_captured_bytes, &res.truncated);
  finishCapture(&res.stderr_data, r.max_captured_bytes, &res.truncated);
  return res;
}

}  // namespace kiln::process
