// BuildService and WorkerPool against the real SQLite adapter, with a
// scripted executor standing in for plugins.
#include "kiln/services/worker_pool.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/services/build_service.h"
#include "kiln/store/open.h"

#include "eventually.h"

namespace kiln::services {
namespace {

using domain::BuildStatus;
using domain::ErrorKind;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// Runs a function per build; records how many times it ran.
class ScriptedExecutor : public ports::BuildExecutor {
 public:
  std::function<ports::Outcome(const domain::Build&, const ports::ExecutionControl&)> script;
  std::atomic<int> runs{0};

  ports::Outcome execute(const domain::Build& build, const domain::Project&,
                         const ports::ExecutionControl& control) override {
    ++runs;
    return script(build, control);
  }
};

ports::Outcome completed(const std::string& output = "done") {
  ports::Outcome o;
  o.status = BuildStatus::kCompleted;
  o.result.success = true;
  o.result.output = output;
  return o;
}

// Waits until `pred` holds or the timeout passes.
using kiln::testing::eventually;

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln-pool-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto opened = store::openSqliteStore({(dir_ / "kiln.db").string(), 5000});
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    store_ = std::move(opened).value();
    service_ = std::make_unique<BuildService>(*store_, BuildServiceOptions{});
    domain::Project p;
    p.id = "demo";
    p.repo_url = "/srv/demo.git";
    p.max_running_builds = 4;
    ASSERT_TRUE(service_->createProject(p).ok());
  }
  void TearDown() override {
    pool_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string submit(const std::string& prompt, std::optional<std::string> branch = {}) {
    domain::BuildSpec spec;
    spec.prompt = prompt;
    spec.branch = branch;
    auto b = service_->submit("demo", spec);
    EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().message);
    return b.ok() ? b->task_id : "";
  }

  BuildStatus statusOf(const std::string& id) { return store_->getBuild(id)->status; }

  void startPool(int slots, std::chrono::milliseconds lease = 3s,
                 std::chrono::milliseconds heartbeat = 100ms) {
    WorkerPoolOptions o;
    o.slots = slots;
    o.worker_id = "test-worker";
    o.lease = lease;
    o.heartbeat = heartbeat;
    o.idle_wait = 200ms;
    o.reap_every = 100ms;
    o.log = [](const std::string&) {};
    pool_ = std::make_unique<WorkerPool>(*store_, executor_, o);
    pool_->start();
  }

  std::filesystem::path dir_;
  std::unique_ptr<ports::Store> store_;
  std::unique_ptr<BuildService> service_;
  ScriptedExecutor executor_;
  std::unique_ptr<WorkerPool> pool_;
};

TEST_F(WorkerPoolTest, RunsSubmittedBuildsToCompletion) {
  executor_.script = [](const domain::Build& b, const ports::ExecutionControl&) {
    return completed("ran " + b.spec.prompt);
  };
  startPool(2);
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i)
    ids.push_back(submit("p" + std::to_string(i), "b" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] {
    return std::all_of(ids.begin(), ids.end(),
                       [&](const auto& id) { return statusOf(id) == BuildStatus::kCompleted; });
  }));
  const auto b = store_->getBuild(ids[3]);
  EXPECT_EQ(b->result->output, "ran p3");
  EXPECT_EQ(b->attempts, 1);
  EXPECT_EQ(b->worker_id, "test-worker");
  EXPECT_TRUE(b->started_at.has_value());
  EXPECT_TRUE(b->finished_at.has_value());
  EXPECT_EQ(executor_.runs.load(), 10);
}

