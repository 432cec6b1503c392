// The notification pipeline inside one process: DeliveryPlanner (what a
// finished build sends), the WorkerPool queuing it with the terminal
// transition, and the NotificationDispatcher attempting, retrying with
// backoff and giving up, against the real SQLite store with a scripted
// notifier standing in for plugins.
#include "kiln/services/notification_dispatcher.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/codec/delivery_json.h"
#include "kiln/services/build_service.h"
#include "kiln/services/delivery_planner.h"
#include "kiln/services/worker_pool.h"
#include "kiln/store/open.h"

#include "eventually.h"

namespace kiln::services {
namespace {

using domain::BuildStatus;
using domain::Delivery;
using domain::DeliveryState;
using domain::ErrorKind;
using domain::TimeMs;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

using kiln::testing::eventually;

// ---------------------------------------------------------------- policy

TEST(RetryPolicyTest, BackoffDoublesFromFiveSecondsUpToAnHour) {
  NotificationDispatcherOptions o;
  std::vector<int64_t> s;
  for (int n = 1; n <= 12; ++n) s.push_back(NotificationDispatcher::backoff(o, n).count() / 1000);
  EXPECT_THAT(s, ElementsAre(5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600));
  EXPECT_EQ(NotificationDispatcher::backoff(o, 1000).count(), 3600 * 1000);
}

TEST(RetryPolicyTest, TheDefaultScheduleKeepsTryingForTwelveHoursThenGivesUp) {
  NotificationDispatcherOptions o;
  const TimeMs created = 1'000'000;
  TimeMs at = created;  // the first attempt: at once
  int attempts = 1;
  std::vector<TimeMs> times = {at};
  while (auto next = NotificationDispatcher::nextAttemptAt(o, created, attempts, at, 0.5)) {
    EXPECT_GT(*next, at);
    at = *next;
    times.push_back(at);
    ++attempts;
  }
  EXPECT_EQ(attempts, 21);
  EXPECT_LE(times.back() - created, 12 * 3600 * 1000);
  EXPECT_GT(times.back() - created, 11 * 3600 * 1000);  // "over hours", not minutes
  EXPECT_EQ(times[1] - times[0], 5000);
  EXPECT_EQ(times[2] - times[1], 10000);
}

TEST(RetryPolicyTest, JitterStaysWithinItsBounds) {
  NotificationDispatcherOptions o;  // jitter 0.2
  EXPECT_EQ(*NotificationDispatcher::nextAttemptAt(o, 0, 1, 0, 0.0), 4000);
  EXPECT_EQ(*NotificationDispatcher::nextAttemptAt(o, 0, 1, 0, 0.5), 5000);
  EXPECT_EQ(*NotificationDispatcher::nextAttemptAt(o, 0, 1, 0, 0.999999), 6000);
  EXPECT_EQ(*NotificationDispatcher::nextAttemptAt(o, 0, 3, 0, 0.25), 18000);
}

TEST(RetryPolicyTest, TransientErrorsAreRetriedOthersAreNot) {
  EXPECT_TRUE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kFailed, "x", true)));
  EXPECT_TRUE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kUnavailable, "down")));
  EXPECT_TRUE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kTimeout, "slow")));
  EXPECT_TRUE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kCancelled, "stop")));
  EXPECT_FALSE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kNotFound, "gone")));
  EXPECT_FALSE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kInvalidArgument, "x")));
  EXPECT_FALSE(NotificationDispatcher::isRetryable(makeError(ErrorCode::kPluginBug, "x")));
}

// --------------------------------------------------------------- planner

domain::Build finishedBuild(std::optional<std::string> callback) {
  domain::Build b;
  b.task_id = domain::newTaskId();
  b.project_id = "demo";
  b.spec.prompt = "p";
  b.spec.callback_url = std::move(callback);
  return b;
}

DeliveryPlannerOptions plannerOptions(std::vector<NotifierBinding> bindings) {
  DeliveryPlannerOptions o;
  o.notifiers = [bindings](const domain::Build&) { return bindings; };
  o.encode = &codec::encodeDeliveryEvent;
  o.clock = [] { return TimeMs{1767225600000}; };  // 2026-01-01T00:00:00Z
  return o;
}

