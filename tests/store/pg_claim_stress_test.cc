// The PostgreSQL work queue under real concurrency: separate worker
// processes (pg_claim_worker), each with its own pool and LISTEN connection,
// racing for the same tasks in a fresh database.
//
// Needs the throwaway server that scripts/test.sh starts (KILN_TEST_PG_URL,
// an admin URL); without it the tests fail, never skip.
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "kiln/domain/build.h"
#include "kiln/ports/store.h"
#include "kiln/store/open.h"
#include "kiln_server.h"
#include "subprocess.h"

namespace kiln::store {
namespace {

using domain::Build;
using domain::BuildStatus;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// The next stdout line of `p`, or a test failure naming what was awaited.
std::string expectLine(testing::Subprocess& p, const char* what,
                       std::chrono::milliseconds timeout = 60s) {
  std::optional<std::string> line = p.readLine(timeout);
  if (!line) {
    p.wait(1s);
    ADD_FAILURE() << "no '" << what << "' line from pg_claim_worker; stderr: " << p.err();
    return "";
  }
  return *line;
}

class PgClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      db_ = std::make_unique<::kiln::testing::TestDatabase>();
    } catch (const std::exception& e) {
      GTEST_FAIL() << e.what();
    }
    admin_url_ = db_->adminUrl();
    database_ = db_->name();
    url_ = db_->url();
    PostgresOptions o;
    o.url = url_;
    o.pool_size = 4;
    auto opened = openPostgresStore(o);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    store_ = std::move(opened).value();
  }

  void TearDown() override {
    store_.reset();
    db_.reset();
  }

  domain::Project project(const std::string& id, int max_running) {
    domain::Project p;
    p.id = id;
    p.repo_url = "https://git.example.test/" + id + ".git";
    p.max_running_builds = max_running;
    p.max_pending_builds = 10000;
    return p;
  }

  Build build(const std::string& project_id, const std::string& branch) {
    Build b;
    b.created_at = next_ms_++;  // one id per millisecond: ids sort by creation
    b.task_id = domain::newTaskId(b.created_at);
    b.project_id = project_id;
    b.branch = branch;
    b.spec.prompt = "stress " + branch;
    b.spec.branch = branch;
    return b;
  }

  pqxx::result query(const std::string& sql) {
    pqxx::connection c(url_);
    pqxx::read_transaction tx(c);
    return tx.exec(sql);
  }

  std::string admin_url_;
  std::string database_;
  std::string url_;
  std::unique_ptr<::kiln::testing::TestDatabase> db_;
  std::unique_ptr<ports::Store> store_;
  domain::TimeMs next_ms_ = domain::nowMs();
};

