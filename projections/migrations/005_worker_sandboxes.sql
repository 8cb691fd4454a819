-- What each worker's execute stage can confine: the sandbox protections in force and the
-- toolchains found, written by the worker when it starts and refreshed while it runs, so
-- that /ready can say which limits are in force. Keyed by host and pid.
CREATE TABLE worker_sandboxes (
    worker text PRIMARY KEY,
    protections jsonb NOT NULL,
    missing jsonb NOT NULL,
    toolchains jsonb NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);
