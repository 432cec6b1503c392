// The Store contract (kiln/ports/store.h), run against every adapter: SQLite
// in a fresh temporary file and PostgreSQL in a fresh database per test.
//
// The PostgreSQL instances need a server: scripts/test.sh starts a throwaway
// one and exports KILN_TEST_PG_URL (an admin connection). Without it they
// fail, never skip, so a green run always means both stores passed.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <pqxx/pqxx>

#include "kiln/domain/build.h"
#include "kiln/domain/delivery.h"
#include "kiln/ports/store.h"
#include "kiln/store/open.h"

#include "kiln_server.h"

namespace kiln::store {
namespace {

using domain::Build;
using domain::BuildEvent;
using domain::BuildResult;
using domain::BuildStatus;
using domain::Delivery;
using domain::DeliveryAttempt;
using domain::DeliveryState;
using domain::ErrorKind;
using domain::Project;
using ports::Claim;
using ports::IdempotencyRecord;
using ports::NewDelivery;
using ports::Outcome;
using ports::Store;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// A fresh, empty database for one test. open() may be called several times:
// each Store is another connection (pool) to the same database.
class Backend {
 public:
  virtual ~Backend() = default;
  // Empty when usable; otherwise why the test cannot run (it fails with it).
  virtual std::string unavailable() const { return {}; }
  virtual Result<std::unique_ptr<Store>> open() = 0;
  virtual Result<MigrationReport> migrate() = 0;
};

class SqliteBackend : public Backend {
 public:
  SqliteBackend() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-store-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
  }
  ~SqliteBackend() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Result<std::unique_ptr<Store>> open() override { return openSqliteStore(options()); }
  Result<MigrationReport> migrate() override { return migrateSqlite(options()); }

 private:
  SqliteOptions options() const {
    SqliteOptions o;
    o.path = (dir_ / "data" / "kiln.db").string();  // "data/" does not exist yet
    return o;
  }
  std::filesystem::path dir_;
};

class PostgresBackend : public Backend {
 public:
  PostgresBackend() {
    try {
      db_ = std::make_unique<::kiln::testing::TestDatabase>();
    } catch (const std::exception& e) {
      why_ = e.what();
      return;
    }
    options_.url = db_->url();
    options_.pool_size = 4;
  }
  std::string unavailable() const override { return why_; }
  Result<std::unique_ptr<Store>> open() override { return openPostgresStore(options_); }
  Result<MigrationReport> migrate() override { return migratePostgres(options_); }

 private:
  std::string why_;
  std::unique_ptr<::kiln::testing::TestDatabase> db_;
  PostgresOptions options_;
};

std::unique_ptr<Backend> makeBackend(const std::string& name) {
  if (name == "sqlite") return std::make_unique<SqliteBackend>();
  return std::make_unique<PostgresBackend>();
}

// Unwraps a Result or aborts the test (gtest reports the exception).
struct MustFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T mustImpl(Result<T> r, const char* expr, const char* file, int line) {
  if (!r.ok()) {
    ADD_FAILURE_AT(file, line) << expr << " failed: " << errorCodeName(r.error().code) << ": "
                               << r.error().message;
    throw MustFailed(expr);
  }
  return std::move(r).value();
}
#define MUST(expr) mustImpl((expr), #expr, __FILE__, __LINE__)

#define ASSERT_OK(expr)                                                             \
  do {                                                                              \
    const auto& r_ = (expr);                                                        \
    ASSERT_TRUE(r_.ok()) << #expr << ": " << errorCodeName(r_.error().code) << ": " \
                         << r_.error().message;                                     \
  } while (0)

// Asserts that `expr` failed with `expected`; streams the error otherwise.
#define ASSERT_ERROR(expr, expected)                                                      \
  do {                                                                                    \
    const auto& r_ = (expr);                                                              \
    ASSERT_FALSE(r_.ok()) << #expr << " succeeded; expected " << errorCodeName(expected); \
    ASSERT_EQ(r_.error().code, expected) << r_.error().message;                           \
  } while (0)

// Transitions (from -> to, attempt), without same-status moments such as a
// cancellation request.
struct Step {
  std::optional<BuildStatus> from;
  BuildStatus to;
  int attempt;
  friend bool operator==(const Step&, const Step&) = default;
};

void PrintTo(const Step& s, std::ostream* os) {
  *os << (s.from ? domain::statusName(*s.from) : "(created)") << "->" << domain::statusName(s.to)
      << "@" << s.attempt;
}

std::vector<Step> transitions(const std::vector<BuildEvent>& events) {
  std::vector<Step> out;
  for (const BuildEvent& e : events) {
    if (e.from && *e.from == e.to) continue;
    out.push_back({e.from, e.to, e.attempt});
  }
  return out;
}

std::vector<std::string> ids(const std::vector<Build>& builds) {
  std::vector<std::string> out;
  for (const Build& b : builds) out.push_back(b.task_id);
  return out;
}

class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    backend_ = makeBackend(GetParam());
    const std::string why = backend_->unavailable();
    if (!why.empty()) GTEST_FAIL() << why;
    Result<std::unique_ptr<Store>> opened = backend_->open();
    ASSERT_TRUE(opened.ok()) << "opening the " << GetParam()
                             << " store: " << opened.error().message;
    store_ = std::move(opened).value();
    next_id_ms_ = domain::nowMs();
  }

  void TearDown() override {
    store_.reset();
    backend_.reset();
  }

  Store& store() { return *store_; }
  Backend& backend() { return *backend_; }

  static Project project(const std::string& id, int max_running = 1, int max_pending = 100) {
    Project p;
    p.id = id;
    p.repo_url = "https://git.example.test/" + id + ".git";
    p.default_branch = "main";
    p.source = "api";
    p.max_running_builds = max_running;
    p.max_pending_builds = max_pending;
    p.max_timeout_s = 3600;
    return p;
  }

  // A build whose task id is later than every earlier one: UUIDv7 ids made
  // in the same millisecond do not sort by creation, so each gets its own.
  Build build(const std::string& project_id, const std::string& branch = "main",
              int max_attempts = 3) {
    Build b;
    b.created_at = next_id_ms_++;
    b.task_id = domain::newTaskId(b.created_at);
    b.project_id = project_id;
    b.branch = branch;
    b.spec.prompt = "do the thing on " + branch;
    b.spec.branch = branch;
    b.max_attempts = max_attempts;
    return b;
  }

  Build enqueue(const std::string& project_id, const std::string& branch = "main",
                int max_attempts = 3) {
    return MUST(store().enqueueBuild(build(project_id, branch, max_attempts)));
  }

  // Claims and expects a build.
  Claim claimOne(const std::string& worker, std::chrono::milliseconds lease = 30s) {
    std::optional<Claim> c = MUST(store().claim(worker, lease));
    if (!c) {
      ADD_FAILURE() << "claim(" << worker << ") found nothing runnable";
      throw MustFailed("claim");
    }
    return *c;
  }

  std::optional<std::string> claimId(const std::string& worker) {
    std::optional<Claim> c = MUST(store().claim(worker, 30s));
    if (!c) return std::nullopt;
    return c->build.task_id;
  }

  Build complete(const Claim& c) {
    Outcome o;
    o.status = BuildStatus::kCompleted;
    o.result.success = true;
    return MUST(store().finish(c.build.task_id, c.lease_token, o));
  }

  Build get(const std::string& task_id) { return MUST(store().getBuild(task_id)); }

  std::vector<BuildEvent> events(const std::string& task_id) {
    return MUST(store().listEvents(task_id));
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Store> store_;
  domain::TimeMs next_id_ms_ = 0;
};

// ---------------------------------------------------------------- projects