// The issue's test: 2 processes x 4 threads claim 2,000 builds; each is
// completed exactly once, none is lost or left pending, and the claim rules
// hold throughout (one build per project+branch at a time, in order; at
// most max_running_builds per project).
TEST_F(PgClaimTest, TwoProcessesOfFourThreadsCompleteEveryBuildExactlyOnce) {
  constexpr int kProjects = 10;
  constexpr int kBranches = 5;  // 50 project/branch queues
  constexpr int kMaxRunning = 3;
  constexpr int kBuilds = 2000;
  constexpr int kProcesses = 2;
  constexpr int kThreads = 4;
  for (int p = 0; p < kProjects; ++p) {
    ASSERT_TRUE(store_->createProject(project("p" + std::to_string(p), kMaxRunning)).ok());
  }

  // Enqueued up front, project by project: the oldest builds crowd into
  // one project at a time, so the running limit is reached all along.
  std::vector<Build> builds;
  for (int i = 0; i < kBuilds; ++i) {
    builds.push_back(
        build("p" + std::to_string(i * kProjects / kBuilds), "br" + std::to_string(i % kBranches)));
  }
  std::vector<std::thread> enqueuers;
  std::vector<std::string> enqueue_errors(4);
  for (int t = 0; t < 4; ++t) {
    enqueuers.emplace_back([&, t] {
      for (size_t i = t; i < builds.size(); i += 4) {
        Result<Build> r = store_->enqueueBuild(builds[i]);
        if (!r.ok()) enqueue_errors[t] = r.error().message;
      }
    });
  }
  for (auto& t : enqueuers) t.join();
  for (const std::string& e : enqueue_errors) ASSERT_EQ(e, "");

  std::vector<std::unique_ptr<testing::Subprocess>> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(std::make_unique<testing::Subprocess>(
        std::vector<std::string>{KILN_PG_CLAIM_WORKER, "loop", url_, "proc" + std::to_string(i),
                                 std::to_string(kThreads), "5000", std::to_string(kBuilds)}));
  }
  for (auto& w : workers) ASSERT_EQ(expectLine(*w, "ready"), "ready");

  long total = 0;
  for (auto& w : workers) {
    const std::string line = expectLine(*w, "completed", 300s);
    long completed = -1;
    long unavailable = -1;
    ASSERT_EQ(std::sscanf(line.c_str(), "completed %ld unavailable %ld", &completed, &unavailable),
              2)
        << line << "; stderr: " << w->err();
    EXPECT_GT(completed, 0) << "one worker process did no work";
    total += completed;
    EXPECT_EQ(w->wait(30s), std::optional<int>(0)) << w->err();
  }
  EXPECT_EQ(total, kBuilds);

  const pqxx::row counts = query(R"(
SELECT count(*),
       count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE attempts = 1),
       count(*) FILTER (WHERE status IN ('pending', 'running'))
  FROM builds)")[0];
  EXPECT_EQ(counts[0].as<long>(), kBuilds);
  EXPECT_EQ(counts[1].as<long>(), kBuilds) << "builds not completed";
  EXPECT_EQ(counts[2].as<long>(), kBuilds) << "builds claimed more than once";
  EXPECT_EQ(counts[3].as<long>(), 0) << "builds left pending or running";

  const pqxx::result bad_events = query(R"(
SELECT b.task_id,
       count(e.*) FILTER (WHERE e.from_status = 'running' AND e.to_status = 'completed') AS done,
       count(e.*) FILTER (WHERE e.from_status = 'pending' AND e.to_status = 'running') AS claims
  FROM builds b LEFT JOIN build_events e ON e.task_id = b.task_id
 GROUP BY b.task_id
HAVING count(e.*) FILTER (WHERE e.from_status = 'running' AND e.to_status = 'completed') <> 1
    OR count(e.*) FILTER (WHERE e.from_status = 'pending' AND e.to_status = 'running') <> 1)");
  EXPECT_EQ(bad_events.size(), 0u)
      << "first offender: " << (bad_events.empty() ? "" : bad_events[0][0].c_str());
  EXPECT_EQ(query("SELECT count(*) FROM build_audit WHERE status = 'completed'")[0][0].as<long>(),
            kBuilds);

  // The rules, replayed from the events. Event seqs are taken inside the
  // transactions, and a claim's is taken after it saw every finish that let
  // it run commit, so overlaps in seq order are real overlaps.
  std::map<std::string, int> running_in_project;
  std::map<std::string, std::string> running_on_branch;  // project/branch -> task id
  std::map<std::string, std::string> last_started;       // project/branch -> task id
  int max_seen = 0;
  for (const pqxx::row& e : query(R"(
SELECT e.task_id, b.project_id, b.branch, e.to_status
  FROM build_events e JOIN builds b ON b.task_id = e.task_id
 WHERE e.from_status IS NOT NULL
 ORDER BY e.seq)")) {
    const std::string task_id = e[0].as<std::string>();
    const std::string project_id = e[1].as<std::string>();
    const std::string queue = project_id + "/" + e[2].as<std::string>();
    if (e[3].as<std::string>() == "running") {
      ASSERT_EQ(running_on_branch.count(queue), 0u)
          << task_id << " started while " << running_on_branch[queue] << " ran on " << queue;
      ASSERT_LT(last_started[queue], task_id) << queue << " started a build out of order";
      running_on_branch[queue] = task_id;
      last_started[queue] = task_id;
      max_seen = std::max(max_seen, ++running_in_project[project_id]);
      ASSERT_LE(running_in_project[project_id], kMaxRunning) << project_id;
    } else {
      running_on_branch.erase(queue);
      --running_in_project[project_id];
    }
  }
  // The limit was reached, so the test exercised it.
  EXPECT_EQ(max_seen, kMaxRunning);
}

