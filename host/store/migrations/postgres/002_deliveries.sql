-- The notification outbox: one delivery per notifier instance and finished
-- build, written in the transaction that made the build terminal, then
-- claimed (FOR UPDATE SKIP LOCKED), attempted and recorded by the
-- dispatchers of every kiln process.
--
-- Rationale: the payload is text, not jsonb, so that every attempt sends the
-- event exactly as it was planned (jsonb would reorder its keys); the CHECK
-- still rejects anything that is not JSON.

CREATE TABLE deliveries (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id          text COLLATE "C" NOT NULL REFERENCES builds (task_id),
  notifier         text NOT NULL,              -- plugin instance name
  target           text NOT NULL DEFAULT '',   -- e.g. the build's callback_url
  event_id         text NOT NULL UNIQUE,       -- the same on every attempt (webhook-id)
  payload          text NOT NULL CHECK (jsonb_typeof(payload::jsonb) = 'object'),
  state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz,                -- when pending: due then; NULL once final
  lease_owner      text,                       -- a dispatcher attempting it now
  lease_expires_at timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  delivered_at     timestamptz,
  last_error       text,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (state = 'pending' OR next_attempt_at IS NULL)
);
-- The dispatchers' scan for due deliveries.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_task ON deliveries (task_id, id);

-- Every attempt of a delivery, in order.
CREATE TABLE delivery_attempts (
  delivery_id bigint NOT NULL REFERENCES deliveries (id),
  attempt     integer NOT NULL CHECK (attempt >= 1),
  at          timestamptz NOT NULL,
  ok          boolean NOT NULL,
  detail      text NOT NULL,
  duration_ms bigint NOT NULL,
  PRIMARY KEY (delivery_id, attempt)
);