TEST_P(StoreContract, CreateProjectThenGetReturnsEveryField) {
  Project p = project("demo", 3, 7);
  p.default_branch = "trunk";
  p.max_timeout_s = 900;
  const Project created = MUST(store().createProject(p));
  EXPECT_EQ(created.id, "demo");
  EXPECT_GT(created.created_at, 0);

  const Project got = MUST(store().getProject("demo"));
  EXPECT_EQ(got.id, "demo");
  EXPECT_EQ(got.repo_url, "https://git.example.test/demo.git");
  EXPECT_EQ(got.default_branch, "trunk");
  EXPECT_EQ(got.source, "api");
  EXPECT_EQ(got.max_running_builds, 3);
  EXPECT_EQ(got.max_pending_builds, 7);
  EXPECT_EQ(got.max_timeout_s, 900);
  EXPECT_EQ(got.created_at, created.created_at);
  EXPECT_LT(std::abs(got.created_at - domain::nowMs()), 60'000);
}

TEST_P(StoreContract, CreateExistingProjectIsConflictAndKeepsTheFirst) {
  MUST(store().createProject(project("demo")));
  Project again = project("demo");
  again.repo_url = "https://elsewhere.test/other.git";
  Result<Project> r = store().createProject(again);
  ASSERT_ERROR(r, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr("\"demo\" already exists"));
  EXPECT_EQ(MUST(store().getProject("demo")).repo_url, "https://git.example.test/demo.git");
}

TEST_P(StoreContract, UnknownProjectIsNotFound) {
  Result<Project> r = store().getProject("nope");
  ASSERT_ERROR(r, ErrorCode::kNotFound);
  EXPECT_THAT(r.error().message, HasSubstr("nope"));
}

TEST_P(StoreContract, ListProjectsIsOrderedById) {
  for (const char* id : {"charlie", "alpha", "bravo"}) MUST(store().createProject(project(id)));
  std::vector<std::string> listed;
  for (const Project& p : MUST(store().listProjects())) listed.push_back(p.id);
  EXPECT_THAT(listed, ElementsAre("alpha", "bravo", "charlie"));
}

TEST_P(StoreContract, UpsertProjectInsertsThenUpdates) {
  Project p = project("cfg");
  p.source = "config";
  ASSERT_OK(store().upsertProject(p));
  const Project first = MUST(store().getProject("cfg"));
  EXPECT_EQ(first.source, "config");
  EXPECT_EQ(first.repo_url, "https://git.example.test/cfg.git");

  p.repo_url = "https://git.example.test/moved.git";
  p.default_branch = "develop";
  p.max_running_builds = 4;
  p.max_pending_builds = 9;
  p.max_timeout_s = 60;
  ASSERT_OK(store().upsertProject(p));
  const Project second = MUST(store().getProject("cfg"));
  EXPECT_EQ(second.repo_url, "https://git.example.test/moved.git");
  EXPECT_EQ(second.default_branch, "develop");
  EXPECT_EQ(second.max_running_builds, 4);
  EXPECT_EQ(second.max_pending_builds, 9);
  EXPECT_EQ(second.max_timeout_s, 60);
  EXPECT_EQ(MUST(store().listProjects()).size(), 1u);

  // An API project taken over by the configuration.
  MUST(store().createProject(project("api-made")));
  Project taken = project("api-made");
  taken.source = "config";
  ASSERT_OK(store().upsertProject(taken));
  EXPECT_EQ(MUST(store().getProject("api-made")).source, "config");
}

// ------------------------------------------------------------------ builds

TEST_P(StoreContract, EnqueueWritesTheBuildItsEventAndItsTask) {
  MUST(store().createProject(project("demo", 2)));
  const Build original = enqueue("demo", "main");

  Build b = build("demo", "feature/x", 5);
  b.spec.prompt = "Add a README";
  b.spec.template_name = "readme";
  b.spec.variables = {{"audience", "new contributors"}, {"tone", "friendly"}, {"empty", ""}};
  b.spec.auto_commit = true;
  b.spec.auto_push = true;
  b.spec.callback_url = "https://bot.example.test/hook?x=1";
  b.spec.branch = "feature/x";
  b.spec.commit_message = "docs: add README";
  b.spec.timeout_s = 120;
  b.composition = {{"agent", "claude", "code-agent/claude-code", "1.2.0"},
                   {"notifier", "log", "notifier/log", "0.1.0"}};
  b.retry_of = original.task_id;
  const Build returned = MUST(store().enqueueBuild(b));

  const Build got = get(b.task_id);
  for (const Build* x : {&returned, &got}) {
    EXPECT_EQ(x->task_id, b.task_id);
    EXPECT_EQ(x->project_id, "demo");
    EXPECT_EQ(x->branch, "feature/x");
    EXPECT_EQ(x->status, BuildStatus::kPending);
    EXPECT_EQ(x->spec, b.spec);
    EXPECT_FALSE(x->result.has_value());
    EXPECT_EQ(x->attempts, 0);
    EXPECT_EQ(x->max_attempts, 5);
    EXPECT_EQ(x->error_kind, ErrorKind::kNone);
    EXPECT_EQ(x->error, "");
    EXPECT_LT(std::abs(x->created_at - domain::nowMs()), 60'000);
    EXPECT_FALSE(x->started_at.has_value());
    EXPECT_FALSE(x->finished_at.has_value());
    EXPECT_EQ(x->worker_id, "");
    EXPECT_EQ(x->composition, b.composition);
    EXPECT_EQ(x->retry_of, std::optional<std::string>(original.task_id));
    EXPECT_FALSE(x->cancel_requested);
  }
  EXPECT_FALSE(get(original.task_id).retry_of.has_value());

  const std::vector<BuildEvent> ev = events(b.task_id);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].task_id, b.task_id);
  EXPECT_FALSE(ev[0].from.has_value());
  EXPECT_EQ(ev[0].to, BuildStatus::kPending);
  EXPECT_EQ(ev[0].attempt, 0);
  EXPECT_GT(ev[0].at, 0);

  // The task is queued: the two builds are claimable (different branches).
  std::set<std::string> claimed;
  for (int i = 0; i < 2; ++i) {
    auto id = claimId("w1");
    ASSERT_TRUE(id.has_value());
    claimed.insert(*id);
  }
  EXPECT_EQ(claimed, (std::set<std::string>{original.task_id, b.task_id}));
}

TEST_P(StoreContract, EnqueueForUnknownProjectIsNotFound) {
  Result<Build> r = store().enqueueBuild(build("ghost"));
  ASSERT_ERROR(r, ErrorCode::kNotFound);
  EXPECT_THAT(r.error().message, HasSubstr("ghost"));
  EXPECT_FALSE(MUST(store().claim("w", 30s)).has_value());
}

TEST_P(StoreContract, PendingCapIsResourceExhaustedAndWritesNothing) {
  MUST(store().createProject(project("demo", 1, 3)));
  std::vector<Build> accepted;
  for (int i = 0; i < 3; ++i) accepted.push_back(enqueue("demo", "b" + std::to_string(i)));

  const Build refused = build("demo", "b9");
  Result<Build> r = store().enqueueBuild(refused);
  ASSERT_ERROR(r, ErrorCode::kResourceExhausted);
  EXPECT_THAT(r.error().message, HasSubstr("max_pending_builds"));
  EXPECT_THAT(r.error().message, HasSubstr("3 pending"));
  ASSERT_ERROR(store().getBuild(refused.task_id), ErrorCode::kNotFound);
  ASSERT_ERROR(store().listEvents(refused.task_id), ErrorCode::kNotFound);
  ports::BuildQuery q;
  q.project_id = "demo";
  EXPECT_EQ(MUST(store().listBuilds(q)).builds.size(), 3u);

  // Only pending builds count: once one runs, there is room again.
  claimOne("w1");
  const Build later = MUST(store().enqueueBuild(refused));
  EXPECT_EQ(later.status, BuildStatus::kPending);
  ASSERT_ERROR(store().enqueueBuild(build("demo", "b10")), ErrorCode::kResourceExhausted);
}

TEST_P(StoreContract, CreateProjectAndEnqueueWritesBoth) {
  Project p = project("fresh");
  const Build b = build("fresh");
  const Build stored = MUST(store().createProjectAndEnqueue(p, b));
  EXPECT_EQ(stored.task_id, b.task_id);
  EXPECT_EQ(stored.status, BuildStatus::kPending);
  EXPECT_EQ(MUST(store().getProject("fresh")).repo_url, p.repo_url);
  EXPECT_EQ(get(b.task_id).project_id, "fresh");
  EXPECT_EQ(events(b.task_id).size(), 1u);
  EXPECT_EQ(claimId("w1"), std::optional<std::string>(b.task_id));
}

TEST_P(StoreContract, CreateProjectAndEnqueueOnExistingProjectWritesNothing) {
  MUST(store().createProject(project("demo")));
  Project again = project("demo");
  again.repo_url = "https://elsewhere.test/x.git";
  const Build b = build("demo");
  Result<Build> r = store().createProjectAndEnqueue(again, b);
  ASSERT_ERROR(r, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr("already exists"));
  ASSERT_ERROR(store().getBuild(b.task_id), ErrorCode::kNotFound);
  EXPECT_EQ(MUST(store().getProject("demo")).repo_url, "https://git.example.test/demo.git");
  EXPECT_FALSE(MUST(store().claim("w", 30s)).has_value());
}

TEST_P(StoreContract, CreateProjectAndEnqueueWhoseBuildIsRefusedCreatesNoProject) {
  // A project that accepts no pending builds: the build part fails, so the
  // project must not be created either.
  Result<Build> r = store().createProjectAndEnqueue(project("nothing", 1, 0), build("nothing"));
  ASSERT_ERROR(r, ErrorCode::kResourceExhausted);
  ASSERT_ERROR(store().getProject("nothing"), ErrorCode::kNotFound);
  EXPECT_TRUE(MUST(store().listProjects()).empty());
}

TEST_P(StoreContract, UnknownBuildIsNotFound) {
  const std::string id = domain::newTaskId();
  Result<Build> r = store().getBuild(id);
  ASSERT_ERROR(r, ErrorCode::kNotFound);
  EXPECT_THAT(r.error().message, HasSubstr(id));
  ASSERT_ERROR(store().listEvents(id), ErrorCode::kNotFound);
}

TEST_P(StoreContract, ListBuildsIsNewestFirstAndFiltersByStatus) {
  MUST(store().createProject(project("demo", 5)));
  MUST(store().createProject(project("other")));
  std::vector<Build> made;
  for (int i = 0; i < 5; ++i) made.push_back(enqueue("demo", "b" + std::to_string(i)));
  enqueue("other");  // never listed under demo

  ports::BuildQuery q;
  q.project_id = "demo";
  const ports::BuildPage all = MUST(store().listBuilds(q));
  EXPECT_THAT(ids(all.builds), ElementsAre(made[4].task_id, made[3].task_id, made[2].task_id,
                                           made[1].task_id, made[0].task_id));
  EXPECT_FALSE(all.next_cursor.has_value());

  const Claim running = claimOne("w1");  // the oldest: made[0]
  ASSERT_EQ(running.build.task_id, made[0].task_id);
  MUST(store().requestCancel(made[2].task_id, "not needed"));

  q.status = BuildStatus::kPending;
  EXPECT_THAT(ids(MUST(store().listBuilds(q)).builds),
              ElementsAre(made[4].task_id, made[3].task_id, made[1].task_id));
  q.status = BuildStatus::kRunning;
  EXPECT_THAT(ids(MUST(store().listBuilds(q)).builds), ElementsAre(made[0].task_id));
  q.status = BuildStatus::kCancelled;
  EXPECT_THAT(ids(MUST(store().listBuilds(q)).builds), ElementsAre(made[2].task_id));
  q.status = BuildStatus::kCompleted;
  EXPECT_TRUE(MUST(store().listBuilds(q)).builds.empty());
}

