// The SQLite adapter of ports::Store: the embedded default, for one process.
//
// Rationale: one connection guarded by a mutex. SQLite allows one writer at
// a time anyway, every operation here is a short transaction, and a single
// connection makes claims trivially race-free inside the process;
// BEGIN IMMEDIATE keeps them race-free against another process on the same
// file too (a `kiln` command next to `kiln serve`).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deliveries.h"
#include "kiln/codec/build_json.h"
#include "kiln/domain/build.h"
#include "kiln/store/open.h"
#include "sqlite_db.h"
#include "store_common.h"

namespace kiln::store {
namespace sqlite {
namespace {

using common::notFoundBuild;
using common::notFoundProject;
using common::quoted;
using common::str;
using common::validateProject;

using domain::Build;
using domain::BuildEvent;
using domain::BuildStatus;
using domain::Delivery;
using domain::DeliveryAttempt;
using domain::DeliveryState;
using domain::ErrorKind;
using domain::Project;
using domain::TimeMs;
using Mode = Transaction::Mode;
using nlohmann::json;

// An in-progress idempotency record this old belongs to a request that died.
constexpr TimeMs kIdempotencyAbandonedMs = 60 * 1000;
// How long a finished request's answer is replayed.
constexpr TimeMs kIdempotencyTtlMs = 24 * 60 * 60 * 1000;
// waitForWork also looks for commits by other connections this often: they
// cannot reach this process's condition variable.
constexpr std::chrono::milliseconds kForeignWritePoll{250};

const std::string kBuildColumns =
    "task_id, project_id, branch, status, spec_json, result_json, attempts, max_attempts, "
    "error_kind, error, created_at, started_at, finished_at, worker_id, composition_json, "
    "retry_of, cancel_requested";
const std::string kDeliveryColumns =
    "id, task_id, notifier, target, event_id, payload_json, state, attempts, next_attempt_at, "
    "created_at, delivered_at, last_error";
const std::string kProjectColumns =
    "id, repo_url, default_branch, source, max_running_builds, max_pending_builds, "
    "max_timeout_s, created_at";

// The oldest runnable queued task (store.h, claim): no build of its project
// and branch running, no older one pending, and the project below its
// running limit.
const std::string kNextRunnableSql = R"(
SELECT t.task_id FROM work_tasks t
  JOIN builds b ON b.task_id = t.task_id
  JOIN projects p ON p.id = b.project_id
 WHERE t.state = 'queued' AND t.available_at <= ?1
   AND NOT EXISTS (SELECT 1 FROM builds o
                    WHERE o.project_id = b.project_id AND o.branch = b.branch
                      AND o.status = 'running')
   AND NOT EXISTS (SELECT 1 FROM builds o
                    WHERE o.project_id = b.project_id AND o.branch = b.branch
                      AND o.status = 'pending' AND o.task_id < b.task_id)
   AND (SELECT count(*) FROM builds r
         WHERE r.project_id = b.project_id AND r.status = 'running') < p.max_running_builds
 ORDER BY t.task_id
 LIMIT 1)";

std::optional<std::string> nonEmpty(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return s;
}

std::optional<std::string> errorKindColumn(ErrorKind k) {
  if (k == ErrorKind::kNone) return std::nullopt;
  return str(domain::errorKindName(k));
}

// 128 random bits as 32 hex digits.
std::string newLeaseToken() {
  static thread_local std::random_device device;
  std::string token;
  char buf[9];
  for (int i = 0; i < 4; ++i) {
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(device()));
    token += buf;
  }
  return token;
}

Project readProject(const Query& q) {
  Project p;
  p.id = q.text(0);
  p.repo_url = q.text(1);
  p.default_branch = q.text(2);
  p.source = q.text(3);
  p.max_running_builds = q.i32(4);
  p.max_pending_builds = q.i32(5);
  p.max_timeout_s = q.i32(6);
  p.created_at = q.i64(7);
  return p;
}

Build readBuild(const Query& q) {
  Build b;
  b.task_id = q.text(0);
  b.project_id = q.text(1);
  b.branch = q.text(2);
  const auto status = domain::parseStatus(q.text(3));
  if (!status) {
    throw std::runtime_error("build " + b.task_id + " has an unknown status " + quoted(q.text(3)));
  }
  b.status = *status;
  b.spec = codec::specFromStored(json::parse(q.text(4)));
  if (!q.isNull(5)) b.result = codec::resultFromStored(json::parse(q.text(5)));
  b.attempts = q.i32(6);
  b.max_attempts = q.i32(7);
  b.error_kind = domain::parseErrorKind(q.text(8)).value_or(ErrorKind::kNone);
  b.error = q.text(9);
  b.created_at = q.i64(10);
  b.started_at = q.optI64(11);
  b.finished_at = q.optI64(12);
  b.worker_id = q.text(13);
  b.composition = codec::compositionFromStored(json::parse(q.text(14)));
  b.retry_of = q.optText(15);
  b.cancel_requested = q.i32(16) != 0;
  return b;
}

Delivery readDelivery(const Query& q) {
  Delivery d;
  d.id = q.i64(0);
  d.task_id = q.text(1);
  d.notifier = q.text(2);
  d.target = q.text(3);
  d.event_id = q.text(4);
  d.payload = q.text(5);
  const auto state = domain::parseDeliveryState(q.text(6));
  if (!state) {
    throw std::runtime_error("delivery " + std::to_string(d.id) + " has an unknown state " +
                             quoted(q.text(6)));
  }
  d.state = *state;
  d.attempts = q.i32(7);
  d.next_attempt_at = q.optI64(8);
  d.created_at = q.i64(9);
  d.delivered_at = q.optI64(10);
  d.last_error = q.text(11);
  return d;
}

// What the lease check found: the build and who holds its task.
struct Lease {
  Build build;
  std::string owner;
};

class SqliteStore final : public ports::Store {
 public:
  explicit SqliteStore(std::unique_ptr<Connection> db) : db_(std::move(db)) {}

