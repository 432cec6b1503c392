// The Store port: durable projects, builds, their audit trail and events,
// the work queue with leases, and idempotency records. Implemented by the
// SQLite (embedded default) and PostgreSQL (production) adapters; both pass
// one contract suite (tests/store/store_contract_test.cc).
//
// It is also the outbox of build notifications: finish() queues them with the
// terminal transition, and a dispatcher claims, attempts and records them.
//
// Conventions for every method:
//  - Thread-safe: one Store is shared by the HTTP threads and all workers.
//  - Errors: kNotFound (no such project/build), kConflict (the state does not
//    allow it, or a stale lease), kResourceExhausted (a limit), kUnavailable
//    (the database is down or busy; retryable), kInternal (a bug).
//  - Every status change is atomic with its event row and its build_audit
//    update: one transaction each.
//  - Times are computed with the database clock where leases are involved
//    (PostgreSQL now(); SQLite the process clock) so that workers on several
//    machines agree on expiry.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kiln/domain/build.h"
#include "kiln/domain/delivery.h"
#include "kiln/domain/result.h"

namespace kiln::ports {

struct BuildQuery {
  std::string project_id;
  std::optional<domain::BuildStatus> status;  // filter; nullopt = all
  int limit = 20;                             // 1..100, enforced by the caller
  std::optional<std::string> before;          // cursor: only builds with task_id < before
};

struct BuildPage {
  std::vector<domain::Build> builds;       // newest first (task_id descending)
  std::optional<std::string> next_cursor;  // task_id of the last build when more exist
};

// A task a worker took. The lease_token must accompany every later write.
struct Claim {
  domain::Build build;  // status running, attempts already incremented
  std::string lease_token;
};

struct LeaseState {
  bool cancel_requested = false;
};

// A notification to queue in the outbox (a pending delivery, due at once).
struct NewDelivery {
  std::string notifier;  // plugin instance name; not empty
  std::string target;    // e.g. the build's callback_url; may be empty
  std::string event_id;  // unique among all deliveries; sent on every attempt
  std::string payload;   // the event document: a JSON object, kept byte for byte
};

// What a finished attempt reports.
struct Outcome {
  domain::BuildStatus status = domain::BuildStatus::kCompleted;  // completed|failed|cancelled
  domain::BuildResult result;
  domain::ErrorKind error_kind = domain::ErrorKind::kNone;
  std::string error;  // human-readable; also result.error when empty there
  // The attempt failed for a reason that may pass (an unreachable
  // repository): the worker gives the build back for another attempt while
  // attempts remain, instead of finishing it. Not stored.
  bool retryable = false;
  std::vector<domain::CompositionEntry> composition;
  // The build's notifications, queued in the same transaction as the
  // terminal transition: a build is never terminal without them.
  std::vector<NewDelivery> deliveries;
};

// Plans the notifications of a build the store itself makes terminal (a
// pending build cancelled, a build the reaper fails): called inside that
// transaction with the build (as it was) and the outcome it ends with; what
// it returns is queued like Outcome::deliveries. It must be quick and must
// not call the store. Empty: none.
using DeliveryPlan =
    std::function<std::vector<NewDelivery>(const domain::Build& build, const Outcome& outcome)>;

// The stored answer to an idempotent POST.
struct IdempotencyRecord {
  enum class State { kNew, kInProgress, kDone };
  State state = State::kNew;
  std::string fingerprint;  // of the first request (method, path, body)
  int status = 0;           // when kDone
  std::string body;         // when kDone
  std::string content_type;
  std::string location;  // optional Location header of the stored answer
};

class Store {
 public:
  virtual ~Store() = default;

  // ---- Projects ----
  // kConflict when the id exists.
  virtual Result<domain::Project> createProject(const domain::Project& project) = 0;
  // Inserts or updates (repo_url, default_branch, limits, source); used at
  // start for projects defined in the configuration.
  virtual Result<void> upsertProject(const domain::Project& project) = 0;
  virtual Result<domain::Project> getProject(const std::string& id) = 0;
  virtual Result<std::vector<domain::Project>> listProjects() = 0;  // by id

  // ---- Builds ----
  // Writes, in one transaction: the build (status pending, attempts 0), its
  // build_audit entry, its creation event and its queued work task; then
  // wakes waiting workers. kNotFound if the project does not exist;
  // kResourceExhausted if the project already has project.max_pending_builds
  // pending builds (nothing is written).
  virtual Result<domain::Build> enqueueBuild(const domain::Build& build) = 0;
  // createProject + enqueueBuild in one transaction (both or neither).
  virtual Result<domain::Build> createProjectAndEnqueue(const domain::Project& project,
                                                        const domain::Build& build) = 0;
  virtual Result<domain::Build> getBuild(const std::string& task_id) = 0;
  virtual Result<BuildPage> listBuilds(const BuildQuery& query) = 0;
  // Events of one build in order (seq ascending).
  virtual Result<std::vector<domain::BuildEvent>> listEvents(const std::string& task_id) = 0;
  // pending -> cancelled at once (task removed from the queue, error_kind
  // cancelled, plan's deliveries queued); running -> cancel_requested = true
  // (the worker sees it on its next renew and finishes the build as
  // cancelled). Terminal: kConflict. Returns the build after the change.
  // Planned deliveries that finish() would refuse fail the cancel (nothing
  // changes).
  virtual Result<domain::Build> requestCancel(const std::string& task_id, const std::string& reason,
                                              const DeliveryPlan& plan = {}) = 0;