TEST_P(StoreContract, ListBuildsPaginatesWithCursors) {
  MUST(store().createProject(project("demo")));
  std::vector<std::string> made;
  for (int i = 0; i < 7; ++i) made.push_back(enqueue("demo").task_id);
  std::reverse(made.begin(), made.end());  // newest first

  ports::BuildQuery q;
  q.project_id = "demo";
  q.limit = 3;
  const ports::BuildPage p1 = MUST(store().listBuilds(q));
  ASSERT_THAT(ids(p1.builds), ElementsAre(made[0], made[1], made[2]));
  ASSERT_EQ(p1.next_cursor, std::optional<std::string>(made[2]));

  q.before = p1.next_cursor;
  const ports::BuildPage p2 = MUST(store().listBuilds(q));
  ASSERT_THAT(ids(p2.builds), ElementsAre(made[3], made[4], made[5]));
  ASSERT_EQ(p2.next_cursor, std::optional<std::string>(made[5]));

  q.before = p2.next_cursor;
  const ports::BuildPage p3 = MUST(store().listBuilds(q));
  EXPECT_THAT(ids(p3.builds), ElementsAre(made[6]));
  EXPECT_FALSE(p3.next_cursor.has_value());

  // A page that ends exactly at the last build has no cursor either.
  q.before = std::nullopt;
  q.limit = 7;
  const ports::BuildPage exact = MUST(store().listBuilds(q));
  EXPECT_THAT(ids(exact.builds), ElementsAreArray(made));
  EXPECT_FALSE(exact.next_cursor.has_value());
}

TEST_P(StoreContract, ListBuildsOfUnknownProjectIsNotFound) {
  ports::BuildQuery q;
  q.project_id = "ghost";
  ASSERT_ERROR(store().listBuilds(q), ErrorCode::kNotFound);
}

// ------------------------------------------------------------------- claims

TEST_P(StoreContract, ClaimOnAnEmptyQueueFindsNothing) {
  EXPECT_FALSE(MUST(store().claim("w1", 30s)).has_value());
  MUST(store().createProject(project("demo")));
  EXPECT_FALSE(MUST(store().claim("w1", 30s)).has_value());
}

TEST_P(StoreContract, ClaimMakesTheBuildRunningUnderALease) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const domain::TimeMs before = domain::nowMs();
  const Claim c = claimOne("worker-1");
  EXPECT_EQ(c.build.task_id, b.task_id);
  EXPECT_EQ(c.build.status, BuildStatus::kRunning);
  EXPECT_EQ(c.build.attempts, 1);
  EXPECT_EQ(c.build.worker_id, "worker-1");
  ASSERT_TRUE(c.build.started_at.has_value());
  EXPECT_GE(*c.build.started_at, before - 1000);
  EXPECT_EQ(c.build.spec, b.spec);
  EXPECT_FALSE(c.lease_token.empty());

  const Build got = get(b.task_id);
  EXPECT_EQ(got.status, BuildStatus::kRunning);
  EXPECT_EQ(got.attempts, 1);
  EXPECT_EQ(got.worker_id, "worker-1");
  EXPECT_EQ(got.started_at, c.build.started_at);
  EXPECT_FALSE(got.finished_at.has_value());

  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1}));
  // Claimed once only.
  EXPECT_FALSE(MUST(store().claim("worker-2", 30s)).has_value());
}

TEST_P(StoreContract, ClaimTakesTheOldestRunnableBuildFirst) {
  MUST(store().createProject(project("a", 10)));
  MUST(store().createProject(project("b", 10)));
  std::vector<std::string> made;
  for (int i = 0; i < 3; ++i) {
    made.push_back(enqueue("a", "x" + std::to_string(i)).task_id);
    made.push_back(enqueue("b", "y" + std::to_string(i)).task_id);
  }
  std::vector<std::string> claimed;
  while (auto id = claimId("w")) claimed.push_back(*id);
  EXPECT_EQ(claimed, made);
}

TEST_P(StoreContract, SameBranchBuildsRunOneAtATime) {
  MUST(store().createProject(project("demo", 5)));
  const Build a1 = enqueue("demo", "main");
  const Build a2 = enqueue("demo", "main");
  const Build b1 = enqueue("demo", "feature");

  const Claim first = claimOne("w1");
  EXPECT_EQ(first.build.task_id, a1.task_id);
  // a2 waits for a1; the other branch does not.
  EXPECT_EQ(claimId("w2"), std::optional<std::string>(b1.task_id));
  EXPECT_FALSE(claimId("w3").has_value());
  EXPECT_EQ(get(a2.task_id).status, BuildStatus::kPending);

  complete(first);
  EXPECT_EQ(claimId("w3"), std::optional<std::string>(a2.task_id));
}

TEST_P(StoreContract, SameBranchBuildsRunInOrderEvenWhenAnOlderOneComesBack) {
  MUST(store().createProject(project("demo", 5)));
  const Build a1 = enqueue("demo", "main");
  const Build a2 = enqueue("demo", "main");
  const Build a3 = enqueue("demo", "main");
  // Same branch in another project is independent.
  MUST(store().createProject(project("other", 5)));
  const Build o1 = enqueue("other", "main");

  Claim c = claimOne("w1");
  ASSERT_EQ(c.build.task_id, a1.task_id);
  EXPECT_EQ(claimId("w2"), std::optional<std::string>(o1.task_id));
  ASSERT_OK(store().release(c.build.task_id, c.lease_token, "draining"));
  // a1 is pending again and older than a2: it goes first again.
  c = claimOne("w2");
  EXPECT_EQ(c.build.task_id, a1.task_id);
  complete(c);
  c = claimOne("w2");
  EXPECT_EQ(c.build.task_id, a2.task_id);
  EXPECT_FALSE(claimId("w3").has_value());
  complete(c);
  c = claimOne("w2");
  EXPECT_EQ(c.build.task_id, a3.task_id);
}

TEST_P(StoreContract, MaxRunningBuildsLimitsEachProject) {
  MUST(store().createProject(project("demo", 2)));
  MUST(store().createProject(project("other", 1)));
  const Build x = enqueue("demo", "x");
  const Build y = enqueue("demo", "y");
  const Build z = enqueue("demo", "z");
  const Build o = enqueue("other", "main");

  const Claim cx = claimOne("w1");
  const Claim cy = claimOne("w2");
  EXPECT_EQ(cx.build.task_id, x.task_id);
  EXPECT_EQ(cy.build.task_id, y.task_id);
  // demo is at its limit: z waits although its branch is free; other runs.
  EXPECT_EQ(claimId("w3"), std::optional<std::string>(o.task_id));
  EXPECT_FALSE(claimId("w4").has_value());
  EXPECT_EQ(get(z.task_id).status, BuildStatus::kPending);

  complete(cx);
  EXPECT_EQ(claimId("w4"), std::optional<std::string>(z.task_id));
}