// A worker that stops renewing loses its task to another; its late renew
// and finish are refused and change nothing.
TEST_F(PgClaimTest, AWorkerThatStopsRenewingLosesItsBuildAndItsLateFinishChangesNothing) {
  ASSERT_TRUE(store_->createProject(project("demo", 1)).ok());
  const Build b = build("demo", "main");
  ASSERT_TRUE(store_->enqueueBuild(b).ok());

  testing::Subprocess stalled({KILN_PG_CLAIM_WORKER, "stall", url_, "w-stalled", "300"});
  ASSERT_EQ(expectLine(stalled, "ready"), "ready");
  ASSERT_EQ(expectLine(stalled, "claimed"), "claimed " + b.task_id + " 1");

  // Its lease runs out; this process's reaper gives the build to a new attempt.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  int reaped = 0;
  while (reaped == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    Result<int> r = store_->reapExpiredLeases();
    ASSERT_TRUE(r.ok()) << r.error().message;
    reaped = *r;
  }
  ASSERT_EQ(reaped, 1);
  Result<std::optional<ports::Claim>> again = store_->claim("w-live", 30s);
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_TRUE(again->has_value());
  const ports::Claim live = **again;
  EXPECT_EQ(live.build.task_id, b.task_id);
  EXPECT_EQ(live.build.attempts, 2);
  const size_t events_before = store_->listEvents(b.task_id)->size();

  stalled.signal(SIGUSR1);
  EXPECT_EQ(expectLine(stalled, "renew"), "renew conflict");
  EXPECT_EQ(expectLine(stalled, "finish"), "finish conflict");
  EXPECT_EQ(stalled.wait(10s), std::optional<int>(0)) << stalled.err();

  const Build during = *store_->getBuild(b.task_id);
  EXPECT_EQ(during.status, BuildStatus::kRunning);
  EXPECT_EQ(during.worker_id, "w-live");
  EXPECT_EQ(during.attempts, 2);
  EXPECT_FALSE(during.result.has_value());
  EXPECT_EQ(store_->listEvents(b.task_id)->size(), events_before);

  ports::Outcome o;
  o.result.success = true;
  o.result.output = "from the live worker";
  Result<Build> done = store_->finish(b.task_id, live.lease_token, o);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->status, BuildStatus::kCompleted);
  EXPECT_EQ(done->result->output, "from the live worker");
  EXPECT_EQ(done->attempts, 2);
  EXPECT_THAT(store_->listEvents(b.task_id)->at(2).message, HasSubstr("w-stalled"));
}

// Every pooled connection and the LISTEN connection killed by the server:
// the next operations reconnect and succeed, and wake-ups still arrive. A
// database that refuses connections is reported as kUnavailable (retryable),
// never a crash, and the store recovers when it is back.
TEST_F(PgClaimTest, BrokenConnectionsAreReplacedAndAnUnreachableDatabaseIsUnavailable) {
  ASSERT_TRUE(store_->createProject(project("demo", 5)).ok());
  const Build first = build("demo", "a");
  ASSERT_TRUE(store_->enqueueBuild(first).ok());
  auto admin = [&](const std::string& sql) {
    pqxx::connection c(admin_url_);
    pqxx::nontransaction w(c);
    w.exec(sql);
  };
  const std::string terminate =
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + database_ +
      "' AND pid <> pg_backend_pid()";
  admin(terminate);

  const Build second = build("demo", "b");
  Result<Build> enqueued = store_->enqueueBuild(second);
  ASSERT_TRUE(enqueued.ok()) << enqueued.error().message;
  for (int i = 0; i < 8; ++i) {  // through every pooled connection
    Result<Build> got = store_->getBuild(first.task_id);
    ASSERT_TRUE(got.ok()) << got.error().message;
  }
  Result<std::optional<ports::Claim>> claimed = store_->claim("w1", 30s);
  ASSERT_TRUE(claimed.ok()) << claimed.error().message;
  ASSERT_TRUE(claimed->has_value());
  EXPECT_EQ((*claimed)->build.task_id, first.task_id);

  // The LISTEN connection came back: another store's enqueue wakes a waiter.
  PostgresOptions o;
  o.url = url_;
  o.pool_size = 1;
  std::unique_ptr<ports::Store> other = std::move(openPostgresStore(o)).value();
  for (int i = 0; i < 3; ++i) store_->waitForWork(200ms);  // wake-ups seen so far
  std::thread producer([&] {
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(other->enqueueBuild(build("demo", "c")).ok());
  });
  const auto start = std::chrono::steady_clock::now();
  store_->waitForWork(20s);
  const auto waited = std::chrono::steady_clock::now() - start;
  producer.join();
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 10s);

  // Down: every operation answers kUnavailable, retryable.
  admin("ALTER DATABASE " + database_ + " WITH ALLOW_CONNECTIONS false");
  admin(terminate);
  Result<Build> down = store_->getBuild(first.task_id);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, ErrorCode::kUnavailable) << down.error().message;
  EXPECT_TRUE(down.error().retryable);
  Result<std::optional<ports::Claim>> no_claim = store_->claim("w2", 30s);
  ASSERT_FALSE(no_claim.ok());
  EXPECT_EQ(no_claim.error().code, ErrorCode::kUnavailable) << no_claim.error().message;

  // Back: the store recovers by itself.
  admin("ALTER DATABASE " + database_ + " WITH ALLOW_CONNECTIONS true");
  Result<Build> back = store_->getBuild(first.task_id);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->status, BuildStatus::kRunning);
}

