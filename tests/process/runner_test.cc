// kiln::process::run against real child processes: exit codes, signals,
// stdin, the exact environment, cwd, streaming, capture limits, spawn
// failures, and stopping whole process groups on timeout and cancellation.
#include "kiln/process/runner.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "eventually.h"

namespace {

namespace fs = std::filesystem;
using kiln::ErrorCode;
using kiln::process::ProcessRequest;
using kiln::process::ProcessResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::map<std::string, std::string> kPathOnly = {{"PATH", "/usr/bin:/bin"}};

ProcessRequest shell(const std::string& script) {
  ProcessRequest r;
  r.argv = {"/bin/sh", "-c", script};
  r.env = kPathOnly;
  return r;
}

ProcessResult runOk(const ProcessRequest& r, const std::function<bool()>& cancelled = {},
                    const std::function<void(std::string_view, bool)>& on_output = {}) {
  auto res = kiln::process::run(r, cancelled, on_output);
  if (!res.ok()) ADD_FAILURE() << "run failed: " << res.error().message;
  return res.ok() ? std::move(res).value() : ProcessResult{};
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kiln-runner-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string writeScript(const std::string& name, const std::string& body) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file) << body;
    fs::permissions(file, fs::perms::owner_all);
    return file;
  }

 private:
  std::string path_;
};

// State and process group of a process from /proc/PID/stat, or nullopt when
// it no longer exists. The comm field may hold spaces and parentheses.
struct ProcStat {
  char state;
  pid_t pgrp;
};
std::optional<ProcStat> procStat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (text.empty() || close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  ProcStat st{};
  pid_t ppid;
  rest >> st.state >> ppid >> st.pgrp;
  return st;
}

// Dead: gone, or a zombie waiting for init (which may not reap in a container).
bool isDead(pid_t pid) {
  const auto st = procStat(std::to_string(pid));
  return !st || st->state == 'Z' || st->state == 'X';
}

// Live (non-zombie) members of a process group.
int liveMembers(pid_t pgid) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const auto st = procStat(e->d_name);
    if (st && st->pgrp == pgid && st->state != 'Z' && st->state != 'X') ++n;
  }
  ::closedir(d);
  return n;
}

// Polls for up to 2 s: the kernel finishes a SIGKILL asynchronously.
using kiln::testing::eventually;

std::vector<pid_t> pidsIn(const std::string& text) {
  std::vector<pid_t> out;
  std::istringstream in(text);
  for (long p; in >> p;) out.push_back(static_cast<pid_t>(p));
  return out;
}

int openFdCount() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST(RunnerTest, ReportsExitCodes) {
  const ProcessResult r = runOk(shell("exit 3"));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.signal, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.cancelled);
  EXPECT_EQ(runOk(shell("true")).exit_code, 0);
}

TEST(RunnerTest, ReportsTheSignalThatEndedTheChild) {
  const ProcessResult r = runOk(shell("kill -USR1 $$"));
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_EQ(r.signal, SIGUSR1);
}

TEST(RunnerTest, FeedsStdinAndClosesIt) {
  ProcessRequest r;
  r.argv = {"cat"};
  r.env = kPathOnly;
  r.stdin_data = "first line\nsecond";
  EXPECT_EQ(runOk(r).stdout_data, "first line\nsecond");

  // More than a pipe holds, while the child writes it all back: needs the
  // poll loop to write and read at the same time.
  r.stdin_data = std::string(3 << 20, 'z');
  r.max_captured_bytes = 4 << 20;
  const ProcessResult big = runOk(r);
  EXPECT_EQ(big.stdout_data.size(), size_t{3} << 20);
  EXPECT_FALSE(big.truncated);
}

TEST(RunnerTest, WithoutStdinTheChildReadsDevNull) {
  const auto start = Clock::now();
  const ProcessResult r = runOk(shell("cat; echo done"));
  EXPECT_EQ(r.stdout_data, "done\n");
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(RunnerTest, AChildThatIgnoresStdinDoesNotHurtTheHost) {
  ProcessRequest r = shell("exit 0");
  r.stdin_data = std::string(8 << 20, 'x');  // EPIPE, and SIGPIPE on this thread
  EXPECT_EQ(runOk(r).exit_code, 0);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0);
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  EXPECT_EQ(sigismember(&mask, SIGPIPE), 0) << "the thread's signal mask was not restored";
}