// Worker threads on each of `stores` claim and finish until nothing is
// runnable (every build was enqueued up front); then every build in `made`
// must have been claimed exactly once and completed.
void expectEachClaimedOnce(const std::vector<Store*>& stores, int threads_per_store,
                           const std::set<std::string>& made) {
  const size_t n = stores.size() * static_cast<size_t>(threads_per_store);
  std::vector<std::vector<std::string>> claimed(n);
  std::vector<std::string> failures(n);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n; ++t) {
    Store* store = stores[t % stores.size()];
    threads.emplace_back([&, store, t] {
      const std::string worker = "worker-" + std::to_string(t);
      while (true) {
        Result<std::optional<Claim>> c = store->claim(worker, 60s);
        if (!c.ok()) {
          if (c.error().code == ErrorCode::kUnavailable) continue;  // busy: retry
          failures[t] = "claim: " + c.error().message;
          return;
        }
        if (!c->has_value()) return;
        claimed[t].push_back((*c)->build.task_id);
        Outcome o;
        o.result.success = true;
        Result<Build> f = store->finish((*c)->build.task_id, (*c)->lease_token, o);
        while (!f.ok() && f.error().code == ErrorCode::kUnavailable) {
          f = store->finish((*c)->build.task_id, (*c)->lease_token, o);
        }
        if (!f.ok()) {
          failures[t] = "finish: " + f.error().message;
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const std::string& f : failures) EXPECT_EQ(f, "");

  std::map<std::string, int> times;
  for (const auto& list : claimed) {
    for (const std::string& id : list) ++times[id];
  }
  EXPECT_EQ(times.size(), made.size());
  for (const auto& [id, count] : times) {
    EXPECT_EQ(count, 1) << id << " was claimed " << count << " times";
  }
  for (const std::string& id : made) {
    Result<Build> b = stores[0]->getBuild(id);
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_EQ(b->status, BuildStatus::kCompleted) << id;
    EXPECT_EQ(b->attempts, 1) << id;
  }
}

TEST_P(StoreContract, ConcurrentClaimsNeverReturnTheSameBuild) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  MUST(store().createProject(project("many", 1000, 10000)));
  std::set<std::string> made;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    made.insert(enqueue("many", "branch-" + std::to_string(i)).task_id);
  }
  expectEachClaimedOnce({&store()}, kThreads, made);
}

// Two Stores are two connections (pools), as two kiln processes would have.
TEST_P(StoreContract, ConcurrentClaimsThroughTwoStoresNeverReturnTheSameBuild) {
  MUST(store().createProject(project("many", 1000, 10000)));
  std::set<std::string> made;
  for (int i = 0; i < 200; ++i) {
    made.insert(enqueue("many", "branch-" + std::to_string(i)).task_id);
  }
  std::unique_ptr<Store> other = MUST(backend().open());
  expectEachClaimedOnce({&store(), other.get()}, 2, made);
}

TEST_P(StoreContract, ConcurrentClaimsKeepTheBranchAndRunningRules) {
  constexpr int kThreads = 4;
  constexpr int kBranches = 5;
  constexpr int kPerBranch = 8;
  constexpr int kMaxRunning = 3;
  MUST(store().createProject(project("demo", kMaxRunning, 1000)));
  std::map<std::string, std::vector<std::string>> made;  // branch -> ids, oldest first
  for (int i = 0; i < kPerBranch; ++i) {
    for (int b = 0; b < kBranches; ++b) {
      const std::string branch = "br" + std::to_string(b);
      made[branch].push_back(enqueue("demo", branch).task_id);
    }
  }

  std::mutex mu;
  std::map<std::string, int> running_by_branch;
  int running = 0;
  std::map<std::string, std::vector<std::string>> order;  // branch -> claim order
  std::vector<std::string> violations;
  std::atomic<int> finished{0};
  std::atomic<bool> stop{false};  // set on the first error so no thread waits forever
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string worker = "worker-" + std::to_string(t);
      while (!stop && finished.load() < kBranches * kPerBranch) {
        Result<std::optional<Claim>> c = store().claim(worker, 60s);
        if (!c.ok() || !c->has_value()) {
          if (!c.ok() && c.error().code != ErrorCode::kUnavailable) {
            std::lock_guard<std::mutex> lock(mu);
            violations.push_back("claim: " + c.error().message);
            stop = true;
            return;
          }
          store().waitForWork(20ms);
          continue;
        }
        const Claim& claim = **c;
        {
          std::lock_guard<std::mutex> lock(mu);
          order[claim.build.branch].push_back(claim.build.task_id);
          if (++running_by_branch[claim.build.branch] > 1) {
            violations.push_back("two builds of " + claim.build.branch + " ran at once");
          }
          if (++running > kMaxRunning) {
            violations.push_back(std::to_string(running) + " builds ran at once");
          }
        }
        std::this_thread::sleep_for(1ms);
        {
          std::lock_guard<std::mutex> lock(mu);
          --running_by_branch[claim.build.branch];
          --running;
        }
        Outcome o;
        o.result.success = true;
        Result<Build> f = store().finish(claim.build.task_id, claim.lease_token, o);
        if (!f.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          violations.push_back("finish: " + f.error().message);
          stop = true;
          return;
        }
        ++finished;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(violations, ::testing::IsEmpty());
  EXPECT_EQ(finished.load(), kBranches * kPerBranch);
  EXPECT_EQ(order, made) << "each branch must run its builds in order";
}

// ------------------------------------------------------------------ leases

TEST_P(StoreContract, RenewExtendsTheLease) {
  MUST(store().createProject(project("demo")));
  enqueue("demo");
  const Claim c = claimOne("w1", 150ms);
  const ports::LeaseState s = MUST(store().renew(c.build.task_id, c.lease_token, 10s));
  EXPECT_FALSE(s.cancel_requested);
  std::this_thread::sleep_for(300ms);  // well past the first lease
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 0);
  EXPECT_EQ(get(c.build.task_id).status, BuildStatus::kRunning);
  ASSERT_OK(store().renew(c.build.task_id, c.lease_token, 10s));
  EXPECT_EQ(complete(c).status, BuildStatus::kCompleted);
}

TEST_P(StoreContract, RenewWithAWrongTokenIsConflict) {
  MUST(store().createProject(project("demo")));
  enqueue("demo");
  const Claim c = claimOne("w1");
  Result<ports::LeaseState> r = store().renew(c.build.task_id, "not-the-token", 10s);
  ASSERT_ERROR(r, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr(c.build.task_id));
  ASSERT_ERROR(store().renew(domain::newTaskId(), c.lease_token, 10s), ErrorCode::kNotFound);
  // The rightful holder is unaffected.
  ASSERT_OK(store().renew(c.build.task_id, c.lease_token, 10s));
}

TEST_P(StoreContract, RenewAfterTheLeaseExpiredIsConflict) {
  MUST(store().createProject(project("demo")));
  enqueue("demo");
  const Claim c = claimOne("w1", 50ms);
  std::this_thread::sleep_for(120ms);
  ASSERT_ERROR(store().renew(c.build.task_id, c.lease_token, 10s), ErrorCode::kConflict);
}

TEST_P(StoreContract, FinishStoresTheResultAndRecordsTheEvent) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.status = BuildStatus::kCompleted;
  o.result.success = true;
  o.result.output = "wrote README.md";
  o.result.commit_sha = "0123456789abcdef0123456789abcdef01234567";
  o.result.files_changed = {{"README.md", "added"}, {"old.txt", "deleted"}};
  o.result.duration_ms = 4321;
  o.result.artifacts = {{"log", "/var/lib/kiln/artifacts/x/log.txt", 77}};
  o.composition = {{"agent", "noop", "code-agent/noop", "0.1.0"}};
  const Build done = MUST(store().finish(c.build.task_id, c.lease_token, o));

  for (const Build& x : {done, get(b.task_id)}) {
    EXPECT_EQ(x.status, BuildStatus::kCompleted);
    ASSERT_TRUE(x.result.has_value());
    EXPECT_EQ(*x.result, o.result);
    EXPECT_EQ(x.error_kind, ErrorKind::kNone);
    EXPECT_EQ(x.error, "");
    ASSERT_TRUE(x.finished_at.has_value());
    EXPECT_GE(*x.finished_at, *x.started_at);
    EXPECT_EQ(x.composition, o.composition);
    EXPECT_EQ(x.attempts, 1);
    EXPECT_EQ(x.worker_id, "w1");
  }
  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1},
                          Step{BuildStatus::kRunning, BuildStatus::kCompleted, 1}));
  // The task left the queue.
  EXPECT_FALSE(MUST(store().claim("w2", 30s)).has_value());
}

TEST_P(StoreContract, FinishFailedStoresErrorKindAndError) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.status = BuildStatus::kFailed;
  o.result.success = false;
  o.result.output = "partial";
  o.error_kind = ErrorKind::kTimeout;
  o.error = "the agent ran past timeout_s (120 s)";
  const Build done = MUST(store().finish(c.build.task_id, c.lease_token, o));
  const Build got = get(b.task_id);
  for (const Build& x : {done, got}) {
    EXPECT_EQ(x.status, BuildStatus::kFailed);
    EXPECT_EQ(x.error_kind, ErrorKind::kTimeout);
    EXPECT_EQ(x.error, "the agent ran past timeout_s (120 s)");
    ASSERT_TRUE(x.result.has_value());
    EXPECT_FALSE(x.result->success);
    EXPECT_EQ(x.result->output, "partial");
    // Outcome.error doubles as result.error when the result has none.
    EXPECT_EQ(x.result->error, "the agent ran past timeout_s (120 s)");
    EXPECT_TRUE(x.finished_at.has_value());
  }
  const std::vector<BuildEvent> ev = events(b.task_id);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().from, std::optional<BuildStatus>(BuildStatus::kRunning));
  EXPECT_EQ(ev.back().to, BuildStatus::kFailed);
  EXPECT_EQ(ev.back().attempt, 1);
}

TEST_P(StoreContract, TerminalBuildsNeverChange) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  const Build done = complete(c);
  const size_t event_count = events(b.task_id).size();

  Outcome again;
  again.status = BuildStatus::kFailed;
  again.error = "late";
  ASSERT_ERROR(store().finish(b.task_id, c.lease_token, again), ErrorCode::kConflict);
  ASSERT_ERROR(store().release(b.task_id, c.lease_token, "drain"), ErrorCode::kConflict);
  ASSERT_ERROR(store().renew(b.task_id, c.lease_token, 10s), ErrorCode::kConflict);
  Result<Build> cancel = store().requestCancel(b.task_id, "too late");
  ASSERT_ERROR(cancel, ErrorCode::kConflict);
  EXPECT_THAT(cancel.error().message, HasSubstr("completed"));
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 0);

  const Build after = get(b.task_id);
  EXPECT_EQ(after.status, BuildStatus::kCompleted);
  EXPECT_EQ(after.result, done.result);
  EXPECT_EQ(after.error, "");
  EXPECT_EQ(after.error_kind, ErrorKind::kNone);
  EXPECT_EQ(after.finished_at, done.finished_at);
  EXPECT_EQ(after.attempts, 1);
  EXPECT_FALSE(after.cancel_requested);
  EXPECT_EQ(events(b.task_id).size(), event_count);
  EXPECT_FALSE(MUST(store().claim("w2", 30s)).has_value());
}

TEST_P(StoreContract, StaleWorkerCannotFinishAReclaimedBuild) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim stale = claimOne("w1", 50ms);
  std::this_thread::sleep_for(120ms);
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 1);
  const Claim fresh = claimOne("w2", 30s);
  ASSERT_EQ(fresh.build.task_id, b.task_id);
  EXPECT_EQ(fresh.build.attempts, 2);
  EXPECT_NE(fresh.lease_token, stale.lease_token);
  const size_t event_count = events(b.task_id).size();

  Outcome late;
  late.status = BuildStatus::kCompleted;
  late.result.success = true;
  late.result.output = "from the stale worker";
  Result<Build> r = store().finish(b.task_id, stale.lease_token, late);
  ASSERT_ERROR(r, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr(b.task_id));
  ASSERT_ERROR(store().release(b.task_id, stale.lease_token, "late"), ErrorCode::kConflict);
  ASSERT_ERROR(store().renew(b.task_id, stale.lease_token, 10s), ErrorCode::kConflict);

  const Build during = get(b.task_id);
  EXPECT_EQ(during.status, BuildStatus::kRunning);
  EXPECT_EQ(during.worker_id, "w2");
  EXPECT_EQ(during.attempts, 2);
  EXPECT_FALSE(during.result.has_value());
  EXPECT_EQ(events(b.task_id).size(), event_count);

  // The newer attempt goes on undisturbed.
  ASSERT_OK(store().renew(b.task_id, fresh.lease_token, 10s));
  Outcome real;
  real.result.success = true;
  real.result.output = "from the live worker";
  const Build done = MUST(store().finish(b.task_id, fresh.lease_token, real));
  EXPECT_EQ(done.status, BuildStatus::kCompleted);
  EXPECT_EQ(done.result->output, "from the live worker");
  EXPECT_EQ(done.attempts, 2);
}

