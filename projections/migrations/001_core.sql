-- The core projections: jobs, their stage attempts, the event feed, metrics, artifacts,
-- and the offsets the projector has consumed (written in the same transaction as the rows).

-- Job statuses only move forward: QUEUED < ACCEPTED < RUNNING < terminal. Events reach the
-- projector from several topics, so a late JobRequested must not undo a JobFinished.
CREATE FUNCTION job_status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN status = 'QUEUED' THEN 0
    WHEN status = 'ACCEPTED' THEN 1
    WHEN status = 'RUNNING' THEN 2
    WHEN status IN ('SUCCEEDED', 'FAILED', 'REJECTED', 'CANCELLED') THEN 3
END;

-- A stage attempt is STARTED until its first terminal event, which then sticks.
CREATE FUNCTION stage_status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN status = 'STARTED' THEN 0
    WHEN status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN 1
END;

CREATE TABLE jobs (
    job_id uuid PRIMARY KEY,
    tenant text NOT NULL,
    kind text,
    target text,
    status text NOT NULL CHECK (
        status IN ('QUEUED', 'ACCEPTED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'REJECTED', 'CANCELLED')
    ),
    current_stage text,
    stages text[] NOT NULL DEFAULT '{}',
    progress real NOT NULL DEFAULT 0,
    error jsonb,
    labels jsonb NOT NULL DEFAULT '{}',
    idempotency_key text,
    spec jsonb,
    requested_at timestamptz,
    accepted_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX jobs_tenant_idempotency_key
    ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_requested_at ON jobs (tenant, requested_at DESC);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE job_stages (
    job_id uuid NOT NULL,
    stage text NOT NULL,
    attempt int NOT NULL,
    status text NOT NULL CHECK (status IN ('STARTED', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    -- The last percent the attempt reported; NULL until it reports one.
    progress real,
    started_at timestamptz,
    finished_at timestamptz,
    duration_ms bigint,
    summary jsonb,
    error jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, stage, attempt)
);

-- The feed behind every SSE stream: `seq` is the SSE id, assigned by the single projector in
-- commit order, so "everything after seq N" is a stable question.
CREATE TABLE job_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    job_id uuid,
    type text NOT NULL,
    stage text,
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL
);

CREATE INDEX job_events_job_id_seq ON job_events (job_id, seq);

CREATE TABLE metrics (
    event_id uuid PRIMARY KEY,
    job_id uuid NOT NULL,
    stage text NOT NULL,
    attempt int NOT NULL,
    name text NOT NULL,
    step bigint NOT NULL,
    value double precision NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX metrics_job_name_step ON metrics (job_id, name, step);

-- `content` holds small artifacts sent inline; larger ones live at `uri`.
CREATE TABLE artifacts (
    event_id uuid PRIMARY KEY,
    job_id uuid NOT NULL,
    stage text NOT NULL,
    attempt int NOT NULL,
    name text NOT NULL,
    media_type text NOT NULL,
    uri text,
    size_bytes bigint NOT NULL,
    sha256 text NOT NULL,
    content bytea,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX artifacts_job_id ON artifacts (job_id);

CREATE TABLE projection_offsets (
    projector text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition)
);