  // ---- Work queue ----
  // Takes the oldest runnable pending build, if any, and makes it running
  // with a lease of `lease` owned by `worker_id` (attempts + 1, started_at
  // set on the first attempt, event recorded). Runnable means:
  //  - no build of the same project and branch is running, and no older
  //    pending build of the same project and branch exists (same-branch
  //    builds run one at a time, in order);
  //  - the project has fewer than max_running_builds running builds.
  // Two concurrent claims never return the same build, and never together
  // break the two rules above. nullopt when nothing is runnable.
  virtual Result<std::optional<Claim>> claim(const std::string& worker_id,
                                             std::chrono::milliseconds lease) = 0;
  // Extends the lease to now + lease. kConflict when the token is not the
  // current one or the lease already expired (the worker lost the task and
  // must stop working on it).
  virtual Result<LeaseState> renew(const std::string& task_id, const std::string& lease_token,
                                   std::chrono::milliseconds lease) = 0;
  // Ends the attempt: running -> outcome.status, result and error stored,
  // finished_at set, task done, event recorded, outcome.deliveries queued.
  // kConflict on a stale token (nothing changes); kInvalidArgument when a
  // delivery lacks its notifier or event id or its payload is not a JSON
  // object; kConflict when an event id is already taken.
  virtual Result<domain::Build> finish(const std::string& task_id, const std::string& lease_token,
                                       const Outcome& outcome) = 0;
  // running -> pending for another worker (a draining worker gives it
  // back); the attempt counter stays. kConflict on a stale token.
  virtual Result<void> release(const std::string& task_id, const std::string& lease_token,
                               const std::string& reason) = 0;
  // Every running build whose lease expired: back to pending for a new
  // attempt, or, when attempts >= max_attempts, failed with error_kind
  // infrastructure and an error saying the worker was lost (plan's
  // deliveries queued; ones finish() would refuse are dropped, so that a
  // bad plan never keeps a lost build running). Returns how many builds it
  // changed.
  virtual Result<int> reapExpiredLeases(const DeliveryPlan& plan = {}) = 0;
  // Blocks until work may be available (a build was enqueued, released or
  // reaped, possibly by another process) or `max_wait` passed.
  virtual void waitForWork(std::chrono::milliseconds max_wait) = 0;

  // ---- Idempotency (Idempotency-Key on POST) ----
  // Atomically: if `key` is unknown, records it as in progress with
  // `fingerprint` and returns kNew; otherwise returns the stored record
  // (kInProgress or kDone, with the first request's fingerprint).
  virtual Result<IdempotencyRecord> beginIdempotent(const std::string& key,
                                                    const std::string& fingerprint) = 0;
  // Stores the answer of a request begun with beginIdempotent.
  virtual Result<void> completeIdempotent(const std::string& key,
                                          const IdempotencyRecord& answer) = 0;
  // Forgets an in-progress key (the request failed before any effect).
  virtual Result<void> abandonIdempotent(const std::string& key) = 0;

  // ---- Notification outbox ----
  // Deliveries are written by finish() (Outcome::deliveries) and leave the
  // pending state only through recordDeliveryAttempt.
  //
  // Leases up to `limit` (1..100) pending deliveries that are due
  // (next_attempt_at <= now) and not leased by anyone (or whose lease
  // expired) to `owner` for `lease`, oldest due first. Concurrent claims
  // never return the same delivery while its lease lasts (PostgreSQL: FOR
  // UPDATE SKIP LOCKED). The deliveries come without attempt_log.
  virtual Result<std::vector<domain::Delivery>> claimDueDeliveries(
      const std::string& owner, int limit, std::chrono::milliseconds lease) = 0;
  // Records one attempt of a delivery `owner` leased, numbered attempts + 1
  // (attempt.attempt is ignored), and ends the lease: attempt.ok ->
  // delivered (delivered_at set, last_error cleared); otherwise last_error =
  // attempt.detail and, with `next_attempt_at`, pending again and due then,
  // or without it given up (failed). Returns the delivery after the change
  // (without attempt_log). kNotFound: no such delivery; kConflict: it is no
  // longer pending or not leased by `owner` (its lease expired and someone
  // else claimed it); nothing changes then.
  virtual Result<domain::Delivery> recordDeliveryAttempt(
      int64_t delivery_id, const std::string& owner, const domain::DeliveryAttempt& attempt,
      std::optional<domain::TimeMs> next_attempt_at) = 0;
  // A build's deliveries (by id) with their attempt logs. kNotFound when
  // the build does not exist.
  virtual Result<std::vector<domain::Delivery>> listDeliveries(const std::string& task_id) = 0;
};

}  // namespace kiln::ports