TEST_P(StoreContract, ReleaseReturnsTheBuildToPendingKeepingItsAttempts) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  ASSERT_ERROR(store().release(b.task_id, "wrong-token", "drain"), ErrorCode::kConflict);
  EXPECT_EQ(get(b.task_id).status, BuildStatus::kRunning);

  ASSERT_OK(store().release(b.task_id, c.lease_token, "worker draining"));
  const Build pending = get(b.task_id);
  EXPECT_EQ(pending.status, BuildStatus::kPending);
  EXPECT_EQ(pending.attempts, 1);
  EXPECT_FALSE(pending.finished_at.has_value());
  // The released lease is gone.
  ASSERT_ERROR(store().renew(b.task_id, c.lease_token, 10s), ErrorCode::kConflict);

  const Claim again = claimOne("w2");
  EXPECT_EQ(again.build.task_id, b.task_id);
  EXPECT_EQ(again.build.attempts, 2);
  EXPECT_EQ(again.build.worker_id, "w2");
  EXPECT_EQ(again.build.started_at, c.build.started_at);  // set on the first attempt
  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1},
                          Step{BuildStatus::kRunning, BuildStatus::kPending, 1},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 2}));
}

TEST_P(StoreContract, ReapLeavesLiveLeasesAlone) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  claimOne("w1", 10s);
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 0);
  EXPECT_EQ(get(b.task_id).status, BuildStatus::kRunning);
}

TEST_P(StoreContract, ReapExpiredLeaseStartsANewAttemptThenFailsPastMaxAttempts) {
  MUST(store().createProject(project("demo", 5)));
  const Build b = enqueue("demo", "main", /*max_attempts=*/2);
  const Build live = enqueue("demo", "other");
  claimOne("w1", 50ms);
  const Claim keeps = claimOne("w-live", 30s);
  ASSERT_EQ(keeps.build.task_id, live.task_id);
  std::this_thread::sleep_for(120ms);
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 1);
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 0);
  const Build pending = get(b.task_id);
  EXPECT_EQ(pending.status, BuildStatus::kPending);
  EXPECT_EQ(pending.attempts, 1);
  EXPECT_EQ(get(live.task_id).status, BuildStatus::kRunning);

  const Claim second = claimOne("w2", 50ms);
  EXPECT_EQ(second.build.task_id, b.task_id);
  EXPECT_EQ(second.build.attempts, 2);
  std::this_thread::sleep_for(120ms);
  EXPECT_EQ(MUST(store().reapExpiredLeases()), 1);

  const Build failed = get(b.task_id);
  EXPECT_EQ(failed.status, BuildStatus::kFailed);
  EXPECT_EQ(failed.error_kind, ErrorKind::kInfrastructure);
  EXPECT_THAT(failed.error, HasSubstr("worker"));
  EXPECT_THAT(failed.error, HasSubstr("lost"));
  EXPECT_TRUE(failed.finished_at.has_value());
  EXPECT_EQ(failed.attempts, 2);
  EXPECT_FALSE(MUST(store().claim("w3", 30s)).has_value());
  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1},
                          Step{BuildStatus::kRunning, BuildStatus::kPending, 1},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 2},
                          Step{BuildStatus::kRunning, BuildStatus::kFailed, 2}));
}

// ------------------------------------------------------------------ cancel

TEST_P(StoreContract, CancelPendingBuildIsImmediate) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo", "main");
  const Build next = enqueue("demo", "main");
  const Build cancelled = MUST(store().requestCancel(b.task_id, "not needed"));
  for (const Build& x : {cancelled, get(b.task_id)}) {
    EXPECT_EQ(x.status, BuildStatus::kCancelled);
    EXPECT_EQ(x.error_kind, ErrorKind::kCancelled);
    EXPECT_TRUE(x.finished_at.has_value());
    EXPECT_EQ(x.attempts, 0);
  }
  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kCancelled, 0}));
  // It left the queue, and no longer holds back the next build of its branch.
  EXPECT_EQ(claimId("w1"), std::optional<std::string>(next.task_id));
  EXPECT_FALSE(claimId("w2").has_value());
  EXPECT_EQ(get(b.task_id).status, BuildStatus::kCancelled);
}

TEST_P(StoreContract, CancelRunningBuildIsRequestedThenFinishedByTheWorker) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  EXPECT_FALSE(MUST(store().renew(b.task_id, c.lease_token, 10s)).cancel_requested);
  EXPECT_FALSE(get(b.task_id).cancel_requested);

  const Build requested = MUST(store().requestCancel(b.task_id, "user asked"));
  EXPECT_EQ(requested.status, BuildStatus::kRunning);
  EXPECT_TRUE(requested.cancel_requested);
  EXPECT_TRUE(get(b.task_id).cancel_requested);
  EXPECT_EQ(get(b.task_id).status, BuildStatus::kRunning);
  EXPECT_TRUE(MUST(store().renew(b.task_id, c.lease_token, 10s)).cancel_requested);
  // Asking again changes nothing.
  EXPECT_TRUE(MUST(store().requestCancel(b.task_id, "again")).cancel_requested);

  Outcome o;
  o.status = BuildStatus::kCancelled;
  o.error_kind = ErrorKind::kCancelled;
  o.error = "cancelled: user asked";
  const Build done = MUST(store().finish(b.task_id, c.lease_token, o));
  EXPECT_EQ(done.status, BuildStatus::kCancelled);
  EXPECT_EQ(done.error_kind, ErrorKind::kCancelled);
  EXPECT_TRUE(done.finished_at.has_value());
  EXPECT_THAT(transitions(events(b.task_id)),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1},
                          Step{BuildStatus::kRunning, BuildStatus::kCancelled, 1}));
}

TEST_P(StoreContract, CancelTerminalBuildIsConflict) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  MUST(store().requestCancel(b.task_id, "first"));
  Result<Build> r = store().requestCancel(b.task_id, "second");
  ASSERT_ERROR(r, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr("cancelled"));
  EXPECT_THAT(r.error().message, HasSubstr("only pending or running"));
  ASSERT_ERROR(store().requestCancel(domain::newTaskId(), "x"), ErrorCode::kNotFound);
}

// ------------------------------------------------------------------ events

TEST_P(StoreContract, EveryTransitionIsRecordedWithItsAttempt) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo", "main", /*max_attempts=*/3);
  Claim c = claimOne("w1");
  ASSERT_OK(store().release(b.task_id, c.lease_token, "drain"));
  c = claimOne("w2", 50ms);
  std::this_thread::sleep_for(120ms);
  ASSERT_EQ(MUST(store().reapExpiredLeases()), 1);
  c = claimOne("w3");
  MUST(store().requestCancel(b.task_id, "stop"));
  Outcome o;
  o.status = BuildStatus::kCancelled;
  o.error_kind = ErrorKind::kCancelled;
  o.error = "cancelled";
  MUST(store().finish(b.task_id, c.lease_token, o));

  const std::vector<BuildEvent> ev = events(b.task_id);
  EXPECT_THAT(transitions(ev),
              ElementsAre(Step{std::nullopt, BuildStatus::kPending, 0},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 1},
                          Step{BuildStatus::kRunning, BuildStatus::kPending, 1},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 2},
                          Step{BuildStatus::kRunning, BuildStatus::kPending, 2},
                          Step{BuildStatus::kPending, BuildStatus::kRunning, 3},
                          Step{BuildStatus::kRunning, BuildStatus::kCancelled, 3}));
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].task_id, b.task_id);
    if (i > 0) {
      EXPECT_GT(ev[i].seq, ev[i - 1].seq);
      EXPECT_GE(ev[i].at, ev[i - 1].at);
    }
  }
  const Build last = get(b.task_id);
  EXPECT_EQ(last.attempts, 3);
  EXPECT_EQ(last.status, BuildStatus::kCancelled);
}

// ----------------------------------------------------------- waitForWork