// Several processes starting at once on a fresh database: each migration is
// applied exactly once, and every store opens. A database migrated by a
// newer kiln is refused.
TEST_F(PgClaimTest, ConcurrentStartersApplyEachMigrationOnce) {
  const std::string fresh = database_ + "_m";
  auto admin = [&](const std::string& sql) {
    pqxx::connection c(admin_url_);
    pqxx::nontransaction w(c);
    w.exec(sql);
  };
  admin("CREATE DATABASE " + fresh);
  PostgresOptions o;
  o.url = ::kiln::testing::withDatabase(admin_url_, fresh);
  o.pool_size = 1;
  constexpr int kStarters = 6;
  std::vector<std::string> errors(kStarters);
  std::vector<int> applied(kStarters, -1);
  std::vector<std::thread> starters;
  for (int i = 0; i < kStarters; ++i) {
    starters.emplace_back([&, i] {
      if (i % 2 == 0) {
        Result<MigrationReport> r = migratePostgres(o);
        if (r.ok())
          applied[i] = r->applied;
        else
          errors[i] = r.error().message;
      } else {
        Result<std::unique_ptr<ports::Store>> r = openPostgresStore(o);
        if (!r.ok()) errors[i] = r.error().message;
      }
    });
  }
  for (auto& t : starters) t.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");

  {
    pqxx::connection c(o.url);
    pqxx::work tx(c);
    const pqxx::row r = tx.exec1("SELECT count(*), count(DISTINCT version) FROM schema_migrations");
    EXPECT_EQ(r[0].as<long>(), r[1].as<long>());
    EXPECT_GE(r[0].as<long>(), 1);
    tx.exec("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')");
    tx.commit();
  }
  Result<std::unique_ptr<ports::Store>> newer = openPostgresStore(o);
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.error().code, ErrorCode::kUnsupported);
  EXPECT_THAT(newer.error().message, HasSubstr("9999"));
  admin("DROP DATABASE " + fresh + " WITH (FORCE)");
}

TEST(PgStoreOpen, UnreachableServerIsUnavailableAndTheMessageHidesThePassword) {
  PostgresOptions o;
  o.url = "postgresql://kiln:s3cret-pw@127.0.0.1:1/kiln";
  Result<std::unique_ptr<ports::Store>> r = openPostgresStore(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(r.error().message, HasSubstr("cannot connect to PostgreSQL"));
  EXPECT_THAT(r.error().message, ::testing::Not(HasSubstr("s3cret-pw")));
  o.url = "host=127.0.0.1 port=1 user=kiln password='s3cret-pw' dbname=kiln";
  Result<MigrationReport> m = migratePostgres(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(m.error().message, ::testing::Not(HasSubstr("s3cret-pw")));
}

}  // namespace
}  // namespace kiln::store