TEST(RunnerTest, TheEnvironmentIsExactlyTheRequest) {
  ::setenv("KILN_TEST_SECRET", "do-not-leak", 1);
  ProcessRequest r;
  r.argv = {"/usr/bin/env"};
  r.env = {{"A", "1"}, {"B", "two words"}};
  EXPECT_EQ(runOk(r).stdout_data, "A=1\nB=two words\n");
  r.env = {};
  EXPECT_EQ(runOk(r).stdout_data, "");
  ::unsetenv("KILN_TEST_SECRET");
}

TEST(RunnerTest, InheritedEnvironmentTakesOnlyTheNamedVariables) {
  ::setenv("KILN_TEST_SECRET", "do-not-leak", 1);
  ::setenv("KILN_TEST_VISIBLE", "yes", 1);
  const auto env = kiln::process::inheritedEnvironment({"KILN_TEST_VISIBLE", "KILN_TEST_UNSET"});
  EXPECT_EQ(env, (std::map<std::string, std::string>{{"KILN_TEST_VISIBLE", "yes"}}));
  const auto defaults = kiln::process::inheritedEnvironment();
  EXPECT_EQ(defaults.count("KILN_TEST_SECRET"), 0u);
  EXPECT_EQ(defaults.at("PATH"), ::getenv("PATH"));
  ::unsetenv("KILN_TEST_SECRET");
  ::unsetenv("KILN_TEST_VISIBLE");
}

TEST(RunnerTest, RunsInTheWorkingDirectory) {
  TempDir dir;
  ProcessRequest r;
  r.argv = {"/bin/pwd"};
  r.cwd = dir.path();
  EXPECT_EQ(runOk(r).stdout_data, fs::canonical(dir.path()).string() + "\n");

  dir.writeScript("tool.sh", "#!/bin/sh\necho relative-ok\n");
  r.argv = {"./tool.sh"};  // relative to cwd, not to the host's directory
  EXPECT_EQ(runOk(r).stdout_data, "relative-ok\n");
}

TEST(RunnerTest, ABareNameIsLookedUpInTheChildsPath) {
  TempDir dir;
  dir.writeScript("kiln-fake-tool", "#!/bin/sh\necho found \"$@\"\n");
  ProcessRequest r;
  r.argv = {"kiln-fake-tool", "x"};
  r.env = {{"PATH", "/nonexistent:" + dir.path()}};
  EXPECT_EQ(runOk(r).stdout_data, "found x\n");

  r.env = {};  // the default PATH does not hold the temp dir
  auto missing = kiln::process::run(r, {}, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "cannot run kiln-fake-tool: No such file or directory");
}

TEST(RunnerTest, StreamsOutputInOrderAsItArrives) {
  std::vector<std::pair<std::string, bool>> chunks;
  Clock::time_point first_chunk{};
  const ProcessResult r = runOk(shell("echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c"), {},
                                [&](std::string_view chunk, bool is_stderr) {
                                  if (chunks.empty()) first_chunk = Clock::now();
                                  chunks.emplace_back(std::string(chunk), is_stderr);
                                });
  EXPECT_THAT(chunks, ElementsAre(std::pair<std::string, bool>{"a\n", false},
                                  std::pair<std::string, bool>{"b\n", true},
                                  std::pair<std::string, bool>{"c\n", false}));
  EXPECT_EQ(r.stdout_data, "a\nc\n");
  EXPECT_EQ(r.stderr_data, "b\n");
  // "a" is followed by 600 ms of sleeping: it must arrive long before the end.
  EXPECT_LT(first_chunk, Clock::now() - 400ms) << "the first chunk waited for the child to finish";
  EXPECT_GE(r.duration_ms, 550);
}