TEST_P(StoreContract, WaitForWorkReturnsSoonAfterAnEnqueue) {
  MUST(store().createProject(project("demo")));
  std::thread producer([&] {
    std::this_thread::sleep_for(100ms);
    Result<Build> r = store().enqueueBuild(build("demo"));
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  const auto start = std::chrono::steady_clock::now();
  store().waitForWork(5s);
  const auto waited = std::chrono::steady_clock::now() - start;
  producer.join();
  EXPECT_LT(waited, 2s);
  EXPECT_TRUE(claimId("w1").has_value());
}

TEST_P(StoreContract, WaitForWorkWakesOnAnEnqueueThroughAnotherConnection) {
  MUST(store().createProject(project("demo")));
  std::unique_ptr<Store> other = MUST(backend().open());
  std::thread producer([&] {
    std::this_thread::sleep_for(100ms);
    Result<Build> r = other->enqueueBuild(build("demo"));
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  const auto start = std::chrono::steady_clock::now();
  store().waitForWork(5s);
  const auto waited = std::chrono::steady_clock::now() - start;
  producer.join();
  EXPECT_LT(waited, 2s);
  EXPECT_TRUE(claimId("w1").has_value());
}

TEST_P(StoreContract, WaitForWorkWakesOnARelease) {
  MUST(store().createProject(project("demo")));
  enqueue("demo");
  const Claim c = claimOne("w1");
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    Result<void> r = store().release(c.build.task_id, c.lease_token, "drain");
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  const auto start = std::chrono::steady_clock::now();
  store().waitForWork(5s);
  const auto waited = std::chrono::steady_clock::now() - start;
  releaser.join();
  EXPECT_LT(waited, 2s);
  EXPECT_EQ(claimId("w2"), std::optional<std::string>(c.build.task_id));
}

TEST_P(StoreContract, WaitForWorkWaitsWhenThereIsNoWork) {
  const auto start = std::chrono::steady_clock::now();
  store().waitForWork(300ms);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
}

// ------------------------------------------------------------ idempotency

TEST_P(StoreContract, IdempotencyBeginIsNewThenInProgress) {
  const IdempotencyRecord first = MUST(store().beginIdempotent("key-1", "fp-a"));
  EXPECT_EQ(first.state, IdempotencyRecord::State::kNew);
  EXPECT_EQ(first.fingerprint, "fp-a");
  const IdempotencyRecord second = MUST(store().beginIdempotent("key-1", "fp-b"));
  EXPECT_EQ(second.state, IdempotencyRecord::State::kInProgress);
  EXPECT_EQ(second.fingerprint, "fp-a");  // the first request's
  // Keys are independent.
  EXPECT_EQ(MUST(store().beginIdempotent("key-2", "fp-b")).state, IdempotencyRecord::State::kNew);
}

TEST_P(StoreContract, IdempotencyCompleteStoresTheAnswer) {
  MUST(store().beginIdempotent("key-1", "fp-a"));
  IdempotencyRecord answer;
  answer.status = 202;
  answer.body = R"({"task_id":"x","status":"pending"})";
  answer.content_type = "application/json";
  answer.location = "/builds/x";
  ASSERT_OK(store().completeIdempotent("key-1", answer));

  for (const char* fp : {"fp-a", "fp-other"}) {
    const IdempotencyRecord r = MUST(store().beginIdempotent("key-1", fp));
    EXPECT_EQ(r.state, IdempotencyRecord::State::kDone);
    EXPECT_EQ(r.fingerprint, "fp-a");
    EXPECT_EQ(r.status, 202);
    EXPECT_EQ(r.body, answer.body);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.location, "/builds/x");
  }
}

TEST_P(StoreContract, IdempotencyAbandonForgetsTheKey) {
  MUST(store().beginIdempotent("key-1", "fp-a"));
  ASSERT_OK(store().abandonIdempotent("key-1"));
  const IdempotencyRecord r = MUST(store().beginIdempotent("key-1", "fp-b"));
  EXPECT_EQ(r.state, IdempotencyRecord::State::kNew);
  EXPECT_EQ(r.fingerprint, "fp-b");
  EXPECT_EQ(MUST(store().beginIdempotent("key-1", "fp-c")).fingerprint, "fp-b");
}

TEST_P(StoreContract, IdempotencyConcurrentBeginsHaveOneWinner) {
  constexpr int kThreads = 8;
  std::atomic<int> fresh{0};
  std::atomic<int> in_progress{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Result<IdempotencyRecord> r = store().beginIdempotent("shared", "fp");
      if (!r.ok()) {
        failures[t] = r.error().message;
        return;
      }
      if (r->state == IdempotencyRecord::State::kNew) ++fresh;
      if (r->state == IdempotencyRecord::State::kInProgress) ++in_progress;
    });
  }
  for (auto& th : threads) th.join();
  for (const std::string& f : failures) EXPECT_EQ(f, "");
  EXPECT_EQ(fresh.load(), 1);
  EXPECT_EQ(in_progress.load(), kThreads - 1);
}

// ------------------------------------------------------ durability, schema

TEST_P(StoreContract, ReopenedStoreSeesWhatWasCommitted) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  store_.reset();
  store_ = MUST(backend().open());  // migrations already applied: a no-op
  const Build again = get(b.task_id);
  EXPECT_EQ(again.status, BuildStatus::kRunning);
  EXPECT_EQ(again.spec, b.spec);
  EXPECT_EQ(complete(c).status, BuildStatus::kCompleted);
}

TEST_P(StoreContract, MigrateOnAMigratedDatabaseAppliesNothing) {
  const MigrationReport report = MUST(backend().migrate());
  EXPECT_EQ(report.applied, 0);
  EXPECT_GE(report.version, 1);
}

// ------------------------------------------------------ notification outbox

NewDelivery newDelivery(const std::string& task_id, const std::string& notifier,
                        const std::string& target = "") {
  NewDelivery d;
  d.notifier = notifier;
  d.target = target;
  d.event_id = domain::deliveryEventId(task_id, notifier);
  // Keys out of alphabetical order: the store must keep the bytes as given.
  d.payload =
      R"({"type":"build.completed","timestamp":"2026-01-02T03:04:05.000Z","data":{"task_id":")" +
      task_id + R"("},"id":")" + d.event_id + R"("})";
  return d;
}

DeliveryAttempt attemptAt(bool ok, const std::string& detail, int64_t duration_ms = 12) {
  DeliveryAttempt a;
  a.at = domain::nowMs();
  a.ok = ok;
  a.detail = detail;
  a.duration_ms = duration_ms;
  return a;
}

std::vector<int64_t> deliveryIds(const std::vector<Delivery>& list) {
  std::vector<int64_t> out;
  for (const Delivery& d : list) out.push_back(d.id);
  return out;
}

TEST_P(StoreContract, FinishQueuesTheBuildsDeliveriesWithItsTerminalTransition) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  EXPECT_TRUE(MUST(store().listDeliveries(b.task_id)).empty());
  Outcome o;
  o.status = BuildStatus::kCompleted;
  o.result.success = true;
  const NewDelivery hook = newDelivery(b.task_id, "hook.prod", "https://example.test/cb?x=1");
  const NewDelivery log = newDelivery(b.task_id, "log");
  o.deliveries = {hook, log};
  const domain::TimeMs before = domain::nowMs();
  MUST(store().finish(c.build.task_id, c.lease_token, o));

  const std::vector<Delivery> list = MUST(store().listDeliveries(b.task_id));
  ASSERT_EQ(list.size(), 2u);
  EXPECT_LT(list[0].id, list[1].id);
  for (size_t i = 0; i < 2; ++i) {
    const NewDelivery& want = i == 0 ? hook : log;
    const Delivery& d = list[i];
    EXPECT_EQ(d.task_id, b.task_id);
    EXPECT_EQ(d.notifier, want.notifier);
    EXPECT_EQ(d.target, want.target);
    EXPECT_EQ(d.event_id, want.event_id);
    EXPECT_EQ(d.payload, want.payload);  // byte for byte
    EXPECT_EQ(d.state, DeliveryState::kPending);
    EXPECT_EQ(d.attempts, 0);
    ASSERT_TRUE(d.next_attempt_at.has_value());  // due at once
    EXPECT_LE(*d.next_attempt_at, domain::nowMs());
    EXPECT_GE(d.created_at, before - 1000);
    EXPECT_FALSE(d.delivered_at.has_value());
    EXPECT_EQ(d.last_error, "");
    EXPECT_TRUE(d.attempt_log.empty());
  }
  EXPECT_EQ(list[0].event_id, "msg_" + b.task_id + "_hook~prod");
}

TEST_P(StoreContract, AFinishWhoseDeliveriesAreRefusedChangesNothing) {
  MUST(store().createProject(project("demo", 2)));
  const Build first = enqueue("demo", "a");
  const Build second = enqueue("demo", "b");
  const Claim c1 = claimOne("w1");
  const Claim c2 = claimOne("w1");
  ASSERT_EQ(c2.build.task_id, second.task_id);

  Outcome bad;
  bad.status = BuildStatus::kCompleted;
  NewDelivery broken = newDelivery(first.task_id, "hook");
  broken.payload = "not json";
  bad.deliveries = {broken};
  ASSERT_ERROR(store().finish(first.task_id, c1.lease_token, bad), ErrorCode::kInvalidArgument);
  bad.deliveries = {newDelivery(first.task_id, "")};
  ASSERT_ERROR(store().finish(first.task_id, c1.lease_token, bad), ErrorCode::kInvalidArgument);
  EXPECT_EQ(get(first.task_id).status, BuildStatus::kRunning);

  // An event id another build's delivery already has: the whole finish
  // rolls back, so the build is not terminal without its notifications.
  Outcome ok;
  ok.status = BuildStatus::kCompleted;
  ok.deliveries = {newDelivery(first.task_id, "hook")};
  MUST(store().finish(first.task_id, c1.lease_token, ok));
  Outcome clash;
  clash.status = BuildStatus::kFailed;
  clash.deliveries = {newDelivery(second.task_id, "log"), newDelivery(first.task_id, "hook")};
  ASSERT_ERROR(store().finish(second.task_id, c2.lease_token, clash), ErrorCode::kConflict);
  EXPECT_EQ(get(second.task_id).status, BuildStatus::kRunning);
  EXPECT_TRUE(MUST(store().listDeliveries(second.task_id)).empty());
  EXPECT_EQ(MUST(store().listDeliveries(first.task_id)).size(), 1u);

  clash.deliveries = {newDelivery(second.task_id, "log")};
  EXPECT_EQ(MUST(store().finish(second.task_id, c2.lease_token, clash)).status,
            BuildStatus::kFailed);
  EXPECT_EQ(MUST(store().listDeliveries(second.task_id)).size(), 1u);
}