  Result<Project> createProject(const Project& project) override {
    return locked("creating a project", [&]() -> Result<Project> {
      if (auto err = validateProject(project)) return *err;
      Transaction tx(*db_, Mode::kWrite);
      if (findProject(project.id)) {
        return makeError(ErrorCode::kConflict, "project " + quoted(project.id) + " already exists");
      }
      Project stored = insertProject(project, domain::nowMs());
      tx.commit();
      return stored;
    });
  }

  Result<void> upsertProject(const Project& project) override {
    return locked("saving a project", [&]() -> Result<void> {
      if (auto err = validateProject(project)) return *err;
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      Query(*db_, R"(
INSERT INTO projects (id, repo_url, default_branch, source, max_running_builds,
                      max_pending_builds, max_timeout_s, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (id) DO UPDATE SET
  repo_url = excluded.repo_url, default_branch = excluded.default_branch,
  source = excluded.source, max_running_builds = excluded.max_running_builds,
  max_pending_builds = excluded.max_pending_builds, max_timeout_s = excluded.max_timeout_s,
  updated_at = excluded.updated_at)",
            project.id, project.repo_url, project.default_branch, project.source,
            project.max_running_builds, project.max_pending_builds, project.max_timeout_s,
            project.created_at != 0 ? project.created_at : now, now)
          .run();
      tx.commit();
      // A raised max_running_builds may make queued builds runnable.
      wake();
      return {};
    });
  }

  Result<Project> getProject(const std::string& id) override {
    return locked("reading a project", [&]() -> Result<Project> {
      auto p = findProject(id);
      if (!p) return notFoundProject(id);
      return *p;
    });
  }

  Result<std::vector<Project>> listProjects() override {
    return locked("listing projects", [&]() -> Result<std::vector<Project>> {
      std::vector<Project> out;
      Query q(*db_, "SELECT " + kProjectColumns + " FROM projects ORDER BY id");
      while (q.next()) out.push_back(readProject(q));
      return out;
    });
  }

  Result<Build> enqueueBuild(const Build& build) override {
    return locked("enqueueing a build", [&]() -> Result<Build> {
      Transaction tx(*db_, Mode::kWrite);
      auto project = findProject(build.project_id);
      if (!project) return notFoundProject(build.project_id);
      Result<Build> stored = insertBuild(*project, build, domain::nowMs());
      if (!stored.ok()) return stored;  // rolled back: nothing written
      tx.commit();
      wake();
      return stored;
    });
  }

  Result<Build> createProjectAndEnqueue(const Project& project, const Build& build) override {
    return locked("creating a project and its first build", [&]() -> Result<Build> {
      if (auto err = validateProject(project)) return *err;
      if (build.project_id != project.id) {
        return makeError(ErrorCode::kInvalidArgument,
                         "the build names project " + quoted(build.project_id) +
                             " but the project to create is " + quoted(project.id));
      }
      Transaction tx(*db_, Mode::kWrite);
      if (findProject(project.id)) {
        return makeError(ErrorCode::kConflict, "project " + quoted(project.id) + " already exists");
      }
      const TimeMs now = domain::nowMs();
      const Project stored_project = insertProject(project, now);
      Result<Build> stored = insertBuild(stored_project, build, now);
      if (!stored.ok()) return stored;
      tx.commit();
      wake();
      return stored;
    });
  }

  Result<Build> getBuild(const std::string& task_id) override {
    return locked("reading a build", [&]() -> Result<Build> {
      auto b = findBuild(task_id);
      if (!b) return notFoundBuild(task_id);
      return *b;
    });
  }

  Result<ports::BuildPage> listBuilds(const ports::BuildQuery& query) override {
    return locked("listing builds", [&]() -> Result<ports::BuildPage> {
      const int limit = std::clamp(query.limit, 1, 100);
      Transaction tx(*db_, Mode::kRead);
      if (!findProject(query.project_id)) return notFoundProject(query.project_id);
      // Parameters are numbered so that every variant binds the same four.
      std::string sql = "SELECT " + kBuildColumns + " FROM builds WHERE project_id = ?1";
      if (query.status) sql += " AND status = ?2";
      if (query.before) sql += " AND task_id < ?3";
      sql += " ORDER BY task_id DESC LIMIT ?4";
      std::optional<std::string> status;
      if (query.status) status = str(domain::statusName(*query.status));
      ports::BuildPage page;
      {
        Query q(*db_, sql, query.project_id, status, query.before, limit + 1);
        while (q.next()) page.builds.push_back(readBuild(q));
      }
      if (static_cast<int>(page.builds.size()) > limit) {
        page.builds.pop_back();
        page.next_cursor = page.builds.back().task_id;
      }
      tx.commit();
      return page;
    });
  }