TEST(RunnerTest, CaptureKeepsTheLastBytesAndSaysItTruncated) {
  ProcessRequest r = shell("head -c 300000 /dev/zero | tr '\\0' x; echo END; echo err >&2");
  r.max_captured_bytes = 1000;
  size_t streamed = 0;
  const ProcessResult res = runOk(r, {}, [&](std::string_view chunk, bool is_stderr) {
    if (!is_stderr) streamed += chunk.size();
  });
  EXPECT_TRUE(res.truncated);
  EXPECT_EQ(res.stdout_data.size(), 1000u);
  EXPECT_THAT(res.stdout_data, ::testing::EndsWith("xxxEND\n"));
  EXPECT_EQ(res.stderr_data, "err\n");
  EXPECT_EQ(streamed, 300004u) << "on_output sees everything, not only what is kept";

  r.max_captured_bytes = 1 << 20;
  EXPECT_FALSE(runOk(r).truncated);
}

TEST(RunnerTest, SpawnFailuresAreInvalidArguments) {
  ProcessRequest r;
  r.argv = {"/nonexistent/agent"};
  auto res = kiln::process::run(r, {}, {});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(res.error().message, "cannot run /nonexistent/agent: No such file or directory");

  r.argv = {"/bin/true"};
  r.cwd = "/nonexistent/workspace";
  res = kiln::process::run(r, {}, {});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(res.error().message,
            "cannot run /bin/true: working directory /nonexistent/workspace: No such file or "
            "directory");

  TempDir dir;
  const std::string not_executable = dir.path() + "/plain";
  std::ofstream(not_executable) << "echo hi\n";
  r.cwd.clear();
  r.argv = {not_executable};
  res = kiln::process::run(r, {}, {});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().message, "cannot run " + not_executable + ": Permission denied");

  r.argv = {};
  res = kiln::process::run(r, {}, {});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ErrorCode::kInvalidArgument);
}

TEST(RunnerTest, TimeoutStopsTheWholeGroupIncludingGrandchildren) {
  ProcessRequest r = shell("sleep 300 & echo $$ $!; sleep 300");
  r.timeout = 500ms;
  const auto start = Clock::now();
  const ProcessResult res = runOk(r);
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_TRUE(res.timed_out);
  EXPECT_FALSE(res.cancelled);
  EXPECT_EQ(res.signal, SIGTERM);
  const auto pids = pidsIn(res.stdout_data);
  ASSERT_EQ(pids.size(), 2u) << res.stdout_data;
  const pid_t pgid = pids[0], grandchild = pids[1];
  EXPECT_TRUE(eventually([&] { return isDead(grandchild); }, 2s)) << "grandchild " << grandchild;
  EXPECT_TRUE(eventually([&] { return liveMembers(pgid) == 0; }, 2s));
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(pgid))) << "the child was not reaped";
}

TEST(RunnerTest, CancellationStopsTheGroupWithinTwoSeconds) {
  std::atomic<Clock::time_point> cancel_at{Clock::time_point::max()};
  ProcessRequest r = shell("sleep 300 & echo $$ $!; wait");
  std::atomic<int> polls{0};
  const auto start = Clock::now();
  cancel_at = start + 300ms;
  const ProcessResult res = runOk(r, [&] {
    ++polls;
    return Clock::now() >= cancel_at.load();
  });
  const auto returned = Clock::now();
  EXPECT_TRUE(res.cancelled);
  EXPECT_FALSE(res.timed_out);
  EXPECT_LT(returned - cancel_at.load(), 2s);
  EXPECT_GE(polls.load(), 3) << "cancelled() is polled while the child runs";
  const auto pids = pidsIn(res.stdout_data);
  ASSERT_EQ(pids.size(), 2u) << res.stdout_data;
  EXPECT_TRUE(eventually([&] { return isDead(pids[1]); }, 2s));
  EXPECT_TRUE(eventually([&] { return liveMembers(pids[0]) == 0; }, 2s));
}