TEST_P(StoreContract, DeliveriesOfAnUnknownBuildAreNotFound) {
  ASSERT_ERROR(store().listDeliveries(domain::newTaskId()), ErrorCode::kNotFound);
  ASSERT_ERROR(store().recordDeliveryAttempt(424242, "d1", attemptAt(true, "HTTP 204"), {}),
               ErrorCode::kNotFound);
}

TEST_P(StoreContract, ClaimDueDeliveriesLeasesEachToOneOwner) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.deliveries = {newDelivery(b.task_id, "a"), newDelivery(b.task_id, "b"),
                  newDelivery(b.task_id, "c")};
  MUST(store().finish(c.build.task_id, c.lease_token, o));
  const std::vector<int64_t> all = deliveryIds(MUST(store().listDeliveries(b.task_id)));

  ASSERT_ERROR(store().claimDueDeliveries("d1", 0, 30s), ErrorCode::kInvalidArgument);
  const std::vector<Delivery> first = MUST(store().claimDueDeliveries("d1", 2, 30s));
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].id, all[0]);  // oldest due first
  EXPECT_EQ(first[1].id, all[1]);
  EXPECT_EQ(first[0].payload, o.deliveries[0].payload);
  EXPECT_EQ(first[0].state, DeliveryState::kPending);
  const std::vector<Delivery> second = MUST(store().claimDueDeliveries("d2", 10, 30s));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, all[2]);
  EXPECT_TRUE(MUST(store().claimDueDeliveries("d3", 10, 30s)).empty());

  // Only the owner records an attempt; someone else's or an unleased one is
  // a conflict.
  ASSERT_ERROR(store().recordDeliveryAttempt(all[0], "d2", attemptAt(true, "HTTP 204"), {}),
               ErrorCode::kConflict);
  ASSERT_OK(store().recordDeliveryAttempt(all[0], "d1", attemptAt(true, "HTTP 204"), {}));
  ASSERT_OK(store().recordDeliveryAttempt(all[2], "d2", attemptAt(false, "HTTP 500"),
                                          domain::nowMs() + 60000));
  ASSERT_ERROR(store().recordDeliveryAttempt(all[2], "d2", attemptAt(true, "HTTP 204"), {}),
               ErrorCode::kConflict);
}

TEST_P(StoreContract, AnExpiredDeliveryLeaseIsClaimedAgainAndTheStaleOwnerCannotRecord) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.deliveries = {newDelivery(b.task_id, "hook")};
  MUST(store().finish(c.build.task_id, c.lease_token, o));
  const std::vector<Delivery> stale = MUST(store().claimDueDeliveries("d1", 10, 50ms));
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_TRUE(MUST(store().claimDueDeliveries("d2", 10, 30s)).empty());
  std::this_thread::sleep_for(150ms);
  const std::vector<Delivery> fresh = MUST(store().claimDueDeliveries("d2", 10, 30s));
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_EQ(fresh[0].id, stale[0].id);
  EXPECT_EQ(fresh[0].event_id, stale[0].event_id);
  ASSERT_ERROR(store().recordDeliveryAttempt(stale[0].id, "d1", attemptAt(true, "HTTP 204"), {}),
               ErrorCode::kConflict);
  const Delivery done =
      MUST(store().recordDeliveryAttempt(fresh[0].id, "d2", attemptAt(true, "HTTP 204"), {}));
  EXPECT_EQ(done.state, DeliveryState::kDelivered);
  EXPECT_EQ(done.attempts, 1);
}

TEST_P(StoreContract, FailedAttemptsRetryWhenDueThenDeliverWithEveryAttemptRecorded) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.deliveries = {newDelivery(b.task_id, "hook", "https://example.test/cb")};
  MUST(store().finish(c.build.task_id, c.lease_token, o));
  const int64_t id = MUST(store().claimDueDeliveries("d1", 1, 30s)).at(0).id;

  const DeliveryAttempt first = attemptAt(false, "HTTP 500 from https://example.test/cb: oops", 31);
  const domain::TimeMs due = domain::nowMs() + 300;
  const Delivery retry = MUST(store().recordDeliveryAttempt(id, "d1", first, due));
  EXPECT_EQ(retry.state, DeliveryState::kPending);
  EXPECT_EQ(retry.attempts, 1);
  EXPECT_EQ(retry.next_attempt_at, std::optional<domain::TimeMs>(due));
  EXPECT_EQ(retry.last_error, first.detail);
  EXPECT_FALSE(retry.delivered_at.has_value());
  // Not due yet.
  EXPECT_TRUE(MUST(store().claimDueDeliveries("d1", 10, 30s)).empty());
  std::this_thread::sleep_for(450ms);
  const std::vector<Delivery> again = MUST(store().claimDueDeliveries("d1", 10, 30s));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempts, 1);

  const DeliveryAttempt second = attemptAt(true, "HTTP 204", 7);
  const Delivery done = MUST(store().recordDeliveryAttempt(id, "d1", second, std::nullopt));
  EXPECT_EQ(done.state, DeliveryState::kDelivered);
  EXPECT_EQ(done.attempts, 2);
  EXPECT_FALSE(done.next_attempt_at.has_value());
  ASSERT_TRUE(done.delivered_at.has_value());
  EXPECT_EQ(done.last_error, "");
  EXPECT_TRUE(MUST(store().claimDueDeliveries("d1", 10, 30s)).empty());

  const std::vector<Delivery> list = MUST(store().listDeliveries(b.task_id));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].state, DeliveryState::kDelivered);
  ASSERT_EQ(list[0].attempt_log.size(), 2u);
  DeliveryAttempt want1 = first, want2 = second;
  want1.attempt = 1;
  want2.attempt = 2;
  EXPECT_EQ(list[0].attempt_log[0], want1);
  EXPECT_EQ(list[0].attempt_log[1], want2);
  // Final: nothing more is recorded.
  ASSERT_ERROR(store().recordDeliveryAttempt(id, "d1", attemptAt(false, "late"), due),
               ErrorCode::kConflict);
}

TEST_P(StoreContract, AFailedAttemptWithoutANextTimeGivesUp) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo");
  const Claim c = claimOne("w1");
  Outcome o;
  o.deliveries = {newDelivery(b.task_id, "hook")};
  MUST(store().finish(c.build.task_id, c.lease_token, o));
  const int64_t id = MUST(store().claimDueDeliveries("d1", 1, 30s)).at(0).id;
  const Delivery failed = MUST(store().recordDeliveryAttempt(
      id, "d1", attemptAt(false, "notifier instance \"gone\" is not configured"), std::nullopt));
  EXPECT_EQ(failed.state, DeliveryState::kFailed);
  EXPECT_EQ(failed.attempts, 1);
  EXPECT_FALSE(failed.next_attempt_at.has_value());
  EXPECT_THAT(failed.last_error, HasSubstr("gone"));
  EXPECT_TRUE(MUST(store().claimDueDeliveries("d1", 10, 30s)).empty());
  const std::vector<Delivery> list = MUST(store().listDeliveries(b.task_id));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].state, DeliveryState::kFailed);
  ASSERT_EQ(list[0].attempt_log.size(), 1u);
  EXPECT_FALSE(list[0].attempt_log[0].ok);
}

// A plan that records what it was asked and queues one delivery per call.
struct RecordingPlan {
  std::vector<std::pair<Build, Outcome>> calls;
  std::string payload_override;
  ports::DeliveryPlan plan() {
    return [this](const Build& b, const Outcome& o) {
      calls.emplace_back(b, o);
      NewDelivery d = newDelivery(b.task_id, "hook", "https://example.test/cb");
      if (!payload_override.empty()) d.payload = payload_override;
      return std::vector<NewDelivery>{d};
    };
  }
};

TEST_P(StoreContract, CancellingAPendingBuildQueuesItsPlannedDeliveries) {
  MUST(store().createProject(project("demo")));
  const Build running = enqueue("demo", "a");
  const Claim c = claimOne("w1");
  const Build pending = enqueue("demo", "b");
  RecordingPlan recorder;

  // A running build only gets the request; its worker plans at finish().
  MUST(store().requestCancel(running.task_id, "stop", recorder.plan()));
  EXPECT_TRUE(recorder.calls.empty());
  EXPECT_TRUE(MUST(store().listDeliveries(running.task_id)).empty());

  const Build cancelled =
      MUST(store().requestCancel(pending.task_id, "changed my mind", recorder.plan()));
  EXPECT_EQ(cancelled.status, BuildStatus::kCancelled);
  ASSERT_EQ(recorder.calls.size(), 1u);
  EXPECT_EQ(recorder.calls[0].first.task_id, pending.task_id);
  EXPECT_EQ(recorder.calls[0].second.status, BuildStatus::kCancelled);
  EXPECT_EQ(recorder.calls[0].second.error_kind, ErrorKind::kCancelled);
  EXPECT_THAT(recorder.calls[0].second.error, HasSubstr("changed my mind"));
  const std::vector<Delivery> list = MUST(store().listDeliveries(pending.task_id));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].state, DeliveryState::kPending);
  EXPECT_EQ(list[0].target, "https://example.test/cb");
  EXPECT_EQ(MUST(store().claimDueDeliveries("d1", 10, 30s)).size(), 1u);
  (void)c;
}

TEST_P(StoreContract, ACancelWhosePlanIsRefusedChangesNothing) {
  MUST(store().createProject(project("demo")));
  const Build pending = enqueue("demo");
  RecordingPlan recorder;
  recorder.payload_override = "[1, 2]";  // not an object
  ASSERT_ERROR(store().requestCancel(pending.task_id, "x", recorder.plan()),
               ErrorCode::kInvalidArgument);
  EXPECT_EQ(get(pending.task_id).status, BuildStatus::kPending);
  EXPECT_TRUE(MUST(store().listDeliveries(pending.task_id)).empty());
  EXPECT_EQ(claimOne("w1").build.task_id, pending.task_id);
}