TEST(DeliveryPlannerTest, OneDeliveryPerNotifierWithTheEventDocument) {
  const DeliveryPlanner planner(plannerOptions({{"hook.prod", true}, {"log", false}}));
  const domain::Build b = finishedBuild("https://ci.example.test/cb");
  ports::Outcome o;
  o.status = BuildStatus::kFailed;
  o.error = "tests failed";
  o.result.output = "2 failures";
  const auto planned = planner.plan(b, o);
  ASSERT_EQ(planned.size(), 2u);
  EXPECT_EQ(planned[0].notifier, "hook.prod");
  EXPECT_EQ(planned[0].event_id, "msg_" + b.task_id + "_hook~prod");
  EXPECT_EQ(planned[0].target, "https://ci.example.test/cb");
  EXPECT_EQ(planned[1].notifier, "log");
  EXPECT_EQ(planned[1].target, "https://ci.example.test/cb");
  EXPECT_EQ(planned[0].payload.rfind(R"({"id":"msg_)", 0), 0u) << planned[0].payload;
  const json event = json::parse(planned[0].payload);
  EXPECT_EQ(event["id"], planned[0].event_id);
  EXPECT_EQ(event["type"], "build.failed");
  EXPECT_EQ(event["timestamp"], "2026-01-01T00:00:00.000Z");
  EXPECT_EQ(event["data"]["task_id"], b.task_id);
  EXPECT_EQ(event["data"]["project_id"], "demo");
  EXPECT_EQ(event["data"]["status"], "failed");
  EXPECT_EQ(event["data"]["error_kind"], "workload");  // as the store defaults it
  EXPECT_EQ(event["data"]["result"]["output"], "2 failures");
  EXPECT_EQ(event["data"]["result"]["error"], "tests failed");
  EXPECT_EQ(event["data"]["result"]["success"], false);
}

TEST(DeliveryPlannerTest, AWebhookWithoutUrlSendsNothingWhenTheBuildHasNoCallback) {
  const DeliveryPlanner planner(plannerOptions({{"hook", true}, {"log", false}}));
  ports::Outcome o;
  o.status = BuildStatus::kCancelled;
  const auto planned = planner.plan(finishedBuild(std::nullopt), o);
  ASSERT_EQ(planned.size(), 1u);
  EXPECT_EQ(planned[0].notifier, "log");
  EXPECT_EQ(planned[0].target, "");
  const json event = json::parse(planned[0].payload);
  EXPECT_EQ(event["type"], "build.cancelled");
  EXPECT_EQ(event["data"]["error_kind"], "cancelled");
  EXPECT_TRUE(DeliveryPlanner(plannerOptions({})).plan(finishedBuild("http://x.test/"), o).empty());
}

// ------------------------------------------------------------ dispatcher

// A notifier script: answers each attempt; records every delivery it saw.
struct ScriptedNotifier {
  std::mutex mu;
  std::vector<Delivery> seen;
  std::function<Result<std::string>(int attempt_index)> answer;

  Result<std::string> operator()(const Delivery& d) {
    int index;
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back(d);
      index = static_cast<int>(seen.size()) - 1;
    }
    return answer(index);
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return seen.size();
  }
};

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln-dispatch-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto opened = store::openSqliteStore({(dir_ / "kiln.db").string(), 5000});
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    store_ = std::move(opened).value();
    domain::Project p;
    p.id = "demo";
    p.repo_url = "/srv/demo.git";
    p.max_running_builds = 4;
    ASSERT_TRUE(store_->createProject(p).ok());
  }
  void TearDown() override {
    dispatcher_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Options for fast tests: short, exact (unjittered) backoff; no blind scans.
  NotificationDispatcherOptions options() {
    NotificationDispatcherOptions o;
    o.owner = "test";
    o.threads = 1;
    o.first_backoff = 60ms;
    o.max_backoff = 1s;
    o.max_age = 1h;
    o.jitter = 0;
    o.scan_every = 60s;
    o.notify = [this](const Delivery& d, const std::function<bool()>&) { return notifier_(d); };
    o.log = [](const std::string&) {};
    return o;
  }

  // A finished build with one delivery per notifier name; its task id.
  std::string finishWith(const std::vector<std::string>& notifiers) {
    domain::Build b;
    b.project_id = "demo";
    b.branch = "b" + std::to_string(builds_++);
    b.spec.prompt = "p";
    auto enqueued = store_->enqueueBuild(b);
    EXPECT_TRUE(enqueued.ok());
    auto claim = store_->claim("w", 30s);
    EXPECT_TRUE(claim.ok() && claim->has_value());
    ports::Outcome o;
    for (const auto& n : notifiers) {
      const std::string id = domain::deliveryEventId((*claim)->build.task_id, n);
      o.deliveries.push_back({n, "http://receiver.test/hook", id, R"({"id":")" + id + R"("})"});
    }
    EXPECT_TRUE(store_->finish((*claim)->build.task_id, (*claim)->lease_token, o).ok());
    return (*claim)->build.task_id;
  }

  Delivery only(const std::string& task_id) {
    auto list = store_->listDeliveries(task_id);
    EXPECT_TRUE(list.ok());
    EXPECT_EQ(list->size(), 1u);
    return list->empty() ? Delivery{} : list->front();
  }

  std::filesystem::path dir_;
  std::unique_ptr<ports::Store> store_;
  ScriptedNotifier notifier_;
  std::unique_ptr<NotificationDispatcher> dispatcher_;
  int builds_ = 0;
};