  Result<std::vector<BuildEvent>> listEvents(const std::string& task_id) override {
    return locked("listing build events", [&]() -> Result<std::vector<BuildEvent>> {
      Transaction tx(*db_, Mode::kRead);
      if (!findBuild(task_id)) return notFoundBuild(task_id);
      std::vector<BuildEvent> out;
      {
        Query q(*db_, R"(
SELECT seq, task_id, at, from_status, to_status, attempt, message
  FROM build_events WHERE task_id = ?1 ORDER BY seq)",
                task_id);
        while (q.next()) {
          BuildEvent e;
          e.seq = q.i64(0);
          e.task_id = q.text(1);
          e.at = q.i64(2);
          if (auto from = q.optText(3)) e.from = domain::parseStatus(*from);
          e.to = domain::parseStatus(q.text(4)).value_or(BuildStatus::kPending);
          e.attempt = q.i32(5);
          e.message = q.text(6);
          out.push_back(std::move(e));
        }
      }
      tx.commit();
      return out;
    });
  }

  Result<Build> requestCancel(const std::string& task_id, const std::string& reason,
                              const ports::DeliveryPlan& plan) override {
    return locked("cancelling a build", [&]() -> Result<Build> {
      Transaction tx(*db_, Mode::kWrite);
      auto build = findBuild(task_id);
      if (!build) return notFoundBuild(task_id);
      if (domain::isTerminal(build->status)) {
        return makeError(ErrorCode::kConflict,
                         "build " + task_id + " is " + str(domain::statusName(build->status)) +
                             "; only pending or running builds can be cancelled");
      }
      const TimeMs now = domain::nowMs();
      const std::string why = reason.empty() ? "" : ": " + reason;
      if (build->status == BuildStatus::kPending) {
        const std::string error = "cancelled before it started" + why;
        std::vector<ports::NewDelivery> deliveries;
        if (plan) {
          ports::Outcome outcome;
          outcome.status = BuildStatus::kCancelled;
          outcome.error_kind = ErrorKind::kCancelled;
          outcome.error = error;
          outcome.result.error = error;
          deliveries = plan(*build, outcome);
          if (auto err = checkDeliveries(deliveries)) return *err;
        }
        Query(*db_, R"(
UPDATE builds SET status = 'cancelled', error_kind = 'cancelled', error = ?2, finished_at = ?3,
                  cancel_requested = 1, updated_at = ?3
 WHERE task_id = ?1)",
              task_id, error, now)
            .run();
        insertDeliveries(task_id, deliveries, now);
        finishTask(task_id, now);
        recordEvent(task_id, BuildStatus::kPending, BuildStatus::kCancelled, build->attempts,
                    "cancelled while pending" + why, now);
        syncAudit(task_id, now);
      } else if (!build->cancel_requested) {
        Query(*db_, "UPDATE builds SET cancel_requested = 1, updated_at = ?2 WHERE task_id = ?1",
              task_id, now)
            .run();
        recordEvent(task_id, BuildStatus::kRunning, BuildStatus::kRunning, build->attempts,
                    "cancellation requested" + why + "; the worker stops at its next renewal", now);
      }
      auto after = findBuild(task_id);
      tx.commit();
      // A cancelled pending build no longer holds back younger builds of its branch.
      wake();
      return *after;
    });
  }

  Result<std::optional<ports::Claim>> claim(const std::string& worker_id,
                                            std::chrono::milliseconds lease) override {
    return locked("claiming a build", [&]() -> Result<std::optional<ports::Claim>> {
      if (lease.count() <= 0) {
        return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
      }
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      std::string task_id;
      {
        Query q(*db_, kNextRunnableSql, now);
        if (!q.next()) return std::optional<ports::Claim>();
        task_id = q.text(0);
      }
      const std::string token = newLeaseToken();
      Query(*db_, R"(
UPDATE builds SET status = 'running', attempts = attempts + 1,
                  started_at = coalesce(started_at, ?2), worker_id = ?3, updated_at = ?2
 WHERE task_id = ?1 AND status = 'pending')",
            task_id, now, worker_id)
          .run();
      if (db_->changes() != 1) {
        throw std::runtime_error("build " + task_id + " has a queued task but is not pending");
      }
      Query(*db_, R"(
UPDATE work_tasks SET state = 'leased', lease_owner = ?2, lease_token = ?3,
                      lease_expires_at = ?4, updated_at = ?5
 WHERE task_id = ?1)",
            task_id, worker_id, token, now + static_cast<TimeMs>(lease.count()), now)
          .run();
      Build build = *findBuild(task_id);
      recordEvent(task_id, BuildStatus::kPending, BuildStatus::kRunning, build.attempts,
                  "claimed by worker " + worker_id + " (attempt " + std::to_string(build.attempts) +
                      " of " + std::to_string(build.max_attempts) + ")",
                  now);
      syncAudit(task_id, now);
      tx.commit();
      return std::optional<ports::Claim>(ports::Claim{std::move(build), token});
    });
  }

  Result<ports::LeaseState> renew(const std::string& task_id, const std::string& lease_token,
                                  std::chrono::milliseconds lease) override {
    return locked("renewing a lease", [&]() -> Result<ports::LeaseState> {
      if (lease.count() <= 0) {
        return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
      }
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      Result<Lease> held = holdLease(task_id, lease_token, now, /*must_be_live=*/true);
      if (!held.ok()) return held.error();
      Query(*db_, "UPDATE work_tasks SET lease_expires_at = ?2, updated_at = ?3 WHERE task_id = ?1",
            task_id, now + static_cast<TimeMs>(lease.count()), now)
          .run();
      tx.commit();
      return ports::LeaseState{held->build.cancel_requested};
    });
  }

  Result<Build> finish(const std::string& task_id, const std::string& lease_token,
                       const ports::Outcome& outcome) override {
    return locked("finishing a build", [&]() -> Result<Build> {
      if (!domain::isTerminal(outcome.status)) {
        return makeError(ErrorCode::kInvalidArgument,
                         "an attempt must finish completed, failed or cancelled, not " +
                             str(domain::statusName(outcome.status)));
      }
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      // An expired but not yet reaped lease still finishes: nobody else has
      // started on the build, so the work is not wasted.
      Result<Lease> held = holdLease(task_id, lease_token, now, /*must_be_live=*/false);
      if (!held.ok()) return held.error();
      const Build& build = held->build;
      if (auto err = checkDeliveries(outcome.deliveries)) return *err;

      ErrorKind kind = outcome.error_kind;
      if (kind == ErrorKind::kNone && outcome.status == BuildStatus::kFailed) {
        kind = ErrorKind::kWorkload;
      }
      if (kind == ErrorKind::kNone && outcome.status == BuildStatus::kCancelled) {
        kind = ErrorKind::kCancelled;
      }
      domain::BuildResult result = outcome.result;
      const std::string error = outcome.error.empty() ? result.error : outcome.error;
      if (result.error.empty()) result.error = error;
      const std::string composition = outcome.composition.empty()
                                          ? codec::toJson(build.composition).dump()
                                          : codec::toJson(outcome.composition).dump();
      Query(*db_, R"(
UPDATE builds SET status = ?2, result_json = ?3, error_kind = ?4, error = ?5, finished_at = ?6,
                  composition_json = ?7, updated_at = ?6
 WHERE task_id = ?1)",
            task_id, str(domain::statusName(outcome.status)), codec::toJson(result).dump(),
            errorKindColumn(kind), nonEmpty(error), now, composition)
          .run();
      finishTask(task_id, now);
      std::string message = str(domain::statusName(outcome.status));
      if (kind != ErrorKind::kNone) message += " (" + str(domain::errorKindName(kind)) + ")";
      if (!error.empty()) message += ": " + error;
      recordEvent(task_id, BuildStatus::kRunning, outcome.status, build.attempts, message, now);
      syncAudit(task_id, now);
      insertDeliveries(task_id, outcome.deliveries, now);
      auto after = findBuild(task_id);
      tx.commit();
      // The branch and a running slot are free again.
      wake();
      return *after;
    });
  }

  Result<void> release(const std::string& task_id, const std::string& lease_token,
                       const std::string& reason) override {
    return locked("releasing a build", [&]() -> Result<void> {
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      Result<Lease> held = holdLease(task_id, lease_token, now, /*must_be_live=*/false);
      if (!held.ok()) return held.error();
      requeue(task_id, now);
      recordEvent(task_id, BuildStatus::kRunning, BuildStatus::kPending, held->build.attempts,
                  "released by worker " + held->owner + (reason.empty() ? "" : ": " + reason), now);
      syncAudit(task_id, now);
      tx.commit();
      wake();
      return {};
    });
  }

  Result<int> reapExpiredLeases(const ports::DeliveryPlan& plan) override {
    return locked("reaping expired leases", [&]() -> Result<int> {
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      struct Expired {
        std::string task_id;
        std::string owner;
        int attempts;
        int max_attempts;
      };
      std::vector<Expired> expired;
      {
        Query q(*db_, R"(
SELECT t.task_id, t.lease_owner, b.attempts, b.max_attempts
  FROM work_tasks t JOIN builds b ON b.task_id = t.task_id
 WHERE t.state = 'leased' AND t.lease_expires_at <= ?1 AND b.status = 'running'
 ORDER BY t.lease_expires_at)",
                now);
        while (q.next()) expired.push_back({q.text(0), q.text(1), q.i32(2), q.i32(3)});
      }
      for (const Expired& e : expired) {
        const std::string attempt =
            "attempt " + std::to_string(e.attempts) + " of " + std::to_string(e.max_attempts);
        if (e.attempts >= e.max_attempts) {
          const std::string error = "worker " + e.owner + " was lost: its lease expired during " +
                                    attempt + " and no attempts are left";
          std::vector<ports::NewDelivery> deliveries;
          if (plan) {
            ports::Outcome outcome;
            outcome.status = BuildStatus::kFailed;
            outcome.error_kind = ErrorKind::kInfrastructure;
            outcome.error = error;
            outcome.result.error = error;
            deliveries = plan(*findBuild(e.task_id), outcome);
            if (checkDeliveries(deliveries)) deliveries.clear();  // dropped, see store.h
          }
          insertDeliveries(e.task_id, deliveries, now);
          Query(*db_, R"(
UPDATE builds SET status = 'failed', error_kind = 'infrastructure', error = ?2, finished_at = ?3,
                  updated_at = ?3
 WHERE task_id = ?1)",
                e.task_id, error, now)
              .run();
          finishTask(e.task_id, now);
          recordEvent(e.task_id, BuildStatus::kRunning, BuildStatus::kFailed, e.attempts,
                      "failed (infrastructure): " + error, now);
        } else {
          requeue(e.task_id, now);
          recordEvent(e.task_id, BuildStatus::kRunning, BuildStatus::kPending, e.attempts,
                      "worker " + e.owner + " was lost (its lease expired during " + attempt +
                          "); queued for attempt " + std::to_string(e.attempts + 1),
                      now);
        }
        syncAudit(e.task_id, now);
      }
      tx.commit();
      if (!expired.empty()) wake();
      return static_cast<int>(expired.size());
    });
  }

  void waitForWork(std::chrono::milliseconds max_wait) override {
    const auto deadline = std::chrono::steady_clock::now() + max_wait;
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      generation = wake_generation_;
    }
    // Work committed before the generation was read is found here; work
    // committed after it bumps the generation.
    std::optional<int64_t> version = dataVersion();
    if (hasRunnableWork()) return;
    while (true) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return;
      {
        std::unique_lock<std::mutex> lock(wake_mu_);
        if (wake_cv_.wait_until(lock, std::min(deadline, now + kForeignWritePoll),
                                [&] { return wake_generation_ != generation; })) {
          return;
        }
      }
      const std::optional<int64_t> current = dataVersion();
      if (current != version) {
        version = current;
        if (hasRunnableWork()) return;
      }
    }
  }

  Result<ports::IdempotencyRecord> beginIdempotent(const std::string& key,
                                                   const std::string& fingerprint) override {
    using State = ports::IdempotencyRecord::State;
    return locked("beginning an idempotent request", [&]() -> Result<ports::IdempotencyRecord> {
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      if (now - last_idempotency_sweep_ms_ >= kIdempotencyAbandonedMs) {
        Query(*db_, "DELETE FROM idempotency_keys WHERE created_at <= ?1", now - kIdempotencyTtlMs)
            .run();
        last_idempotency_sweep_ms_ = now;
      }
      bool exists = false;
      {
        Query q(*db_, R"(
SELECT fingerprint, state, status, body, content_type, location, created_at
  FROM idempotency_keys WHERE key = ?1)",
                key);
        if (q.next()) {
          exists = true;
          const bool done = q.text(1) == "done";
          const TimeMs age = now - q.i64(6);
          const bool stale = done ? age >= kIdempotencyTtlMs : age >= kIdempotencyAbandonedMs;
          if (!stale) {
            ports::IdempotencyRecord r;
            r.state = done ? State::kDone : State::kInProgress;
            r.fingerprint = q.text(0);
            r.status = q.i32(2);
            r.body = q.text(3);
            r.content_type = q.text(4);
            r.location = q.text(5);
            return r;
          }
        }
      }
      if (exists) {
        Query(*db_, R"(
UPDATE idempotency_keys SET fingerprint = ?2, state = 'in_progress', status = NULL, body = NULL,
                            content_type = NULL, location = NULL, created_at = ?3
 WHERE key = ?1)",
              key, fingerprint, now)
            .run();
      } else {
        Query(*db_, R"(
INSERT INTO idempotency_keys (key, fingerprint, state, created_at)
VALUES (?1, ?2, 'in_progress', ?3))",
              key, fingerprint, now)
            .run();
      }
      tx.commit();
      ports::IdempotencyRecord r;
      r.state = State::kNew;
      r.fingerprint = fingerprint;
      return r;
    });
  }

  Result<void> completeIdempotent(const std::string& key,
                                  const ports::IdempotencyRecord& answer) override {
    return locked("storing an idempotent answer", [&]() -> Result<void> {
      Transaction tx(*db_, Mode::kWrite);
      Query(*db_, R"(
UPDATE idempotency_keys SET state = 'done', status = ?2, body = ?3, content_type = ?4,
                            location = ?5
 WHERE key = ?1 AND state = 'in_progress')",
            key, answer.status, answer.body, nonEmpty(answer.content_type),
            nonEmpty(answer.location))
          .run();
      if (db_->changes() == 0) {
        Query q(*db_, "SELECT state FROM idempotency_keys WHERE key = ?1", key);
        if (q.next()) {
          return makeError(ErrorCode::kConflict,
                           "idempotency key " + quoted(key) + " already has its answer");
        }
        return makeError(ErrorCode::kNotFound, "idempotency key " + quoted(key) +
                                                   " is not in progress (never begun, "
                                                   "abandoned or expired)");
      }
      tx.commit();
      return {};
    });
  }

  Result<void> abandonIdempotent(const std::string& key) override {
    return locked("abandoning an idempotent request", [&]() -> Result<void> {
      Transaction tx(*db_, Mode::kWrite);
      Query(*db_, "DELETE FROM idempotency_keys WHERE key = ?1 AND state = 'in_progress'", key)
          .run();
      tx.commit();
      return {};
    });
  }

  Result<std::vector<Delivery>> claimDueDeliveries(const std::string& owner, int limit,
                                                   std::chrono::milliseconds lease) override {
    return locked("claiming due deliveries", [&]() -> Result<std::vector<Delivery>> {
      if (auto err = validateClaimLimit(limit)) return *err;
      if (lease.count() <= 0) {
        return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
      }
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      std::vector<int64_t> due;
      {
        Query q(*db_, R"(
SELECT id FROM deliveries
 WHERE state = 'pending' AND next_attempt_at <= ?1
   AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
 ORDER BY next_attempt_at, id
 LIMIT ?2)",
                now, limit);
        while (q.next()) due.push_back(q.i64(0));
      }
      std::vector<Delivery> out;
      for (int64_t id : due) {
        Query(*db_, R"(
UPDATE deliveries SET lease_owner = ?2, lease_expires_at = ?3, updated_at = ?4 WHERE id = ?1)",
              id, owner, now + static_cast<TimeMs>(lease.count()), now)
            .run();
        out.push_back(*findDelivery(id));
      }
      tx.commit();
      return out;
    });
  }

  Result<Delivery> recordDeliveryAttempt(int64_t delivery_id, const std::string& owner,
                                         const DeliveryAttempt& attempt,
                                         std::optional<TimeMs> next_attempt_at) override {
    return locked("recording a delivery attempt", [&]() -> Result<Delivery> {
      Transaction tx(*db_, Mode::kWrite);
      const TimeMs now = domain::nowMs();
      std::optional<Delivery> d = findDelivery(delivery_id);
      if (!d) {
        return makeError(ErrorCode::kNotFound,
                         "delivery " + std::to_string(delivery_id) + " not found");
      }
      if (d->state != DeliveryState::kPending) {
        return makeError(ErrorCode::kConflict, "delivery " + std::to_string(delivery_id) +
                                                   " is already " +
                                                   str(domain::deliveryStateName(d->state)));
      }
      {
        Query q(*db_, "SELECT lease_owner FROM deliveries WHERE id = ?1", delivery_id);
        q.next();
        if (q.optText(0) != std::optional<std::string>(owner)) {
          return makeError(ErrorCode::kConflict,
                           "delivery " + std::to_string(delivery_id) + " is not leased by " +
                               quoted(owner) + " (its lease expired and it was claimed again)");
        }
      }
      const int number = d->attempts + 1;
      Query(*db_, R"(
INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, detail, duration_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6))",
            delivery_id, number, attempt.at, attempt.ok, attempt.detail, attempt.duration_ms)
          .run();
      if (attempt.ok) {
        Query(*db_, R"(
UPDATE deliveries SET state = 'delivered', attempts = ?2, next_attempt_at = NULL,
                      lease_owner = NULL, lease_expires_at = NULL, delivered_at = ?3,
                      last_error = NULL, updated_at = ?3
 WHERE id = ?1)",
              delivery_id, number, now)
            .run();
      } else {
        Query(*db_, R"(
UPDATE deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, lease_owner = NULL,
                      lease_expires_at = NULL, last_error = ?5, updated_at = ?6
 WHERE id = ?1)",
              delivery_id, next_attempt_at ? "pending" : "failed", number, next_attempt_at,
              attempt.detail, now)
            .run();
      }
      Delivery after = *findDelivery(delivery_id);
      tx.commit();
      return after;
    });
  }

  Result<std::vector<Delivery>> listDeliveries(const std::string& task_id) override {
    return locked("listing deliveries", [&]() -> Result<std::vector<Delivery>> {
      Transaction tx(*db_, Mode::kRead);
      if (!findBuild(task_id)) return notFoundBuild(task_id);
      std::vector<Delivery> out;
      {
        Query q(*db_,
                "SELECT " + kDeliveryColumns + " FROM deliveries WHERE task_id = ?1 ORDER BY id",
                task_id);
        while (q.next()) out.push_back(readDelivery(q));
      }
      for (Delivery& d : out) {
        Query q(*db_, R"(
SELECT attempt, at, ok, detail, duration_ms FROM delivery_attempts
 WHERE delivery_id = ?1 ORDER BY attempt)",
                d.id);
        while (q.next()) {
          d.attempt_log.push_back(
              DeliveryAttempt{q.i32(0), q.i64(1), q.i32(2) != 0, q.text(3), q.i64(4)});
        }
      }
      tx.commit();
      return out;
    });
  }

 private:
  // Runs `body` with the connection to itself; converts the adapter's
  // exceptions into Errors that say what was being done.
  template <class F>
  auto locked(const char* what, F&& body) -> decltype(body()) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      return body();
    } catch (const SqlError& e) {
      Error err = toError(e);
      err.message = std::string(what) + ": " + err.message;
      return err;
    } catch (const json::exception& e) {
      return makeError(ErrorCode::kInternal,
                       std::string(what) + ": a stored JSON document is unreadable: " + e.what());
    } catch (const std::exception& e) {
      return makeError(ErrorCode::kInternal, std::string(what) + ": " + e.what());
    }
  }

  std::optional<Project> findProject(const std::string& id) {
    Query q(*db_, "SELECT " + kProjectColumns + " FROM projects WHERE id = ?1", id);
    if (!q.next()) return std::nullopt;
    return readProject(q);
  }

  Project insertProject(const Project& project, TimeMs now) {
    Project stored = project;
    if (stored.created_at == 0) stored.created_at = now;
    Query(*db_, R"(
INSERT INTO projects (id, repo_url, default_branch, source, max_running_builds,
                      max_pending_builds, max_timeout_s, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9))",
          stored.id, stored.repo_url, stored.default_branch, stored.source,
          stored.max_running_builds, stored.max_pending_builds, stored.max_timeout_s,
          stored.created_at, now)
        .run();
    return stored;
  }

  // Why `deliveries` cannot be queued (validateNewDeliveries, or an event id
  // already taken), or nullopt.
  std::optional<Error> checkDeliveries(const std::vector<ports::NewDelivery>& deliveries) {
    if (auto err = validateNewDeliveries(deliveries)) return err;
    for (const ports::NewDelivery& d : deliveries) {
      Query q(*db_, "SELECT 1 FROM deliveries WHERE event_id = ?1", d.event_id);
      if (q.next()) {
        return makeError(ErrorCode::kConflict,
                         "a delivery with event id " + d.event_id + " already exists");
      }
    }
    return std::nullopt;
  }

  // Inside a write transaction, after checkDeliveries: pending, due now.
  void insertDeliveries(const std::string& task_id,
                        const std::vector<ports::NewDelivery>& deliveries, TimeMs now) {
    for (const ports::NewDelivery& d : deliveries) {
      Query(*db_, R"(
INSERT INTO deliveries (task_id, notifier, target, event_id, payload_json, state, attempts,
                        next_attempt_at, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6))",
            task_id, d.notifier, d.target, d.event_id, d.payload, now)
          .run();
    }
  }

  std::optional<Delivery> findDelivery(int64_t id) {
    Query q(*db_, "SELECT " + kDeliveryColumns + " FROM deliveries WHERE id = ?1", id);
    if (!q.next()) return std::nullopt;
    return readDelivery(q);
  }

  std::optional<Build> findBuild(const std::string& task_id) {
    Query q(*db_, "SELECT " + kBuildColumns + " FROM builds WHERE task_id = ?1", task_id);
    if (!q.next()) return std::nullopt;
    return readBuild(q);
  }

  // Inside a write transaction: the build, its audit entry, its creation
  // event and its queued task. Writes nothing when it returns an error.
  Result<Build> insertBuild(const Project& project, const Build& build, TimeMs now) {
    if (build.max_attempts < 1) {
      return makeError(ErrorCode::kInvalidArgument, "max_attempts must be at least 1, got " +
                                                        std::to_string(build.max_attempts));
    }
    Build stored = build;
    stored.project_id = project.id;
    if (stored.task_id.empty()) stored.task_id = domain::newTaskId(now);
    if (stored.branch.empty()) stored.branch = build.spec.branch.value_or(project.default_branch);
    if (stored.created_at == 0) stored.created_at = now;
    if (findBuild(stored.task_id)) {
      return makeError(ErrorCode::kConflict, "build " + stored.task_id + " already exists");
    }
    if (stored.retry_of && !findBuild(*stored.retry_of)) {
      return makeError(ErrorCode::kNotFound,
                       "build " + *stored.retry_of + " (the build to retry) not found");
    }
    {
      Query q(*db_, "SELECT count(*) FROM builds WHERE project_id = ?1 AND status = 'pending'",
              project.id);
      q.next();
      if (q.i64(0) >= project.max_pending_builds) {
        return makeError(ErrorCode::kResourceExhausted,
                         "project " + quoted(project.id) + " already has " +
                             std::to_string(q.i64(0)) +
                             " pending builds (max_pending_builds); retry later",
                         true);
      }
    }
    Query(*db_, R"(
INSERT INTO builds (task_id, project_id, branch, status, spec_json, result_json, attempts,
                    max_attempts, error_kind, error, created_at, started_at, finished_at,
                    worker_id, composition_json, retry_of, cancel_requested, updated_at)
VALUES (?1, ?2, ?3, 'pending', ?4, NULL, 0, ?5, NULL, NULL, ?6, NULL, NULL, NULL, ?7, ?8, 0,
        ?9))",
          stored.task_id, stored.project_id, stored.branch, codec::toJson(stored.spec).dump(),
          stored.max_attempts, stored.created_at, codec::toJson(stored.composition).dump(),
          stored.retry_of, now)
        .run();
    Query(*db_, R"(
INSERT INTO work_tasks (task_id, state, available_at, updated_at) VALUES (?1, 'queued', ?2, ?2))",
          stored.task_id, now)
        .run();
    recordEvent(stored.task_id, std::nullopt, BuildStatus::kPending, 0,
                stored.retry_of ? "enqueued as a retry of build " + *stored.retry_of : "enqueued",
                now);
    syncAudit(stored.task_id, now);
    return *findBuild(stored.task_id);
  }

  void recordEvent(const std::string& task_id, std::optional<BuildStatus> from, BuildStatus to,
                   int attempt, const std::string& message, TimeMs now) {
    std::optional<std::string> from_name;
    if (from) from_name = str(domain::statusName(*from));
    Query(*db_, R"(
INSERT INTO build_events (task_id, at, from_status, to_status, attempt, message)
VALUES (?1, ?2, ?3, ?4, ?5, ?6))",
          task_id, now, from_name, str(domain::statusName(to)), attempt, message)
        .run();
  }

  // The audit entry mirrors the build after every change.
  void syncAudit(const std::string& task_id, TimeMs now) {
    Query(*db_, R"(
INSERT INTO build_audit (task_id, project_id, branch, status, spec_json, result_json, worker_id,
                         attempts, error_kind, error, created_at, started_at, finished_at,
                         updated_at)
SELECT task_id, project_id, branch, status, spec_json, result_json, worker_id, attempts,
       error_kind, error, created_at, started_at, finished_at, ?2
  FROM builds WHERE task_id = ?1
ON CONFLICT (task_id) DO UPDATE SET
  status = excluded.status, result_json = excluded.result_json, worker_id = excluded.worker_id,
  attempts = excluded.attempts, error_kind = excluded.error_kind, error = excluded.error,
  started_at = excluded.started_at, finished_at = excluded.finished_at,
  updated_at = excluded.updated_at)",
          task_id, now)
        .run();
  }

  // The current holder of the task, or why `lease_token` is not it.
  Result<Lease> holdLease(const std::string& task_id, const std::string& lease_token, TimeMs now,
                          bool must_be_live) {
    auto build = findBuild(task_id);
    if (!build) return notFoundBuild(task_id);
    if (domain::isTerminal(build->status)) {
      return makeError(ErrorCode::kConflict, "build " + task_id + " is already " +
                                                 str(domain::statusName(build->status)) +
                                                 "; a finished build never changes");
    }
    Query q(*db_,
            "SELECT state, lease_token, lease_expires_at, lease_owner FROM work_tasks "
            "WHERE task_id = ?1",
            task_id);
    if (!q.next() || q.text(0) != "leased" || q.text(1) != lease_token) {
      return makeError(ErrorCode::kConflict,
                       "lease for build " + task_id +
                           " is no longer held by this worker (it was released, or expired and "
                           "the build went to another attempt)");
    }
    const TimeMs expires_at = q.i64(2);
    if (must_be_live && expires_at <= now) {
      return makeError(ErrorCode::kConflict,
                       "lease for build " + task_id + " expired " +
                           std::to_string(now - expires_at) +
                           " ms ago; the worker lost the task and must stop working on it");
    }
    return Lease{std::move(*build), q.text(3)};
  }

  // running -> pending: the task goes back to the queue.
  void requeue(const std::string& task_id, TimeMs now) {
    Query(*db_,
          "UPDATE builds SET status = 'pending', worker_id = NULL, updated_at = ?2 "
          "WHERE task_id = ?1",
          task_id, now)
        .run();
    Query(*db_, R"(
UPDATE work_tasks SET state = 'queued', lease_owner = NULL, lease_token = NULL,
                      lease_expires_at = NULL, available_at = ?2, updated_at = ?2
 WHERE task_id = ?1)",
          task_id, now)
        .run();
  }

  // The task leaves the queue for good.
  void finishTask(const std::string& task_id, TimeMs now) {
    Query(*db_, R"(
UPDATE work_tasks SET state = 'done', lease_owner = NULL, lease_token = NULL,
                      lease_expires_at = NULL, updated_at = ?2
 WHERE task_id = ?1)",
          task_id, now)
        .run();
  }

  void wake() {
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      ++wake_generation_;
    }
    wake_cv_.notify_all();
  }

  bool hasRunnableWork() {
    auto found = locked("looking for work", [&]() -> Result<bool> {
      Query q(*db_, kNextRunnableSql, domain::nowMs());
      return q.next();
    });
    // On an error, let the caller's next claim report it.
    return !found.ok() || *found;
  }

  // Changes whenever another connection commits (PRAGMA data_version).
  std::optional<int64_t> dataVersion() {
    auto version = locked("reading the data version", [&]() -> Result<int64_t> {
      Query q(*db_, "PRAGMA data_version");
      if (!q.next()) return int64_t{0};
      return q.i64(0);
    });
    if (!version.ok()) return std::nullopt;
    return *version;
  }

  std::mutex mu_;  // guards db_ and last_idempotency_sweep_ms_
  std::unique_ptr<Connection> db_;
  TimeMs last_idempotency_sweep_ms_ = 0;

  // Lock order: mu_ before wake_mu_ (wake() runs inside locked()).
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  uint64_t wake_generation_ = 0;
};

