// The PostgreSQL adapter of ports::Store: the production store, shared by
// API servers and workers in many processes on many machines.
//
// Each operation is one READ COMMITTED transaction on a pooled connection
// (pg_pool.h) using statements prepared once per connection. Lock order,
// so that two operations never wait on each other in a cycle: a project's
// claim lock (advisory) -> a work_tasks row -> its builds row. Enqueues lock
// the project row instead (the pending cap).
//
// Rationale (claim): candidates come from the partial index of queued tasks
// with FOR UPDATE SKIP LOCKED, so concurrent claimers never wait for each
// other's candidates. The runnability rules (one build per project+branch,
// in order; max_running_builds) read other rows, which a statement snapshot
// may show out of date while another claim of the same project commits. So
// the claimer then takes the project's advisory lock, which every claim of
// that project holds until it commits, and checks the rules again in a new
// statement (a new snapshot that sees every committed claim of the
// project). A candidate that no longer qualifies is let go (the transaction
// commits having changed nothing) and the claim starts over; holding one
// advisory lock at a time keeps claims free of deadlocks.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "deliveries.h"
#include "kiln/codec/build_json.h"
#include "kiln/domain/build.h"
#include "kiln/store/open.h"
#include "migrations.h"
#include "pg_listener.h"
#include "pg_pool.h"
#include "store_common.h"

namespace kiln::store {
namespace postgres {
namespace {

using common::leaseLost;
using common::notFoundBuild;
using common::notFoundProject;
using common::projectExists;
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
using nlohmann::json;

// Advisory lock keys: migrations (one bigint key) and a project's claims
// (two int keys: this namespace and hashtext(project id)).
constexpr const char* kMigrationLockSql = "SELECT pg_advisory_xact_lock(1802071149)";
// How many times a claim lets go of a candidate that lost a race and looks
// again before it reports nothing runnable (in practice one or two).
constexpr int kMaxClaimRounds = 50;
// Reaped per call, so that one transaction stays short.
constexpr int kReapBatch = 500;

const std::string kBuildColumns =
    "b.task_id, b.project_id, b.branch, b.status, b.spec::text, b.result::text, b.attempts, "
    "b.max_attempts, b.error_kind, b.error, kiln_ms(b.created_at), kiln_ms(b.started_at), "
    "kiln_ms(b.finished_at), b.worker_id, b.composition::text, b.retry_of, b.cancel_requested";
const std::string kDeliveryColumns =
    "d.id, d.task_id, d.notifier, d.target, d.event_id, d.payload, d.state, d.attempts, "
    "kiln_ms(d.next_attempt_at), kiln_ms(d.created_at), kiln_ms(d.delivered_at), d.last_error";
const std::string kProjectColumns =
    "id, repo_url, default_branch, source, max_running_builds, max_pending_builds, "
    "max_timeout_s, kiln_ms(created_at)";

// Every statement, prepared on every pooled connection.
std::vector<Statement> statements() {
  const std::string& B = kBuildColumns;
  const std::string& P = kProjectColumns;
  const std::string& D = kDeliveryColumns;
  return {
      {"project_get", "SELECT " + P + " FROM projects WHERE id = $1"},
      // Enqueues of one project serialize here (the pending cap).
      {"project_get_locked", "SELECT " + P + " FROM projects WHERE id = $1 FOR NO KEY UPDATE"},
      {"project_list", "SELECT " + P + " FROM projects ORDER BY id COLLATE \"C\""},
      {"project_insert", R"(
INSERT INTO projects (id, repo_url, default_branch, source, max_running_builds,
                      max_pending_builds, max_timeout_s, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce(kiln_ts($8), now()))
ON CONFLICT (id) DO NOTHING
RETURNING )" + P},
      {"project_upsert", R"(
INSERT INTO projects (id, repo_url, default_branch, source, max_running_builds,
                      max_pending_builds, max_timeout_s, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce(kiln_ts($8), now()))
ON CONFLICT (id) DO UPDATE SET
  repo_url = EXCLUDED.repo_url, default_branch = EXCLUDED.default_branch,
  source = EXCLUDED.source, max_running_builds = EXCLUDED.max_running_builds,
  max_pending_builds = EXCLUDED.max_pending_builds, max_timeout_s = EXCLUDED.max_timeout_s,
  updated_at = now())"},

      {"build_get", "SELECT " + B + " FROM builds b WHERE b.task_id = $1"},
      {"build_exists", "SELECT 1 FROM builds WHERE task_id = $1"},
      {"build_list", "SELECT " + B + R"( FROM builds b
 WHERE b.project_id = $1 AND ($2::text IS NULL OR b.status = $2)
   AND ($3::text IS NULL OR b.task_id < $3)
 ORDER BY b.task_id DESC LIMIT $4)"},
      {"pending_count", "SELECT count(*) FROM builds WHERE project_id = $1 AND status = 'pending'"},
      {"build_insert", R"(
INSERT INTO builds AS b (task_id, project_id, branch, status, spec, max_attempts, created_at,
                         composition, retry_of)
VALUES ($1, $2, $3, 'pending', $4::jsonb, $5, kiln_ts($6), $7::jsonb, $8)
ON CONFLICT (task_id) DO NOTHING
RETURNING )" + B},
      {"task_insert", R"(
INSERT INTO work_tasks (task_id, project_id, branch, state) VALUES ($1, $2, $3, 'queued'))"},
      // statement_timestamp(), not now(): this transaction may have begun
      // before the change that this event follows committed.
      {"event_insert", R"(
INSERT INTO build_events (task_id, at, from_status, to_status, attempt, message)
VALUES ($1, statement_timestamp(), $2, $3, $4, $5))"},
      {"events_list", R"(
SELECT seq, task_id, kiln_ms(at), from_status, to_status, attempt, message
  FROM build_events WHERE task_id = $1 ORDER BY seq)"},
      // Delivered to every listener when the transaction commits.
      {"notify_work", std::string("SELECT pg_notify('") + kWorkChannel + "', $1)"},

      // The oldest runnable queued task (store.h, claim), skipping those
      // another claim is looking at.
      {"claim_candidate", R"(
SELECT t.task_id, t.project_id, t.branch
  FROM work_tasks t JOIN projects p ON p.id = t.project_id
 WHERE t.state = 'queued' AND t.available_at <= now()
   AND NOT EXISTS (SELECT 1 FROM work_tasks r
                    WHERE r.project_id = t.project_id AND r.branch = t.branch
                      AND r.state = 'leased')
   AND NOT EXISTS (SELECT 1 FROM work_tasks o
                    WHERE o.project_id = t.project_id AND o.branch = t.branch
                      AND o.state = 'queued' AND o.task_id < t.task_id)
   AND (SELECT count(*) FROM work_tasks r
         WHERE r.project_id = t.project_id AND r.state = 'leased') < p.max_running_builds
 ORDER BY t.task_id
 LIMIT 1
   FOR UPDATE OF t SKIP LOCKED)"},
      {"claim_lock", "SELECT pg_advisory_xact_lock(1802071150, hashtext($1))"},
      // The same rules for one candidate, read after taking the project's
      // claim lock: true when it may run.
      {"claim_recheck", R"(
SELECT NOT EXISTS (SELECT 1 FROM work_tasks
                    WHERE project_id = $1 AND branch = $2 AND state = 'leased')
   AND NOT EXISTS (SELECT 1 FROM work_tasks
                    WHERE project_id = $1 AND branch = $2 AND state = 'queued'
                      AND task_id < $3)
   AND (SELECT count(*) FROM work_tasks WHERE project_id = $1 AND state = 'leased')
       < p.max_running_builds
  FROM projects p WHERE p.id = $1)"},
      {"claim_take", R"(
WITH t AS (
  UPDATE work_tasks
     SET state = 'leased', lease_owner = $2, lease_token = gen_random_uuid()::text,
         lease_expires_at = now() + $3::bigint * interval '1 millisecond', updated_at = now()
   WHERE task_id = $1 AND state = 'queued'
  RETURNING task_id, lease_token)
UPDATE builds b
   SET status = 'running', attempts = b.attempts + 1, started_at = coalesce(b.started_at, now()),
       worker_id = $2, updated_at = now()
  FROM t
 WHERE b.task_id = t.task_id AND b.status = 'pending'
RETURNING t.lease_token, )" +
                         B},

      // A task's lease, locked: state, token, owner, ms since it expired
      // (negative while live).
      {"lease_lock", R"(
SELECT state, lease_token, lease_owner, kiln_ms(now()) - kiln_ms(lease_expires_at)
  FROM work_tasks WHERE task_id = $1 FOR UPDATE)"},
      {"lease_extend", R"(
UPDATE work_tasks SET lease_expires_at = now() + $2::bigint * interval '1 millisecond',
                      updated_at = now()
 WHERE task_id = $1)"},
      {"build_end", R"(
UPDATE builds b
   SET status = $2, result = coalesce($3::jsonb, b.result), error_kind = $4, error = $5,
       composition = coalesce($6::jsonb, b.composition), finished_at = now(), updated_at = now()
 WHERE b.task_id = $1
RETURNING )" + B},
      {"build_cancel_pending", R"(
UPDATE builds b
   SET status = 'cancelled', error_kind = 'cancelled', error = $2, finished_at = now(),
       cancel_requested = true, updated_at = now()
 WHERE b.task_id = $1
RETURNING )" + B},
      {"build_cancel_request", R"(
UPDATE builds b SET cancel_requested = true, updated_at = now() WHERE b.task_id = $1
RETURNING )" + B},
      {"build_requeue", R"(
UPDATE builds SET status = 'pending', worker_id = NULL, updated_at = now() WHERE task_id = $1)"},
      {"task_requeue", R"(
UPDATE work_tasks SET state = 'queued', lease_owner = NULL, lease_token = NULL,
                      lease_expires_at = NULL, available_at = now(), updated_at = now()
 WHERE task_id = $1)"},
      {"task_done", R"(
UPDATE work_tasks SET state = 'done', lease_owner = NULL, lease_token = NULL,
                      lease_expires_at = NULL, updated_at = now()
 WHERE task_id = $1)"},
      // Expired leases, skipping tasks whose worker is finishing right now.
      {"reap_expired", R"(
SELECT t.task_id, t.lease_owner, b.attempts, b.max_attempts
  FROM work_tasks t JOIN builds b ON b.task_id = t.task_id
 WHERE t.state = 'leased' AND t.lease_expires_at <= now() AND b.status = 'running'
 ORDER BY t.lease_expires_at
 LIMIT )" + std::to_string(kReapBatch) +
                           R"(
   FOR UPDATE OF t SKIP LOCKED)"},