TEST_F(WorkerPoolTest, AFailedOutcomeIsRecordedWithItsKind) {
  executor_.script = [](const domain::Build&, const ports::ExecutionControl&) {
    ports::Outcome o;
    o.status = BuildStatus::kFailed;
    o.error_kind = ErrorKind::kWorkload;
    o.result.error = "tests failed";
    return o;
  };
  startPool(1);
  const auto id = submit("p");
  ASSERT_TRUE(eventually([&] { return statusOf(id) == BuildStatus::kFailed; }));
  const auto b = store_->getBuild(id);
  EXPECT_EQ(b->error_kind, ErrorKind::kWorkload);
  EXPECT_EQ(b->error, "tests failed");
}

TEST_F(WorkerPoolTest, AnExecutorExceptionFailsTheBuildAsInfrastructure) {
  executor_.script = [](const domain::Build&, const ports::ExecutionControl&) -> ports::Outcome {
    throw std::runtime_error("disk full");
  };
  startPool(1);
  const auto id = submit("p");
  ASSERT_TRUE(eventually([&] { return statusOf(id) == BuildStatus::kFailed; }));
  const auto b = store_->getBuild(id);
  EXPECT_EQ(b->error_kind, ErrorKind::kInfrastructure);
  EXPECT_THAT(b->error, HasSubstr("disk full"));
}