TEST(RunnerTest, AChildThatIgnoresTermIsKilledAfterTheGrace) {
  // `trap "" TERM` also makes the sleeps ignore it (ignored signals survive exec).
  ProcessRequest r = shell("trap '' TERM; echo $$; while :; do sleep 1; done");
  r.timeout = 300ms;
  r.kill_grace = 700ms;
  const auto start = Clock::now();
  const ProcessResult res = runOk(r);
  const auto took = Clock::now() - start;
  EXPECT_TRUE(res.timed_out);
  EXPECT_EQ(res.signal, SIGKILL);
  EXPECT_GE(took, 950ms);
  EXPECT_LT(took, 3s);
  const auto pids = pidsIn(res.stdout_data);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_TRUE(eventually([&] { return liveMembers(pids[0]) == 0; }, 2s));
}

TEST(RunnerTest, WhatTheChildLeavesBehindIsKilledWhenItExits) {
  // The background sleep holds stdout open; without the group kill run()
  // would wait for it.
  ProcessRequest r = shell("sleep 300 & echo $!");
  const auto start = Clock::now();
  const ProcessResult res = runOk(r);
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_EQ(res.exit_code, 0);
  const auto pids = pidsIn(res.stdout_data);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_TRUE(eventually([&] { return isDead(pids[0]); }, 2s));
}

TEST(RunnerTest, AChildThatClosedItsOutputIsWaitedForWithoutSpinning) {
  rusage before{}, after{};
  ::getrusage(RUSAGE_THREAD, &before);
  const ProcessResult res = runOk(shell("exec >&- 2>&-; sleep 1; exit 5"));
  ::getrusage(RUSAGE_THREAD, &after);
  EXPECT_EQ(res.exit_code, 5);
  EXPECT_GE(res.duration_ms, 950);
  const auto cpu_us = [](const rusage& u) {
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000LL + u.ru_utime.tv_usec +
           u.ru_stime.tv_usec;
  };
  EXPECT_LT(cpu_us(after) - cpu_us(before), 100000) << "run() busy-waited";
}

TEST(RunnerTest, LeavesNoDescriptorsOrZombiesBehind) {
  const int before = openFdCount();
  for (int i = 0; i < 5; ++i) {
    ProcessRequest r = shell("echo $$");
    r.stdin_data = "x";
    const ProcessResult res = runOk(r);
    const auto pids = pidsIn(res.stdout_data);
    ASSERT_EQ(pids.size(), 1u);
    EXPECT_FALSE(fs::exists("/proc/" + std::to_string(pids[0]))) << "zombie " << pids[0];
    ProcessRequest bad;
    bad.argv = {"/nonexistent"};
    EXPECT_FALSE(kiln::process::run(bad, {}, {}).ok());
  }
  EXPECT_EQ(openFdCount(), before);
}

TEST(RunnerTest, TheChildGetsOnlyStdioAndDefaultSignals) {
  // A descriptor the host opened without O_CLOEXEC, an ignored SIGPIPE and a
  // blocked SIGTERM must not reach the child.
  const int leaky = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaky, 0);
  const auto old_pipe = ::signal(SIGPIPE, SIG_IGN);
  sigset_t term, old_mask;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old_mask);

  const ProcessResult fds = runOk(shell("ls /proc/$$/fd"));
  // grep itself is the child: it reads its own state, as exec left it.
  ProcessRequest grep;
  grep.argv = {"/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"};
  const ProcessResult sigs = runOk(grep);

  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::signal(SIGPIPE, old_pipe);
  ::close(leaky);
  EXPECT_EQ(fds.stdout_data, "0\n1\n2\n");
  EXPECT_THAT(sigs.stdout_data, HasSubstr("SigBlk:\t0000000000000000"));
  // SIGPIPE (bit 13) must not be ignored.
  const auto ign = sigs.stdout_data.find("SigIgn:\t");
  ASSERT_NE(ign, std::string::npos);
  const unsigned long long ignored = std::stoull(sigs.stdout_data.substr(ign + 8, 16), nullptr, 16);
  EXPECT_EQ(ignored & (1ULL << (SIGPIPE - 1)), 0u);
}

TEST(RunnerTest, RunsConcurrentlyFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<std::string> outs(6);
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back(
        [&, i] { outs[i] = runOk(shell("sleep 0.2; echo " + std::to_string(i))).stdout_data; });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(outs[i], std::to_string(i) + "\n");
}

}  // namespace