TEST_P(StoreContract, TheReaperQueuesThePlannedDeliveriesOfTheBuildsItFails) {
  MUST(store().createProject(project("demo", 2)));
  const Build last_try = enqueue("demo", "a", /*max_attempts=*/1);
  const Build more = enqueue("demo", "b", /*max_attempts=*/3);
  claimOne("w1", 50ms);
  claimOne("w1", 50ms);
  std::this_thread::sleep_for(150ms);
  RecordingPlan recorder;
  EXPECT_EQ(MUST(store().reapExpiredLeases(recorder.plan())), 2);
  EXPECT_EQ(get(last_try.task_id).status, BuildStatus::kFailed);
  EXPECT_EQ(get(more.task_id).status, BuildStatus::kPending);  // another attempt: no plan
  ASSERT_EQ(recorder.calls.size(), 1u);
  EXPECT_EQ(recorder.calls[0].first.task_id, last_try.task_id);
  EXPECT_EQ(recorder.calls[0].second.status, BuildStatus::kFailed);
  EXPECT_EQ(recorder.calls[0].second.error_kind, ErrorKind::kInfrastructure);
  EXPECT_THAT(recorder.calls[0].second.error, HasSubstr("was lost"));
  EXPECT_EQ(MUST(store().listDeliveries(last_try.task_id)).size(), 1u);
  EXPECT_TRUE(MUST(store().listDeliveries(more.task_id)).empty());
}

TEST_P(StoreContract, TheReaperDropsARefusedPlanButStillFailsTheLostBuild) {
  MUST(store().createProject(project("demo")));
  const Build b = enqueue("demo", "a", /*max_attempts=*/1);
  claimOne("w1", 50ms);
  std::this_thread::sleep_for(150ms);
  RecordingPlan recorder;
  recorder.payload_override = "not json";
  EXPECT_EQ(MUST(store().reapExpiredLeases(recorder.plan())), 1);
  EXPECT_EQ(get(b.task_id).status, BuildStatus::kFailed);
  EXPECT_TRUE(MUST(store().listDeliveries(b.task_id)).empty());
}

TEST_P(StoreContract, ConcurrentDeliveryClaimsThroughTwoStoresNeverOverlap) {
  MUST(store().createProject(project("demo", 4)));
  std::set<int64_t> queued;
  for (int i = 0; i < 6; ++i) {
    const Build b = enqueue("demo", "branch-" + std::to_string(i));
    const Claim c = claimOne("w1");
    Outcome o;
    for (const char* n : {"a", "b", "c", "d"}) o.deliveries.push_back(newDelivery(b.task_id, n));
    MUST(store().finish(c.build.task_id, c.lease_token, o));
    for (int64_t id : deliveryIds(MUST(store().listDeliveries(b.task_id)))) queued.insert(id);
  }
  ASSERT_EQ(queued.size(), 24u);
  std::unique_ptr<Store> other = MUST(backend().open());
  std::mutex mu;
  std::vector<int64_t> claimed;
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    Store* s = t % 2 == 0 ? &store() : other.get();
    threads.emplace_back([&, s, t] {
      while (true) {
        auto got = s->claimDueDeliveries("d" + std::to_string(t), 3, 30s);
        if (!got.ok()) {
          failed = true;
          return;
        }
        if (got->empty()) return;
        std::lock_guard<std::mutex> lock(mu);
        for (const Delivery& d : *got) claimed.push_back(d.id);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_FALSE(failed.load());
  std::sort(claimed.begin(), claimed.end());
  EXPECT_THAT(claimed, ElementsAreArray(std::vector<int64_t>(queued.begin(), queued.end())));
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreContract, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// ------------------------------------------------ SQLite adapter specifics

// A store on a temporary file plus a raw connection to look at (or age) rows
// the port does not expose.
class SqliteAdapter : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-sqlite-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    options_.path = (dir_ / "kiln.db").string();
    store_ = MUST(openSqliteStore(options_));
    ASSERT_EQ(sqlite3_open(options_.path.c_str(), &raw_), SQLITE_OK);
    sqlite3_busy_timeout(raw_, 5000);
  }
  void TearDown() override {
    sqlite3_close(raw_);
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void exec(const std::string& sql) {
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(raw_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << sql << ": " << (err ? err : "");
    sqlite3_free(err);
  }

  // The first row of `sql` as text columns (NULL as "<null>").
  std::vector<std::string> row(const std::string& sql) {
    std::vector<std::string> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(raw_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(raw_);
      return out;
    }
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const unsigned char* v = sqlite3_column_text(stmt, i);
        out.push_back(v ? reinterpret_cast<const char*>(v) : "<null>");
      }
    }
    sqlite3_finalize(stmt);
    return out;
  }

  std::filesystem::path dir_;
  SqliteOptions options_;
  std::unique_ptr<Store> store_;
  sqlite3* raw_ = nullptr;
};

TEST_F(SqliteAdapter, FreshDatabaseGetsEveryMigrationOnce) {
  SqliteOptions o;
  o.path = (dir_ / "other" / "kiln.db").string();
  const MigrationReport first = MUST(migrateSqlite(o));
  EXPECT_GE(first.applied, 1);
  EXPECT_EQ(first.version, first.applied);
  const MigrationReport second = MUST(migrateSqlite(o));
  EXPECT_EQ(second.applied, 0);
  EXPECT_EQ(second.version, first.version);
  EXPECT_EQ(row("SELECT count(*) FROM schema_migrations"),
            std::vector<std::string>{std::to_string(first.version)});
}

TEST_F(SqliteAdapter, UsesWalAndRefusesANewerSchema) {
  EXPECT_EQ(row("PRAGMA journal_mode"), std::vector<std::string>{"wal"});
  store_.reset();
  exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
  Result<std::unique_ptr<Store>> r = openSqliteStore(options_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnsupported);
  EXPECT_THAT(r.error().message, HasSubstr("999"));
}

TEST_F(SqliteAdapter, AuditEntryFollowsTheBuildThroughItsStatuses) {
  Project p;
  p.id = "demo";
  p.repo_url = "https://git.example.test/demo.git";
  MUST(store_->createProject(p));
  Build b;
  b.task_id = domain::newTaskId();
  b.project_id = "demo";
  b.branch = "main";
  b.spec.prompt = "audit me";
  MUST(store_->enqueueBuild(b));
  const std::string where = " FROM build_audit WHERE task_id = '" + b.task_id + "'";
  EXPECT_EQ(row("SELECT status, attempts, worker_id, result_json" + where),
            (std::vector<std::string>{"pending", "0", "<null>", "<null>"}));
  EXPECT_THAT(row("SELECT spec_json" + where).at(0), HasSubstr("audit me"));

  const std::optional<Claim> c = MUST(store_->claim("w1", 30s));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(row("SELECT status, attempts, worker_id, started_at IS NOT NULL" + where),
            (std::vector<std::string>{"running", "1", "w1", "1"}));

  Outcome o;
  o.status = BuildStatus::kFailed;
  o.error_kind = ErrorKind::kWorkload;
  o.error = "tests failed";
  MUST(store_->finish(b.task_id, c->lease_token, o));
  const std::vector<std::string> done =
      row("SELECT status, error_kind, error, finished_at IS NOT NULL, result_json" + where);
  ASSERT_EQ(done.size(), 5u);
  EXPECT_EQ(done[0], "failed");
  EXPECT_EQ(done[1], "workload");
  EXPECT_EQ(done[2], "tests failed");
  EXPECT_EQ(done[3], "1");
  EXPECT_THAT(done[4], HasSubstr("tests failed"));
  EXPECT_EQ(row("SELECT count(*) FROM build_audit"), std::vector<std::string>{"1"});
}

TEST_F(SqliteAdapter, AbandonedInProgressKeysAreTakenOverAndOldAnswersExpire) {
  using State = IdempotencyRecord::State;
  MUST(store_->beginIdempotent("slow", "fp-1"));
  // 59 s old: still in progress.
  exec("UPDATE idempotency_keys SET created_at = created_at - 59000 WHERE key = 'slow'");
  EXPECT_EQ(MUST(store_->beginIdempotent("slow", "fp-2")).state, State::kInProgress);
  // 61 s old: its request died; the next one takes the key over.
  exec("UPDATE idempotency_keys SET created_at = created_at - 2000 WHERE key = 'slow'");
  const IdempotencyRecord taken = MUST(store_->beginIdempotent("slow", "fp-2"));
  EXPECT_EQ(taken.state, State::kNew);
  EXPECT_EQ(taken.fingerprint, "fp-2");

  MUST(store_->beginIdempotent("done", "fp-1"));
  IdempotencyRecord answer;
  answer.status = 201;
  answer.body = "{}";
  ASSERT_OK(store_->completeIdempotent("done", answer));
  // Answers are replayed for 24 hours, not longer.
  exec("UPDATE idempotency_keys SET created_at = created_at - 23 * 3600 * 1000 WHERE key = 'done'");
  EXPECT_EQ(MUST(store_->beginIdempotent("done", "fp-2")).state, State::kDone);
  exec("UPDATE idempotency_keys SET created_at = created_at - 3600 * 1000 WHERE key = 'done'");
  const IdempotencyRecord fresh = MUST(store_->beginIdempotent("done", "fp-2"));
  EXPECT_EQ(fresh.state, State::kNew);
  EXPECT_EQ(fresh.fingerprint, "fp-2");
}

}  // namespace
}  // namespace kiln::store