      {"idem_sweep", R"(
DELETE FROM idempotency_keys WHERE created_at <= now() - interval '24 hours')"},
      // Records the key as in progress unless a live record exists; a record
      // is stale when done for 24 h or in progress for 60 s (its request died).
      {"idem_take", R"(
INSERT INTO idempotency_keys AS k (key, fingerprint, state) VALUES ($1, $2, 'in_progress')
ON CONFLICT (key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, state = 'in_progress', status = NULL, body = NULL,
       content_type = NULL, location = NULL, created_at = now()
 WHERE (k.state = 'done' AND k.created_at <= now() - interval '24 hours')
    OR (k.state = 'in_progress' AND k.created_at <= now() - interval '60 seconds')
RETURNING 1)"},
      {"idem_get", R"(
SELECT fingerprint, state, status, body, content_type, location
  FROM idempotency_keys WHERE key = $1)"},
      {"idem_complete", R"(
UPDATE idempotency_keys SET state = 'done', status = $2, body = $3, content_type = $4,
                            location = $5
 WHERE key = $1 AND state = 'in_progress')"},
      {"idem_abandon", "DELETE FROM idempotency_keys WHERE key = $1 AND state = 'in_progress'"},

      // The outbox. An event id already taken inserts nothing.
      {"delivery_insert", R"(
INSERT INTO deliveries (task_id, notifier, target, event_id, payload, state, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, 'pending', now())
ON CONFLICT (event_id) DO NOTHING
RETURNING id)"},
      // Due, unleased (or lease expired) deliveries, skipping those another
      // claim is taking right now.
      {"delivery_claim", R"(
WITH due AS (
  SELECT id FROM deliveries
   WHERE state = 'pending' AND next_attempt_at <= now()
     AND (lease_expires_at IS NULL OR lease_expires_at <= now())
   ORDER BY next_attempt_at, id
   LIMIT $2
     FOR UPDATE SKIP LOCKED)
UPDATE deliveries d
   SET lease_owner = $1, lease_expires_at = now() + $3::bigint * interval '1 millisecond',
       updated_at = now()
  FROM due
 WHERE d.id = due.id
RETURNING )" + D},
      {"delivery_lock",
       "SELECT " + D + ", d.lease_owner FROM deliveries d WHERE d.id = $1 FOR UPDATE"},
      {"delivery_attempt_insert", R"(
INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, detail, duration_ms)
VALUES ($1, $2, kiln_ts($3), $4, $5, $6))"},
      {"delivery_delivered", R"(
UPDATE deliveries d
   SET state = 'delivered', attempts = $2, next_attempt_at = NULL, lease_owner = NULL,
       lease_expires_at = NULL, delivered_at = now(), last_error = NULL, updated_at = now()
 WHERE d.id = $1
RETURNING )" + D},
      {"delivery_not_delivered", R"(
UPDATE deliveries d
   SET state = $2, attempts = $3, next_attempt_at = kiln_ts($4), lease_owner = NULL,
       lease_expires_at = NULL, last_error = $5, updated_at = now()
 WHERE d.id = $1
RETURNING )" + D},
      {"deliveries_list", "SELECT " + D + " FROM deliveries d WHERE d.task_id = $1 ORDER BY d.id"},
      {"delivery_attempts_list", R"(
SELECT a.delivery_id, a.attempt, kiln_ms(a.at), a.ok, a.detail, a.duration_ms
  FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
 WHERE d.task_id = $1
 ORDER BY a.delivery_id, a.attempt)"},
  };
}

// Parameters: nullptr is SQL NULL.
const char* nullable(const std::optional<std::string>& s) {
  return s ? s->c_str() : nullptr;
}
const char* nullIfEmpty(const std::string& s) {
  return s.empty() ? nullptr : s.c_str();
}

std::string text(const pqxx::field& f) {
  return f.is_null() ? std::string() : f.as<std::string>();
}
std::optional<std::string> optText(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}
std::optional<int64_t> optI64(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

Project readProject(const pqxx::row& r) {
  Project p;
  p.id = r[0].as<std::string>();
  p.repo_url = r[1].as<std::string>();
  p.default_branch = r[2].as<std::string>();
  p.source = r[3].as<std::string>();
  p.max_running_builds = r[4].as<int>();
  p.max_pending_builds = r[5].as<int>();
  p.max_timeout_s = r[6].as<int>();
  p.created_at = r[7].as<int64_t>();
  return p;
}

// A build from kBuildColumns starting at column `at`.
Build readBuild(const pqxx::row& r, int at = 0) {
  auto f = [&](int i) { return r[at + i]; };
  Build b;
  b.task_id = f(0).as<std::string>();
  b.project_id = f(1).as<std::string>();
  b.branch = f(2).as<std::string>();
  const std::string status = f(3).as<std::string>();
  const auto parsed = domain::parseStatus(status);
  if (!parsed) {
    throw std::runtime_error("build " + b.task_id + " has an unknown status " + quoted(status));
  }
  b.status = *parsed;
  b.spec = codec::specFromStored(json::parse(f(4).as<std::string>()));
  if (!f(5).is_null()) b.result = codec::resultFromStored(json::parse(f(5).as<std::string>()));
  b.attempts = f(6).as<int>();
  b.max_attempts = f(7).as<int>();
  b.error_kind = domain::parseErrorKind(text(f(8))).value_or(ErrorKind::kNone);
  b.error = text(f(9));
  b.created_at = f(10).as<int64_t>();
  b.started_at = optI64(f(11));
  b.finished_at = optI64(f(12));
  b.worker_id = text(f(13));
  b.composition = codec::compositionFromStored(json::parse(f(14).as<std::string>()));
  b.retry_of = optText(f(15));
  b.cancel_requested = f(16).as<bool>();
  return b;
}

// A delivery from kDeliveryColumns.
Delivery readDelivery(const pqxx::row& r) {
  Delivery d;
  d.id = r[0].as<int64_t>();
  d.task_id = r[1].as<std::string>();
  d.notifier = r[2].as<std::string>();
  d.target = text(r[3]);
  d.event_id = r[4].as<std::string>();
  d.payload = r[5].as<std::string>();
  const std::string state = r[6].as<std::string>();
  const auto parsed = domain::parseDeliveryState(state);
  if (!parsed) {
    throw std::runtime_error("delivery " + std::to_string(d.id) + " has an unknown state " +
                             quoted(state));
  }
  d.state = *parsed;
  d.attempts = r[7].as<int>();
  d.next_attempt_at = optI64(r[8]);
  d.created_at = r[9].as<int64_t>();
  d.delivered_at = optI64(r[10]);
  d.last_error = text(r[11]);
  return d;
}

void recordEvent(pqxx::work& tx, const std::string& task_id, std::optional<BuildStatus> from,
                 BuildStatus to, int attempt, const std::string& message) {
  const std::string from_name = from ? str(domain::statusName(*from)) : "";
  tx.exec_prepared0("event_insert", task_id, from ? from_name.c_str() : nullptr,
                    str(domain::statusName(to)), attempt, message);
}

void notifyWork(pqxx::work& tx, const std::string& project_id) {
  tx.exec_prepared("notify_work", project_id);
}

// The lease of a task as lease_lock read it, or why `lease_token` does not
// hold it.
struct Lease {
  Build build;
  std::string owner;
};

Result<Lease> holdLease(pqxx::work& tx, const std::string& task_id, const std::string& lease_token,
                        bool must_be_live) {
  const pqxx::result lease = tx.exec_prepared("lease_lock", task_id);
  const pqxx::result build = tx.exec_prepared("build_get", task_id);
  if (build.empty() || lease.empty()) return notFoundBuild(task_id);
  Build b = readBuild(build[0]);
  if (domain::isTerminal(b.status)) {
    return makeError(ErrorCode::kConflict, "build " + task_id + " is already " +
                                               str(domain::statusName(b.status)) +
                                               "; a finished build never changes");
  }
  const pqxx::row l = lease[0];
  if (text(l[0]) != "leased" || text(l[1]) != lease_token) return leaseLost(task_id);
  const int64_t expired_ms = l[3].is_null() ? 0 : l[3].as<int64_t>();
  if (must_be_live && expired_ms >= 0) {
    return makeError(ErrorCode::kConflict,
                     "lease for build " + task_id + " expired " + std::to_string(expired_ms) +
                         " ms ago; the worker lost the task and must stop working on it");
  }
  return Lease{std::move(b), text(l[2])};
}

class PostgresStore final : public ports::Store {
 public:
  PostgresStore(std::unique_ptr<Pool> pool, std::unique_ptr<Listener> listener)
      : pool_(std::move(pool)), listener_(std::move(listener)) {}

  Result<Project> createProject(const Project& project) override {
    if (auto err = validateProject(project)) return *err;
    return transact<Project>("creating a project", [&](pqxx::work& tx) -> Result<Project> {
      const pqxx::result r = insertProject(tx, project);
      if (r.empty()) return projectExists(project.id);
      return readProject(r[0]);
    });
  }

  Result<void> upsertProject(const Project& project) override {
    if (auto err = validateProject(project)) return *err;
    auto done = transact<bool>("saving a project", [&](pqxx::work& tx) -> Result<bool> {
      std::string buf;
      tx.exec_prepared0("project_upsert", project.id, project.repo_url, project.default_branch,
                        project.source, project.max_running_builds, project.max_pending_builds,
                        project.max_timeout_s, createdAt(project, &buf));
      // A raised max_running_builds may make queued builds runnable.
      notifyWork(tx, project.id);
      return true;
    });
    if (!done.ok()) return done.error();
    listener_->wakeLocal();
    return {};
  }

  Result<Project> getProject(const std::string& id) override {
    return transact<Project>("reading a project", [&](pqxx::work& tx) -> Result<Project> {
      const pqxx::result r = tx.exec_prepared("project_get", id);
      if (r.empty()) return notFoundProject(id);
      return readProject(r[0]);
    });
  }

  Result<std::vector<Project>> listProjects() override {
    return transact<std::vector<Project>>(
        "listing projects", [&](pqxx::work& tx) -> Result<std::vector<Project>> {
          std::vector<Project> out;
          for (const pqxx::row& r : tx.exec_prepared("project_list")) out.push_back(readProject(r));
          return out;
        });
  }

  Result<Build> enqueueBuild(const Build& build) override {
    auto stored = transact<Build>("enqueueing a build", [&](pqxx::work& tx) -> Result<Build> {
      const pqxx::result p = tx.exec_prepared("project_get_locked", build.project_id);
      if (p.empty()) return notFoundProject(build.project_id);
      return insertBuild(tx, readProject(p[0]), build);
    });
    if (stored.ok()) listener_->wakeLocal();
    return stored;
  }

  Result<Build> createProjectAndEnqueue(const Project& project, const Build& build) override {
    if (auto err = validateProject(project)) return *err;
    if (build.project_id != project.id) {
      return makeError(ErrorCode::kInvalidArgument,
                       "the build names project " + quoted(build.project_id) +
                           " but the project to create is " + quoted(project.id));
    }
    auto stored = transact<Build>("creating a project and its first build",
                                  [&](pqxx::work& tx) -> Result<Build> {
                                    const pqxx::result p = insertProject(tx, project);
                                    if (p.empty()) return projectExists(project.id);
                                    return insertBuild(tx, readProject(p[0]), build);
                                  });
    if (stored.ok()) listener_->wakeLocal();
    return stored;
  }

  Result<Build> getBuild(const std::string& task_id) override {
    return transact<Build>("reading a build", [&](pqxx::work& tx) -> Result<Build> {
      const pqxx::result r = tx.exec_prepared("build_get", task_id);
      if (r.empty()) return notFoundBuild(task_id);
      return readBuild(r[0]);
    });
  }

  Result<ports::BuildPage> listBuilds(const ports::BuildQuery& query) override {
    return transact<ports::BuildPage>(
        "listing builds", [&](pqxx::work& tx) -> Result<ports::BuildPage> {
          const int limit = std::clamp(query.limit, 1, 100);
          if (tx.exec_prepared("project_get", query.project_id).empty()) {
            return notFoundProject(query.project_id);
          }
          const std::optional<std::string> status =
              query.status ? std::optional<std::string>(str(domain::statusName(*query.status)))
                           : std::nullopt;
          ports::BuildPage page;
          for (const pqxx::row& r :
               tx.exec_prepared("build_list", query.project_id, nullable(status),
                                nullable(query.before), limit + 1)) {
            page.builds.push_back(readBuild(r));
          }
          if (static_cast<int>(page.builds.size()) > limit) {
            page.builds.pop_back();
            page.next_cursor = page.builds.back().task_id;
          }
          return page;
        });
  }

  Result<std::vector<BuildEvent>> listEvents(const std::string& task_id) override {
    return transact<std::vector<BuildEvent>>(
        "listing build events", [&](pqxx::work& tx) -> Result<std::vector<BuildEvent>> {
          if (tx.exec_prepared("build_exists", task_id).empty()) return notFoundBuild(task_id);
          std::vector<BuildEvent> out;
          for (const pqxx::row& r : tx.exec_prepared("events_list", task_id)) {
            BuildEvent e;
            e.seq = r[0].as<int64_t>();
            e.task_id = r[1].as<std::string>();
            e.at = r[2].as<int64_t>();
            if (auto from = optText(r[3])) e.from = domain::parseStatus(*from);
            e.to = domain::parseStatus(r[4].as<std::string>()).value_or(BuildStatus::kPending);
            e.attempt = r[5].as<int>();
            e.message = r[6].as<std::string>();
            out.push_back(std::move(e));
          }
          return out;
        });
  }

  Result<Build> requestCancel(const std::string& task_id, const std::string& reason,
                              const ports::DeliveryPlan& plan) override {
    bool woke = false;
    auto after = transact<Build>("cancelling a build", [&](pqxx::work& tx) -> Result<Build> {
      woke = false;
      // The task row first (lock order), then the build.
      tx.exec_prepared("lease_lock", task_id);
      const pqxx::result r = tx.exec_prepared("build_get", task_id);
      if (r.empty()) return notFoundBuild(task_id);
      const Build build = readBuild(r[0]);
      if (domain::isTerminal(build.status)) {
        return makeError(ErrorCode::kConflict,
                         "build " + task_id + " is " + str(domain::statusName(build.status)) +
                             "; only pending or running builds can be cancelled");
      }
      const std::string why = reason.empty() ? "" : ": " + reason;
      if (build.status == BuildStatus::kPending) {
        const std::string error = "cancelled before it started" + why;
        if (plan) {
          ports::Outcome outcome;
          outcome.status = BuildStatus::kCancelled;
          outcome.error_kind = ErrorKind::kCancelled;
          outcome.error = error;
          outcome.result.error = error;
          const std::vector<ports::NewDelivery> deliveries = plan(build, outcome);
          if (auto err = validateNewDeliveries(deliveries)) return *err;
          if (auto err = insertDeliveries(tx, task_id, deliveries)) return *err;
        }
        const pqxx::result c = tx.exec_prepared("build_cancel_pending", task_id, error);
        tx.exec_prepared0("task_done", task_id);
        recordEvent(tx, task_id, BuildStatus::kPending, BuildStatus::kCancelled, build.attempts,
                    "cancelled while pending" + why);
        // A cancelled pending build no longer holds back younger builds of
        // its branch.
        notifyWork(tx, build.project_id);
        woke = true;
        return readBuild(c[0]);
      }
      if (build.cancel_requested) return build;
      const pqxx::result c = tx.exec_prepared("build_cancel_request", task_id);
      recordEvent(tx, task_id, BuildStatus::kRunning, BuildStatus::kRunning, build.attempts,
                  "cancellation requested" + why + "; the worker stops at its next renewal");
      return readBuild(c[0]);
    });
    if (after.ok() && woke) listener_->wakeLocal();
    return after;
  }

  Result<std::optional<ports::Claim>> claim(const std::string& worker_id,
                                            std::chrono::milliseconds lease) override {
    using Claimed = std::optional<ports::Claim>;
    if (lease.count() <= 0) {
      return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
    }
    for (int round = 0; round < kMaxClaimRounds; ++round) {
      bool lost_race = false;
      auto claimed = transact<Claimed>("claiming a build", [&](pqxx::work& tx) -> Result<Claimed> {
        lost_race = false;
        const pqxx::result c = tx.exec_prepared("claim_candidate");
        if (c.empty()) return Claimed();
        const std::string task_id = c[0][0].as<std::string>();
        const std::string project_id = c[0][1].as<std::string>();
        const std::string branch = c[0][2].as<std::string>();
        tx.exec_prepared("claim_lock", project_id);
        const pqxx::result ok = tx.exec_prepared("claim_recheck", project_id, branch, task_id);
        if (ok.empty() || !ok[0][0].as<bool>()) {
          // Another claim of the project committed meanwhile. Commit this
          // transaction (it changed nothing) and look again.
          lost_race = true;
          return Claimed();
        }
        const pqxx::result t = tx.exec_prepared("claim_take", task_id, worker_id,
                                                static_cast<long long>(lease.count()));
        if (t.empty()) {
          throw std::runtime_error("build " + task_id + " has a queued task but is not pending");
        }
        ports::Claim out{readBuild(t[0], 1), t[0][0].as<std::string>()};
        recordEvent(tx, task_id, BuildStatus::kPending, BuildStatus::kRunning, out.build.attempts,
                    "claimed by worker " + worker_id + " (attempt " +
                        std::to_string(out.build.attempts) + " of " +
                        std::to_string(out.build.max_attempts) + ")");
        return Claimed(std::move(out));
      });
      if (!claimed.ok() || !lost_race) return claimed;
    }
    return Claimed();
  }

  Result<ports::LeaseState> renew(const std::string& task_id, const std::string& lease_token,
                                  std::chrono::milliseconds lease) override {
    if (lease.count() <= 0) {
      return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
    }
    return transact<ports::LeaseState>(
        "renewing a lease", [&](pqxx::work& tx) -> Result<ports::LeaseState> {
          Result<Lease> held = holdLease(tx, task_id, lease_token, /*must_be_live=*/true);
          if (!held.ok()) return held.error();
          tx.exec_prepared0("lease_extend", task_id, static_cast<long long>(lease.count()));
          return ports::LeaseState{held->build.cancel_requested};
        });
  }

  Result<Build> finish(const std::string& task_id, const std::string& lease_token,
                       const ports::Outcome& outcome) override {
    if (!domain::isTerminal(outcome.status)) {
      return makeError(ErrorCode::kInvalidArgument,
                       "an attempt must finish completed, failed or cancelled, not " +
                           str(domain::statusName(outcome.status)));
    }
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
    const std::string result_json = codec::toJson(result).dump();
    const std::optional<std::string> composition =
        outcome.composition.empty()
            ? std::nullopt
            : std::optional<std::string>(codec::toJson(outcome.composition).dump());
    const std::string status = str(domain::statusName(outcome.status));
    const std::string kind_name = str(domain::errorKindName(kind));
    if (auto err = validateNewDeliveries(outcome.deliveries)) return *err;

    auto after = transact<Build>("finishing a build", [&](pqxx::work& tx) -> Result<Build> {
      // An expired but not yet reaped lease still finishes: nobody else has
      // started on the build, so the work is not wasted.
      Result<Lease> held = holdLease(tx, task_id, lease_token, /*must_be_live=*/false);
      if (!held.ok()) return held.error();
      const pqxx::result r =
          tx.exec_prepared("build_end", task_id, status, result_json, nullIfEmpty(kind_name),
                           nullIfEmpty(error), nullable(composition));
      tx.exec_prepared0("task_done", task_id);
      std::string message = status;
      if (kind != ErrorKind::kNone) message += " (" + kind_name + ")";
      if (!error.empty()) message += ": " + error;
      recordEvent(tx, task_id, BuildStatus::kRunning, outcome.status, held->build.attempts,
                  message);
      // On a taken event id the transaction rolls back: the build stays running.
      if (auto err = insertDeliveries(tx, task_id, outcome.deliveries)) return *err;
      // The branch and a running slot are free again.
      notifyWork(tx, held->build.project_id);
      return readBuild(r[0]);
    });
    if (after.ok()) listener_->wakeLocal();
    return after;
  }

  Result<void> release(const std::string& task_id, const std::string& lease_token,
                       const std::string& reason) override {
    auto done = transact<bool>("releasing a build", [&](pqxx::work& tx) -> Result<bool> {
      Result<Lease> held = holdLease(tx, task_id, lease_token, /*must_be_live=*/false);
      if (!held.ok()) return held.error();
      requeue(tx, task_id);
      recordEvent(tx, task_id, BuildStatus::kRunning, BuildStatus::kPending, held->build.attempts,
                  "released by worker " + held->owner + (reason.empty() ? "" : ": " + reason));
      notifyWork(tx, held->build.project_id);
      return true;
    });
    if (!done.ok()) return done.error();
    listener_->wakeLocal();
    return {};
  }

  Result<int> reapExpiredLeases(const ports::DeliveryPlan& plan) override {
    auto reaped = transact<int>("reaping expired leases", [&](pqxx::work& tx) -> Result<int> {
      int count = 0;
      for (const pqxx::row& r : tx.exec_prepared("reap_expired")) {
        const std::string task_id = r[0].as<std::string>();
        const std::string owner = text(r[1]);
        const int attempts = r[2].as<int>();
        const int max_attempts = r[3].as<int>();
        const std::string attempt =
            "attempt " + std::to_string(attempts) + " of " + std::to_string(max_attempts);
        if (attempts >= max_attempts) {
          const std::string error = "worker " + owner + " was lost: its lease expired during " +
                                    attempt + " and no attempts are left";
          std::vector<ports::NewDelivery> deliveries;
          if (plan) {
            ports::Outcome outcome;
            outcome.status = BuildStatus::kFailed;
            outcome.error_kind = ErrorKind::kInfrastructure;
            outcome.error = error;
            outcome.result.error = error;
            deliveries = plan(readBuild(tx.exec_prepared1("build_get", task_id)), outcome);
            // Dropped rather than keep a lost build running (store.h).
            if (validateNewDeliveries(deliveries)) deliveries.clear();
          }
          for (const ports::NewDelivery& d : deliveries) {
            tx.exec_prepared("delivery_insert", task_id, d.notifier, d.target, d.event_id,
                             d.payload);
          }
          tx.exec_prepared("build_end", task_id, "failed", nullptr, "infrastructure", error,
                           nullptr);
          tx.exec_prepared0("task_done", task_id);
          recordEvent(tx, task_id, BuildStatus::kRunning, BuildStatus::kFailed, attempts,
                      "failed (infrastructure): " + error);
        } else {
          requeue(tx, task_id);
          recordEvent(tx, task_id, BuildStatus::kRunning, BuildStatus::kPending, attempts,
                      "worker " + owner + " was lost (its lease expired during " + attempt +
                          "); queued for attempt " + std::to_string(attempts + 1));
        }
        ++count;
      }
      if (count > 0) notifyWork(tx, "");
      return count;
    });
    if (reaped.ok() && *reaped > 0) listener_->wakeLocal();
    return reaped;
  }

  void waitForWork(std::chrono::milliseconds max_wait) override { listener_->wait(max_wait); }

  Result<ports::IdempotencyRecord> beginIdempotent(const std::string& key,
                                                   const std::string& fingerprint) override {
    using State = ports::IdempotencyRecord::State;
    using Record = ports::IdempotencyRecord;
    // Expired records go once a minute or so per process.
    const TimeMs now = domain::nowMs();
    TimeMs last = last_idempotency_sweep_ms_.load();
    const bool sweep =
        now - last >= 60 * 1000 && last_idempotency_sweep_ms_.compare_exchange_strong(last, now);
    return transact<Record>(
        "beginning an idempotent request", [&](pqxx::work& tx) -> Result<Record> {
          if (sweep) tx.exec_prepared0("idem_sweep");
          // A record deleted by abandonIdempotent between the two statements
          // below is simply taken again.
          for (int i = 0; i < 3; ++i) {
            if (!tx.exec_prepared("idem_take", key, fingerprint).empty()) {
              Record r;
              r.state = State::kNew;
              r.fingerprint = fingerprint;
              return r;
            }
            const pqxx::result got = tx.exec_prepared("idem_get", key);
            if (got.empty()) continue;
            Record r;
            r.fingerprint = text(got[0][0]);
            r.state = text(got[0][1]) == "done" ? State::kDone : State::kInProgress;
            r.status = got[0][2].is_null() ? 0 : got[0][2].as<int>();
            r.body = text(got[0][3]);
            r.content_type = text(got[0][4]);
            r.location = text(got[0][5]);
            return r;
          }
          return makeError(ErrorCode::kUnavailable,
                           "idempotency key " + quoted(key) + " is changing; retry", true);
        });
  }

  Result<void> completeIdempotent(const std::string& key,
                                  const ports::IdempotencyRecord& answer) override {
    auto done = transact<bool>("storing an idempotent answer", [&](pqxx::work& tx) -> Result<bool> {
      const pqxx::result r =
          tx.exec_prepared("idem_complete", key, answer.status, answer.body,
                           nullIfEmpty(answer.content_type), nullIfEmpty(answer.location));
      if (r.affected_rows() == 0) {
        if (!tx.exec_prepared("idem_get", key).empty()) {
          return makeError(ErrorCode::kConflict,
                           "idempotency key " + quoted(key) + " already has its answer");
        }
        return makeError(ErrorCode::kNotFound,
                         "idempotency key " + quoted(key) +
                             " is not in progress (never begun, abandoned or expired)");
      }
      return true;
    });
    if (!done.ok()) return done.error();
    return {};
  }

  Result<void> abandonIdempotent(const std::string& key) override {
    auto done =
        transact<bool>("abandoning an idempotent request", [&](pqxx::work& tx) -> Result<bool> {
          tx.exec_prepared0("idem_abandon", key);
          return true;
        });
    if (!done.ok()) return done.error();
    return {};
  }

  Result<std::vector<Delivery>> claimDueDeliveries(const std::string& owner, int limit,
                                                   std::chrono::milliseconds lease) override {
    if (auto err = validateClaimLimit(limit)) return *err;
    if (lease.count() <= 0) {
      return makeError(ErrorCode::kInvalidArgument, "a lease must be longer than 0 ms");
    }
    return transact<std::vector<Delivery>>(
        "claiming due deliveries", [&](pqxx::work& tx) -> Result<std::vector<Delivery>> {
          std::vector<Delivery> out;
          for (const pqxx::row& r : tx.exec_prepared("delivery_claim", owner, limit,
                                                     static_cast<long long>(lease.count()))) {
            out.push_back(readDelivery(r));
          }
          // UPDATE ... RETURNING has no order of its own.
          std::sort(out.begin(), out.end(), [](const Delivery& a, const Delivery& b) {
            return std::pair(a.next_attempt_at, a.id) < std::pair(b.next_attempt_at, b.id);
          });
          return out;
        });
  }

  Result<Delivery> recordDeliveryAttempt(int64_t delivery_id, const std::string& owner,
                                         const DeliveryAttempt& attempt,
                                         std::optional<TimeMs> next_attempt_at) override {
    const std::string id_text = std::to_string(delivery_id);
    const std::optional<std::string> next =
        next_attempt_at ? std::optional<std::string>(std::to_string(*next_attempt_at))
                        : std::nullopt;
    return transact<Delivery>(
        "recording a delivery attempt", [&](pqxx::work& tx) -> Result<Delivery> {
          const pqxx::result locked = tx.exec_prepared("delivery_lock", delivery_id);
          if (locked.empty()) {
            return makeError(ErrorCode::kNotFound, "delivery " + id_text + " not found");
          }
          const Delivery d = readDelivery(locked[0]);
          if (d.state != DeliveryState::kPending) {
            return makeError(ErrorCode::kConflict, "delivery " + id_text + " is already " +
                                                       str(domain::deliveryStateName(d.state)));
          }
          if (optText(locked[0][12]) != std::optional<std::string>(owner)) {
            return makeError(ErrorCode::kConflict,
                             "delivery " + id_text + " is not leased by " + quoted(owner) +
                                 " (its lease expired and it was claimed again)");
          }
          const int number = d.attempts + 1;
          tx.exec_prepared0("delivery_attempt_insert", delivery_id, number,
                            static_cast<long long>(attempt.at), attempt.ok, attempt.detail,
                            static_cast<long long>(attempt.duration_ms));
          const pqxx::result after =
              attempt.ok ? tx.exec_prepared("delivery_delivered", delivery_id, number)
                         : tx.exec_prepared("delivery_not_delivered", delivery_id,
                                            next ? "pending" : "failed", number, nullable(next),
                                            attempt.detail);
          return readDelivery(after[0]);
        });
  }

  Result<std::vector<Delivery>> listDeliveries(const std::string& task_id) override {
    return transact<std::vector<Delivery>>(
        "listing deliveries", [&](pqxx::work& tx) -> Result<std::vector<Delivery>> {
          if (tx.exec_prepared("build_exists", task_id).empty()) return notFoundBuild(task_id);
          std::vector<Delivery> out;
          for (const pqxx::row& r : tx.exec_prepared("deliveries_list", task_id)) {
            out.push_back(readDelivery(r));
          }
          for (const pqxx::row& r : tx.exec_prepared("delivery_attempts_list", task_id)) {
            const int64_t id = r[0].as<int64_t>();
            for (Delivery& d : out) {
              if (d.id != id) continue;
              d.attempt_log.push_back(DeliveryAttempt{r[1].as<int>(), r[2].as<int64_t>(),
                                                      r[3].as<bool>(), r[4].as<std::string>(),
                                                      r[5].as<int64_t>()});
            }
          }
          return out;
        });
  }

 private:
  template <class T>
  Result<T> transact(std::string_view what, const std::function<Result<T>(pqxx::work&)>& body) {
    return pool_->transact<T>(what, [&](pqxx::work& tx) -> Result<T> {
      try {
        return body(tx);
      } catch (const json::exception& e) {
        return makeError(ErrorCode::kInternal,
                         std::string(what) + ": a stored JSON document is unreadable: " + e.what());
      }
    });
  }

  static const char* createdAt(const Project& p, std::string* buf) {
    if (p.created_at == 0) return nullptr;
    *buf = std::to_string(p.created_at);
    return buf->c_str();
  }

  static pqxx::result insertProject(pqxx::work& tx, const Project& p) {
    std::string buf;
    return tx.exec_prepared("project_insert", p.id, p.repo_url, p.default_branch, p.source,
                            p.max_running_builds, p.max_pending_builds, p.max_timeout_s,
                            createdAt(p, &buf));
  }

  // Inside a transaction: the build (its audit entry follows by trigger),
  // its creation event and its queued task. Nothing is kept when it
  // returns an error (the transaction rolls back).
  static Result<Build> insertBuild(pqxx::work& tx, const Project& project, const Build& build) {
    if (build.max_attempts < 1) {
      return makeError(ErrorCode::kInvalidArgument, "max_attempts must be at least 1, got " +
                                                        std::to_string(build.max_attempts));
    }
    const TimeMs now = domain::nowMs();
    Build b = build;
    b.project_id = project.id;
    if (b.task_id.empty()) b.task_id = domain::newTaskId(now);
    if (b.branch.empty()) b.branch = build.spec.branch.value_or(project.default_branch);
    if (b.created_at == 0) b.created_at = now;
    if (b.retry_of && tx.exec_prepared("build_exists", *b.retry_of).empty()) {
      return makeError(ErrorCode::kNotFound,
                       "build " + *b.retry_of + " (the build to retry) not found");
    }
    const int64_t pending = tx.exec_prepared1("pending_count", project.id)[0].as<int64_t>();
    if (pending >= project.max_pending_builds) {
      return makeError(ErrorCode::kResourceExhausted,
                       "project " + quoted(project.id) + " already has " + std::to_string(pending) +
                           " pending builds (max_pending_builds); retry later",
                       true);
    }
    const pqxx::result r = tx.exec_prepared(
        "build_insert", b.task_id, b.project_id, b.branch, codec::toJson(b.spec).dump(),
        b.max_attempts, static_cast<long long>(b.created_at), codec::toJson(b.composition).dump(),
        nullable(b.retry_of));
    if (r.empty()) {
      return makeError(ErrorCode::kConflict, "build " + b.task_id + " already exists");
    }
    tx.exec_prepared0("task_insert", b.task_id, b.project_id, b.branch);
    recordEvent(tx, b.task_id, std::nullopt, BuildStatus::kPending, 0,
                b.retry_of ? "enqueued as a retry of build " + *b.retry_of : "enqueued");
    notifyWork(tx, b.project_id);
    return readBuild(r[0]);
  }

  // Queues deliveries (pending, due now); kConflict when an event id is
  // taken (the caller's transaction must then roll back).
  static std::optional<Error> insertDeliveries(pqxx::work& tx, const std::string& task_id,
                                               const std::vector<ports::NewDelivery>& deliveries) {
    for (const ports::NewDelivery& d : deliveries) {
      if (tx.exec_prepared("delivery_insert", task_id, d.notifier, d.target, d.event_id, d.payload)
              .empty()) {
        return makeError(ErrorCode::kConflict,
                         "a delivery with event id " + d.event_id + " already exists");
      }
    }
    return std::nullopt;
  }

  // running -> pending: the task goes back to the queue.
  static void requeue(pqxx::work& tx, const std::string& task_id) {
    tx.exec_prepared0("build_requeue", task_id);
    tx.exec_prepared0("task_requeue", task_id);
  }

  std::unique_ptr<Pool> pool_;
  std::unique_ptr<Listener> listener_;
  std::atomic<TimeMs> last_idempotency_sweep_ms_{0};
};

// Applies the embedded migrations the database lacks, each in its own
// transaction under an advisory lock, so that processes starting together
// apply each exactly once.
Result<MigrationReport> applyMigrations(pqxx::connection& conn, const std::string& url) {
  const std::vector<Migration> migrations = embeddedMigrations("postgres");
  const int known = migrations.empty() ? 0 : migrations.back().version;
  auto newerSchema = [&](int version) {
    return makeError(ErrorCode::kUnsupported, "the PostgreSQL database has schema version " +
                                                  std::to_string(version) +
                                                  " but this kiln knows versions up to " +
                                                  std::to_string(known) + "; use a newer kiln");
  };
  auto versionOf = [](pqxx::work& tx) {
    return tx.exec1("SELECT coalesce(max(version), 0) FROM schema_migrations")[0].as<int>();
  };
  MigrationReport report;
  std::string step = "reading the schema version";
  try {
    for (const Migration& m : migrations) {
      pqxx::work tx(conn);
      tx.exec(kMigrationLockSql);
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          "  version integer PRIMARY KEY,"
          "  name text NOT NULL,"
          "  applied_at timestamptz NOT NULL DEFAULT now())");
      const int version = versionOf(tx);
      if (version > known) return newerSchema(version);
      if (m.version <= version) continue;
      step = "applying migration " + std::to_string(m.version) + "_" + m.name;
      tx.exec(m.sql);
      tx.exec_params0("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version,
                      m.name);
      tx.commit();
      ++report.applied;
    }
    step = "reading the schema version";
    pqxx::work tx(conn);
    tx.exec(kMigrationLockSql);
    tx.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "  version integer PRIMARY KEY,"
        "  name text NOT NULL,"
        "  applied_at timestamptz NOT NULL DEFAULT now())");
    report.version = versionOf(tx);
    tx.commit();
  } catch (...) {
    Error err = classifyCurrentException(step, false, url).error;
    return err;
  }
  if (report.version > known) return newerSchema(report.version);
  return report;
}