TEST_F(DispatcherTest, RetriesWithBackoffUntilDeliveredRecordingEveryAttempt) {
  notifier_.answer = [](int i) -> Result<std::string> {
    if (i < 3) return makeError(ErrorCode::kUnavailable, "HTTP 500 from receiver", true);
    return std::string("HTTP 204");
  };
  const std::string task = finishWith({"hook"});
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, options());
  dispatcher_->start();
  ASSERT_TRUE(eventually([&] { return only(task).state == DeliveryState::kDelivered; }, 10s));

  const Delivery d = only(task);
  EXPECT_EQ(d.attempts, 4);
  EXPECT_EQ(d.last_error, "");
  ASSERT_EQ(d.attempt_log.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(d.attempt_log[i].attempt, i + 1);
    EXPECT_EQ(d.attempt_log[i].ok, i == 3);
    EXPECT_EQ(d.attempt_log[i].detail, i == 3 ? "HTTP 204" : "HTTP 500 from receiver");
    EXPECT_GE(d.attempt_log[i].duration_ms, 0);
  }
  // The gaps follow the schedule (60, 120, 240 ms): never early, and soon
  // after they are due (the dispatcher does not wait for its 60 s scan).
  const std::vector<TimeMs> want = {60, 120, 240};
  for (int i = 0; i < 3; ++i) {
    const TimeMs gap = d.attempt_log[i + 1].at - d.attempt_log[i].at;
    EXPECT_GE(gap, want[i]) << "gap " << i;
    EXPECT_LT(gap, want[i] + 1500) << "gap " << i;
  }
  // One event id, the same delivery, on every attempt.
  ASSERT_EQ(notifier_.count(), 4u);
  for (const Delivery& seen : notifier_.seen) {
    EXPECT_EQ(seen.event_id, d.event_id);
    EXPECT_EQ(seen.id, d.id);
    EXPECT_EQ(seen.payload, d.payload);
    EXPECT_EQ(seen.target, "http://receiver.test/hook");
  }
}

TEST_F(DispatcherTest, APermanentErrorFailsTheDeliveryAtOnce) {
  notifier_.answer = [](int) -> Result<std::string> {
    return makeError(ErrorCode::kNotFound, "notifier instance \"gone\" is not configured");
  };
  const std::string task = finishWith({"gone"});
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, options());
  EXPECT_EQ(dispatcher_->dispatchDue("test/x"), 1);
  const Delivery d = only(task);
  EXPECT_EQ(d.state, DeliveryState::kFailed);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_FALSE(d.next_attempt_at.has_value());
  EXPECT_THAT(d.last_error, HasSubstr("not configured"));
  EXPECT_EQ(dispatcher_->dispatchDue("test/x"), 0);
}

TEST_F(DispatcherTest, GivesUpWhenTheNextRetryWouldComeTooLate) {
  notifier_.answer = [](int) -> Result<std::string> {
    return makeError(ErrorCode::kTimeout, "timed out after 10000 ms");
  };
  auto o = options();
  o.max_age = 700ms;  // attempts at 0, 60, 180, 420 ms; the next (900 ms) is past it
  const std::string task = finishWith({"hook"});
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, o);
  dispatcher_->start();
  ASSERT_TRUE(eventually([&] { return only(task).state == DeliveryState::kFailed; }, 10s));
  const Delivery d = only(task);
  EXPECT_EQ(d.attempts, 4);
  EXPECT_EQ(d.last_error, "timed out after 10000 ms");
  ASSERT_EQ(d.attempt_log.size(), 4u);
  EXPECT_LE(d.attempt_log.back().at - d.created_at, 700);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(notifier_.count(), 4u);  // nothing after giving up
}

TEST_F(DispatcherTest, ADeliveryLeftByADeadDispatcherIsSentOnceItsLeaseExpires) {
  notifier_.answer = [](int) -> Result<std::string> { return std::string("HTTP 200"); };
  const std::string task = finishWith({"hook"});
  // Another process claimed it and died before recording anything.
  auto stolen = store_->claimDueDeliveries("dead/d0", 1, 200ms);
  ASSERT_TRUE(stolen.ok());
  ASSERT_EQ(stolen->size(), 1u);
  auto o = options();
  o.scan_every = 100ms;  // the periodic scan is what finds it
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, o);
  dispatcher_->start();
  ASSERT_TRUE(eventually([&] { return only(task).state == DeliveryState::kDelivered; }, 10s));
  ASSERT_EQ(notifier_.count(), 1u);
  EXPECT_EQ(notifier_.seen[0].event_id, (*stolen)[0].event_id);
  EXPECT_EQ(only(task).attempts, 1);
}

