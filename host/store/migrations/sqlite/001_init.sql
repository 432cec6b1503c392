-- Kiln's embedded store: the same tables as the PostgreSQL schema, in SQLite.
-- Times are integer milliseconds since the Unix epoch (UTC). JSON documents
-- (spec, result, composition) are TEXT written by kiln::codec.

CREATE TABLE projects (
  id                 TEXT PRIMARY KEY,
  repo_url           TEXT NOT NULL,
  default_branch     TEXT NOT NULL,
  source             TEXT NOT NULL CHECK (source IN ('api', 'config')),
  max_running_builds INTEGER NOT NULL CHECK (max_running_builds >= 1),
  max_pending_builds INTEGER NOT NULL CHECK (max_pending_builds >= 0),
  max_timeout_s      INTEGER NOT NULL CHECK (max_timeout_s >= 1),
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL
) STRICT;

CREATE TABLE builds (
  task_id          TEXT PRIMARY KEY,  -- UUIDv7: sorts by creation time
  project_id       TEXT NOT NULL REFERENCES projects (id),
  branch           TEXT NOT NULL,
  status           TEXT NOT NULL
                   CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  spec_json        TEXT NOT NULL,
  result_json      TEXT,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
  error_kind       TEXT CHECK (error_kind IN ('workload', 'infrastructure', 'timeout',
                                              'invalid_input', 'cancelled')),
  error            TEXT,
  created_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  worker_id        TEXT,
  composition_json TEXT NOT NULL DEFAULT '[]',
  retry_of         TEXT REFERENCES builds (task_id),
  cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
  updated_at       INTEGER NOT NULL
) STRICT;

-- Listing a project's builds newest first, optionally by status; counting its
-- pending and running builds (the caps).
CREATE INDEX builds_project_status ON builds (project_id, status, task_id);
CREATE INDEX builds_project ON builds (project_id, task_id);
-- The claim's same-branch rule: is a build of this branch running, or an
-- older one pending?
CREATE INDEX builds_project_branch_status ON builds (project_id, branch, status, task_id);

-- The seed's audit trail: one entry per build, updated through its statuses.
CREATE TABLE build_audit (
  task_id     TEXT PRIMARY KEY REFERENCES builds (task_id),
  project_id  TEXT NOT NULL,
  branch      TEXT NOT NULL,
  status      TEXT NOT NULL,
  spec_json   TEXT NOT NULL,
  result_json TEXT,
  worker_id   TEXT,
  attempts    INTEGER NOT NULL,
  error_kind  TEXT,
  error       TEXT,
  created_at  INTEGER NOT NULL,
  started_at  INTEGER,
  finished_at INTEGER,
  updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX build_audit_project ON build_audit (project_id, created_at);

-- Every transition of a build (and noteworthy moments such as a cancellation
-- request), in order.
CREATE TABLE build_events (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id     TEXT NOT NULL REFERENCES builds (task_id),
  at          INTEGER NOT NULL,
  from_status TEXT,  -- NULL for the creation event
  to_status   TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  message     TEXT NOT NULL
) STRICT;
CREATE INDEX build_events_task ON build_events (task_id, seq);

-- The work queue: one task per build. queued = waiting for a worker (the
-- build is pending), leased = a worker holds it (running), done = no longer
-- in the queue (terminal).
CREATE TABLE work_tasks (
  task_id          TEXT PRIMARY KEY REFERENCES builds (task_id),
  state            TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
  lease_owner      TEXT,
  lease_token      TEXT,
  lease_expires_at INTEGER,
  available_at     INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
) STRICT;
-- Runnable candidates in claim order, and the reaper's scan.
CREATE INDEX work_tasks_queued ON work_tasks (task_id) WHERE state = 'queued';
CREATE INDEX work_tasks_leased ON work_tasks (lease_expires_at) WHERE state = 'leased';

-- Idempotency-Key records of POST requests.
CREATE TABLE idempotency_keys (
  key          TEXT PRIMARY KEY,
  fingerprint  TEXT NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
  status       INTEGER,
  body         TEXT,
  content_type TEXT,
  location     TEXT,
  created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
