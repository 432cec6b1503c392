-- Kiln's production store. Times are timestamptz (the store converts them to
-- milliseconds for the domain); JSON documents (spec, result, composition)
-- are jsonb written by kiln::codec. Ids that are compared with < (task ids,
-- cursors) use the "C" collation so that they sort bytewise, as UUIDv7 text
-- must, whatever the database's locale.

-- Milliseconds since the Unix epoch <-> timestamptz, exact in both directions.
CREATE FUNCTION kiln_ms(t timestamptz) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT floor(extract(epoch FROM t) * 1000)::bigint $$;
CREATE FUNCTION kiln_ts(ms bigint) RETURNS timestamptz
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT timestamptz 'epoch' + ms * interval '1 millisecond' $$;

CREATE TABLE projects (
  id                 text PRIMARY KEY,
  repo_url           text NOT NULL,
  default_branch     text NOT NULL,
  source             text NOT NULL CHECK (source IN ('api', 'config')),
  max_running_builds integer NOT NULL CHECK (max_running_builds >= 1),
  max_pending_builds integer NOT NULL CHECK (max_pending_builds >= 0),
  max_timeout_s      integer NOT NULL CHECK (max_timeout_s >= 1),
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE builds (
  task_id          text COLLATE "C" PRIMARY KEY,  -- UUIDv7: sorts by creation time
  project_id       text NOT NULL REFERENCES projects (id),
  branch           text NOT NULL,
  status           text NOT NULL
                   CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  spec             jsonb NOT NULL,
  result           jsonb,
  attempts         integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
  error_kind       text CHECK (error_kind IN ('workload', 'infrastructure', 'timeout',
                                              'invalid_input', 'cancelled')),
  error            text,
  created_at       timestamptz NOT NULL,
  started_at       timestamptz,
  finished_at      timestamptz,
  worker_id        text,
  composition      jsonb NOT NULL DEFAULT '[]',
  retry_of         text COLLATE "C" REFERENCES builds (task_id),
  cancel_requested boolean NOT NULL DEFAULT false,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Listing a project's builds newest first, optionally by status; counting its
-- pending builds (the max_pending_builds cap).
CREATE INDEX builds_project ON builds (project_id, task_id);
CREATE INDEX builds_project_status ON builds (project_id, status, task_id);

-- The seed's audit trail: one entry per build, updated through its statuses.
-- Kept by a trigger on builds so that no write path can forget it and it is
-- always written in the same transaction as the change it records.
CREATE TABLE build_audit (
  task_id     text COLLATE "C" PRIMARY KEY REFERENCES builds (task_id),
  project_id  text NOT NULL,
  branch      text NOT NULL,
  status      text NOT NULL,
  spec        jsonb NOT NULL,
  result      jsonb,
  worker_id   text,
  attempts    integer NOT NULL,
  error_kind  text,
  error       text,
  created_at  timestamptz NOT NULL,
  started_at  timestamptz,
  finished_at timestamptz,
  updated_at  timestamptz NOT NULL
);
CREATE INDEX build_audit_project ON build_audit (project_id, created_at);

CREATE FUNCTION kiln_build_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO build_audit (task_id, project_id, branch, status, spec, result, worker_id,
                           attempts, error_kind, error, created_at, started_at, finished_at,
                           updated_at)
  VALUES (NEW.task_id, NEW.project_id, NEW.branch, NEW.status, NEW.spec, NEW.result,
          NEW.worker_id, NEW.attempts, NEW.error_kind, NEW.error, NEW.created_at,
          NEW.started_at, NEW.finished_at, now())
  ON CONFLICT (task_id) DO UPDATE SET
    status = EXCLUDED.status, result = EXCLUDED.result, worker_id = EXCLUDED.worker_id,
    attempts = EXCLUDED.attempts, error_kind = EXCLUDED.error_kind, error = EXCLUDED.error,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    updated_at = EXCLUDED.updated_at;
  RETURN NULL;
END
$$;
CREATE TRIGGER builds_audit AFTER INSERT OR UPDATE ON builds
  FOR EACH ROW EXECUTE FUNCTION kiln_build_audit();

-- Every transition of a build (and noteworthy moments such as a cancellation
-- request), in order. Writers hold the build's row lock, so seq increases
-- per build.
CREATE TABLE build_events (
  seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id     text COLLATE "C" NOT NULL REFERENCES builds (task_id),
  at          timestamptz NOT NULL DEFAULT now(),
  from_status text,  -- NULL for the creation event
  to_status   text NOT NULL,
  attempt     integer NOT NULL,
  message     text NOT NULL
);
CREATE INDEX build_events_task ON build_events (task_id, seq);

-- The work queue: one task per build. queued = waiting for a worker (the
-- build is pending), leased = a worker holds it (running), done = no longer
-- in the queue (terminal). project_id and branch are copied from the build so
-- that the claim's rules read this table only.
CREATE TABLE work_tasks (
  task_id          text COLLATE "C" PRIMARY KEY REFERENCES builds (task_id),
  project_id       text NOT NULL,
  branch           text NOT NULL,
  state            text NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
  lease_owner      text,
  lease_token      text,
  lease_expires_at timestamptz,
  available_at     timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (state <> 'leased' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- Runnable candidates in claim order (oldest first): the claim scans this
-- partial index with FOR UPDATE SKIP LOCKED.
CREATE INDEX work_tasks_runnable ON work_tasks (task_id) WHERE state = 'queued';
-- The same-branch rule (an older queued task of the branch?) and the
-- running-builds limit (leased tasks per project and per branch).
CREATE INDEX work_tasks_queued_branch ON work_tasks (project_id, branch, task_id)
  WHERE state = 'queued';
CREATE INDEX work_tasks_leased_branch ON work_tasks (project_id, branch)
  WHERE state = 'leased';
-- The reaper's scan.
CREATE INDEX work_tasks_leased_expiry ON work_tasks (lease_expires_at) WHERE state = 'leased';

-- Idempotency-Key records of POST requests.
CREATE TABLE idempotency_keys (
  key          text PRIMARY KEY,
  fingerprint  text NOT NULL,
  state        text NOT NULL CHECK (state IN ('in_progress', 'done')),
  status       integer,
  body         text,
  content_type text,
  location     text,
  -- When the request began: in progress for over 60 s means its request
  -- died (the key is taken over); done records are replayed for 24 h.
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