TEST_F(DispatcherTest, AFinishingBuildWakesTheDispatcherThroughTheWorkerPool) {
  notifier_.answer = [](int) -> Result<std::string> { return std::string("written"); };
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, options());  // scans every 60 s
  dispatcher_->start();
  std::this_thread::sleep_for(100ms);  // its first scan found nothing

  struct Executor : ports::BuildExecutor {
    ports::Outcome execute(const domain::Build&, const domain::Project&,
                           const ports::ExecutionControl&) override {
      ports::Outcome o;
      o.status = BuildStatus::kCompleted;
      o.result.success = true;
      o.result.commit_sha = "0123abcd";
      return o;
    }
  } executor;
  const DeliveryPlanner planner(plannerOptions({{"log", false}, {"hook", true}}));
  WorkerPoolOptions wo;
  wo.slots = 1;
  wo.worker_id = "w";
  wo.log = [](const std::string&) {};
  wo.plan_deliveries = [&planner](const domain::Build& b, const ports::Outcome& o) {
    return planner.plan(b, o);
  };
  wo.on_terminal = [this] { dispatcher_->wake(); };
  WorkerPool pool(*store_, executor, wo);
  pool.start();

  BuildService service(*store_, BuildServiceOptions{});
  domain::BuildSpec spec;
  spec.prompt = "p";
  spec.callback_url = "http://receiver.test/cb";
  auto submitted = service.submit("demo", spec);
  ASSERT_TRUE(submitted.ok()) << submitted.error().message;
  const std::string task = submitted->task_id;
  ASSERT_TRUE(eventually(
      [&] {
        auto list = store_->listDeliveries(task);
        if (!list.ok() || list->size() != 2) return false;
        for (const Delivery& d : *list) {
          if (d.state != DeliveryState::kDelivered) return false;
        }
        return true;
      },
      5s));
  pool.drain(2s);
  auto list = store_->listDeliveries(task);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].notifier, "log");
  EXPECT_EQ((*list)[1].notifier, "hook");
  const json event = json::parse((*list)[1].payload);
  EXPECT_EQ(event["type"], "build.completed");
  EXPECT_EQ(event["data"]["result"]["commit_sha"], "0123abcd");
  EXPECT_EQ((*list)[1].attempt_log.at(0).detail, "written");
  EXPECT_EQ(store_->getBuild(task)->status, BuildStatus::kCompleted);
}

TEST_F(DispatcherTest, CancellingAPendingBuildSendsItsNotificationAtOnce) {
  notifier_.answer = [](int) -> Result<std::string> { return std::string("HTTP 204"); };
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, options());  // scans every 60 s
  dispatcher_->start();
  std::this_thread::sleep_for(100ms);
  const DeliveryPlanner planner(plannerOptions({{"hook", true}}));
  BuildServiceOptions bo;
  bo.plan_deliveries = [&planner](const domain::Build& b, const ports::Outcome& o) {
    return planner.plan(b, o);
  };
  bo.on_terminal = [this] { dispatcher_->wake(); };
  BuildService service(*store_, bo);
  domain::BuildSpec spec;
  spec.prompt = "p";
  spec.callback_url = "http://receiver.test/cb";
  auto submitted = service.submit("demo", spec);  // no workers: it stays pending
  ASSERT_TRUE(submitted.ok()) << submitted.error().message;
  auto cancelled = service.cancel(submitted->task_id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.error().message;
  EXPECT_EQ(cancelled->status, BuildStatus::kCancelled);
  ASSERT_TRUE(
      eventually([&] { return only(submitted->task_id).state == DeliveryState::kDelivered; }, 5s));
  const json event = json::parse(only(submitted->task_id).payload);
  EXPECT_EQ(event["type"], "build.cancelled");
  EXPECT_THAT(event["data"]["result"]["error"].get<std::string>(),
              HasSubstr("cancelled before it started"));
}

TEST_F(DispatcherTest, StopWaitsForTheAttemptInFlightAndRecordsIt) {
  std::atomic<bool> entered{false};
  notifier_.answer = [&](int) -> Result<std::string> {
    entered = true;
    std::this_thread::sleep_for(300ms);
    return std::string("HTTP 204");
  };
  const std::string task = finishWith({"hook"});
  dispatcher_ = std::make_unique<NotificationDispatcher>(*store_, options());
  dispatcher_->start();
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  dispatcher_->stop();
  EXPECT_EQ(only(task).state, DeliveryState::kDelivered);
}

}  // namespace
}  // namespace kiln::services