TEST_F(WorkerPoolTest, CancellingARunningBuildReachesTheExecutor) {
  std::atomic<bool> started{false};
  executor_.script = [&](const domain::Build&, const ports::ExecutionControl& control) {
    started = true;
    while (!control.should_stop()) std::this_thread::sleep_for(5ms);
    ports::Outcome o;
    o.status = BuildStatus::kFailed;
    o.error = "stopped";
    return o;
  };
  startPool(1);
  const auto id = submit("long");
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  const auto t0 = std::chrono::steady_clock::now();
  auto cancelled = service_->cancel(id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_TRUE(cancelled->cancel_requested);
  ASSERT_TRUE(eventually([&] { return statusOf(id) == BuildStatus::kCancelled; }, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(store_->getBuild(id)->error_kind, ErrorKind::kCancelled);
}

TEST_F(WorkerPoolTest, CancellingAPendingBuildMeansItNeverRuns) {
  executor_.script = [](const domain::Build&, const ports::ExecutionControl&) {
    return completed();
  };
  const auto id = submit("p");
  ASSERT_TRUE(service_->cancel(id).ok());
  EXPECT_EQ(statusOf(id), BuildStatus::kCancelled);
  startPool(1);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(executor_.runs.load(), 0);
  auto again = service_->cancel(id);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kConflict);
}

TEST_F(WorkerPoolTest, DrainLetsShortBuildsFinishAndReleasesLongOnes) {
  std::atomic<int> running{0};
  executor_.script = [&](const domain::Build& b, const ports::ExecutionControl& control) {
    ++running;
    if (b.spec.prompt == "short") {
      std::this_thread::sleep_for(50ms);
      return completed();
    }
    while (!control.should_stop()) std::this_thread::sleep_for(5ms);
    return completed("should not land");
  };
  startPool(2);
  const auto quick = submit("short", "a");
  const auto slow = submit("long", "b");
  ASSERT_TRUE(eventually([&] { return running.load() == 2; }));
  pool_->drain(300ms);
  EXPECT_EQ(statusOf(quick), BuildStatus::kCompleted);
  const auto b = store_->getBuild(slow);
  EXPECT_EQ(b->status, BuildStatus::kPending) << "released for another worker";
  EXPECT_EQ(b->attempts, 1);
  EXPECT_FALSE(b->result.has_value());
}

TEST_F(WorkerPoolTest, RetryMakesANewBuildLinkedToTheOriginal) {
  executor_.script = [](const domain::Build&, const ports::ExecutionControl&) {
    ports::Outcome o;
    o.status = BuildStatus::kFailed;
    o.error_kind = ErrorKind::kWorkload;
    o.error = "flaky";
    return o;
  };
  startPool(1);
  const auto id = submit("p");
  ASSERT_TRUE(eventually([&] { return statusOf(id) == BuildStatus::kFailed; }));
  auto retried = service_->retry(id);
  ASSERT_TRUE(retried.ok()) << retried.error().message;
  EXPECT_NE(retried->task_id, id);
  EXPECT_EQ(retried->retry_of, id);
  EXPECT_EQ(retried->spec, store_->getBuild(id)->spec);
  ASSERT_TRUE(eventually([&] { return statusOf(retried->task_id) == BuildStatus::kFailed; }));
  pool_->drain(1s);  // nothing claims now, so a new build stays pending
  auto not_retryable = service_->retry(submit("q"));
  ASSERT_FALSE(not_retryable.ok());
  EXPECT_EQ(not_retryable.error().code, ErrorCode::kConflict);
  EXPECT_THAT(not_retryable.error().message, HasSubstr("only failed or cancelled builds"));
}

TEST_F(WorkerPoolTest, ALostLeaseKeepsTheStaleOutcomeFromLanding) {
  // The lease (300 ms) runs out while the executor sleeps and the heartbeat
  // (every 5 s) never renews it; a second pool reaps and re-runs the build.
  std::atomic<int> attempt{0};
  executor_.script = [&](const domain::Build&, const ports::ExecutionControl& control) {
    const int mine = ++attempt;
    if (mine == 1) {
      std::this_thread::sleep_for(1200ms);
      return completed("stale attempt");
    }
    (void)control;
    return completed("second attempt");
  };
  startPool(1, 300ms, 5s);
  const auto id = submit("p");
  ASSERT_TRUE(eventually([&] { return attempt.load() == 1; }));
  ScriptedExecutor second;
  second.script = executor_.script;
  WorkerPoolOptions o;
  o.slots = 1;
  o.worker_id = "second-worker";
  o.lease = 3s;
  o.heartbeat = 100ms;
  o.idle_wait = 100ms;
  o.reap_every = 50ms;
  o.log = [](const std::string&) {};
  WorkerPool other(*store_, second, o);
  other.start();
  ASSERT_TRUE(eventually([&] { return statusOf(id) == BuildStatus::kCompleted; }));
  std::this_thread::sleep_for(1500ms);  // the stale attempt has returned by now
  const auto b = store_->getBuild(id);
  EXPECT_EQ(b->result->output, "second attempt");
  EXPECT_EQ(b->attempts, 2);
  EXPECT_EQ(b->worker_id, "second-worker");
  other.drain(1s);
}

TEST(BuildServiceTest, ValidationNamesTheFields) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("kiln-svc-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  auto opened = store::openSqliteStore({(dir / "kiln.db").string(), 5000});
  ASSERT_TRUE(opened.ok());
  BuildServiceOptions limits;
  limits.max_prompt_bytes = 100;
  limits.max_attempts = 3;
  BuildService service(**opened, limits);
  domain::Project p;
  p.id = "Bad Id";
  auto bad_project = service.createProject(p);
  ASSERT_FALSE(bad_project.ok());
  EXPECT_EQ(bad_project.error().fields.size(), 2u);  // id and repo_url

  p.id = "demo";
  p.repo_url = "/srv/demo.git";
  p.max_timeout_s = 60;
  ASSERT_TRUE(service.createProject(p).ok());
  domain::BuildSpec spec;
  spec.prompt = std::string(101, 'x');
  spec.timeout_s = 61;
  auto r = service.submit("demo", spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  ASSERT_EQ(r.error().fields.size(), 2u);
  EXPECT_EQ(r.error().fields[0].first, "prompt");
  EXPECT_EQ(r.error().fields[1].first, "timeout_s");
  EXPECT_THAT(r.error().fields[1].second, HasSubstr("between 1 and 60"));

  spec.prompt = "ok";
  spec.timeout_s.reset();
  auto missing = service.submit("nope", spec);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

  auto b = service.submit("demo", spec);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->branch, "main");
  EXPECT_EQ(b->max_attempts, 3);
  opened->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln::services