Result<std::unique_ptr<pqxx::connection>> connectAndMigrate(const PostgresOptions& options,
                                                            MigrationReport* report) {
  auto conn = connect(options.url, {});
  if (!conn.ok()) return conn.error();
  Result<MigrationReport> applied = applyMigrations(**conn, options.url);
  if (!applied.ok()) return applied.error();
  if (report) *report = *applied;
  return conn;
}

}  // namespace
}  // namespace postgres

Result<std::unique_ptr<ports::Store>> openPostgresStore(const PostgresOptions& options) {
  if (options.pool_size < 1) {
    return makeError(
        ErrorCode::kInvalidArgument,
        "the PostgreSQL pool size must be at least 1, got " + std::to_string(options.pool_size));
  }
  auto migrated = postgres::connectAndMigrate(options, nullptr);
  if (!migrated.ok()) return migrated.error();
  auto pool =
      std::make_unique<postgres::Pool>(options.url, postgres::statements(), options.pool_size);
  if (auto connected = pool->connectAll(); !connected.ok()) return connected.error();
  auto listener = postgres::Listener::start(options.url);
  if (!listener.ok()) return listener.error();
  return std::unique_ptr<ports::Store>(
      std::make_unique<postgres::PostgresStore>(std::move(pool), std::move(listener).value()));
}

Result<MigrationReport> migratePostgres(const PostgresOptions& options) {
  MigrationReport report;
  auto migrated = postgres::connectAndMigrate(options, &report);
  if (!migrated.ok()) return migrated.error();
  return report;
}

}  // namespace kiln::store