Result<std::unique_ptr<Connection>> openMigrated(const SqliteOptions& options,
                                                 MigrationReport* report) {
  Result<std::unique_ptr<Connection>> db = Connection::open(options);
  if (!db.ok()) return db;
  try {
    Result<MigrationReport> applied = applyMigrations(**db);
    if (!applied.ok()) return applied.error();
    if (report) *report = *applied;
  } catch (const SqlError& e) {
    Error err = toError(e);
    err.message = "migrating the SQLite database " + options.path + ": " + err.message;
    return err;
  }
  return db;
}

}  // namespace
}  // namespace sqlite

Result<std::unique_ptr<ports::Store>> openSqliteStore(const SqliteOptions& options) {
  Result<std::unique_ptr<sqlite::Connection>> db = sqlite::openMigrated(options, nullptr);
  if (!db.ok()) return db.error();
  return std::unique_ptr<ports::Store>(
      std::make_unique<sqlite::SqliteStore>(std::move(db).value()));
}

Result<MigrationReport> migrateSqlite(const SqliteOptions& options) {
  MigrationReport report;
  Result<std::unique_ptr<sqlite::Connection>> db = sqlite::openMigrated(options, &report);
  if (!db.ok()) return db.error();
  return report;
}

}  // namespace kiln::store
