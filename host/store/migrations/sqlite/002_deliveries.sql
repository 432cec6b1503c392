-- The notification outbox: one delivery per notifier instance and finished
-- build, written in the transaction that made the build terminal, then
-- claimed, attempted and recorded by the dispatcher.

CREATE TABLE deliveries (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id          TEXT NOT NULL REFERENCES builds (task_id),
  notifier         TEXT NOT NULL,              -- plugin instance name
  target           TEXT NOT NULL DEFAULT '',   -- e.g. the build's callback_url
  event_id         TEXT NOT NULL UNIQUE,       -- the same on every attempt (webhook-id)
  payload_json     TEXT NOT NULL,              -- the event document, byte for byte
  state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER,                    -- when pending: due then; NULL once final
  lease_owner      TEXT,                       -- a dispatcher attempting it now
  lease_expires_at INTEGER,
  created_at       INTEGER NOT NULL,
  delivered_at     INTEGER,
  last_error       TEXT,
  updated_at       INTEGER NOT NULL,
  CHECK (state = 'pending' OR next_attempt_at IS NULL)
) STRICT;
-- The dispatcher's scan for due deliveries.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_task ON deliveries (task_id, id);

-- Every attempt of a delivery, in order.
CREATE TABLE delivery_attempts (
  delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
  attempt     INTEGER NOT NULL CHECK (attempt >= 1),
  at          INTEGER NOT NULL,
  ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
  detail      TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  PRIMARY KEY (delivery_id, attempt)
) STRICT;
