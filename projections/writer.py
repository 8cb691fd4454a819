"""Writes one batch in one transaction: feed rows, folded projections, offsets, NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.batch import STAGED_COLUMNS, Batch

NOTIFY_CHANNEL = "stagecast_events"

# One row per staged event. Emptied at every commit, so a batch never sees another's rows.
STAGING_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS projector_batch (
    ord int NOT NULL,
    event_id uuid NOT NULL,
    job_id uuid,
    type text NOT NULL,
    tenant text NOT NULL,
    stage text,
    attempt int,
    status text,
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    summary jsonb,
    error jsonb,
    duration_ms bigint,
    percent real,
    value double precision,
    name text,
    step bigint,
    labels jsonb,
    media_type text,
    uri text,
    size_bytes bigint,
    sha256 text,
    content bytea,
    kind text,
    target text,
    stages text[],
    idempotency_key text,
    spec jsonb,
    seq bigint,
    fresh boolean NOT NULL DEFAULT false
) ON COMMIT DELETE ROWS
"""

# Runs as one simple-query script after the COPY; each statement sees the ones before it.
# Only `fresh` rows (not seen in an earlier batch) are folded, so redelivery changes nothing.
FOLD = """
WITH inserted AS (
    INSERT INTO job_events (event_id, job_id, type, stage, payload, occurred_at,
                            topic, partition, "offset")
    SELECT event_id, job_id, type, stage, payload, occurred_at, topic, partition, "offset"
    FROM projector_batch
    WHERE type <> 'JobRequested'
    ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, seq
)
UPDATE projector_batch b SET seq = i.seq, fresh = true
FROM inserted i WHERE b.event_id = i.event_id;

-- JobRequested is not in the feed: it is new when its job has not been requested yet.
UPDATE projector_batch b SET fresh = true
WHERE b.type = 'JobRequested' AND b.job_id IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM jobs j WHERE j.job_id = b.job_id AND j.requested_at IS NOT NULL
  );

WITH facts AS (
    SELECT b AS event, b.job_id, b.ord, b.type, b.tenant, b.stage, b.status, b.error,
        b.occurred_at, b.idempotency_key, b.labels, b.spec,
        CASE b.type
            WHEN 'JobRequested' THEN 'QUEUED'
            WHEN 'JobAccepted' THEN 'ACCEPTED'
            WHEN 'JobRejected' THEN 'REJECTED'
            WHEN 'StageChanged' THEN 'RUNNING'
            ELSE b.status
        END AS job_status
    FROM projector_batch b
    WHERE b.fresh AND b.job_id IS NOT NULL
      AND b.type IN ('JobRequested', 'JobAccepted', 'JobRejected', 'StageChanged', 'JobFinished')
),
delta AS (
    SELECT job_id,
        min(ord) AS first_ord,
        (array_agg(tenant ORDER BY ord))[1] AS tenant,
        (array_agg(job_status ORDER BY job_status_rank(job_status) DESC NULLS LAST, ord))[1]
            AS status,
        -- The dispatcher's plan (JobAccepted) wins over what the request asked for.
        (array_agg(event ORDER BY type = 'JobAccepted' DESC, ord)
            FILTER (WHERE type IN ('JobRequested', 'JobAccepted')))[1] AS plan,
        (array_agg(idempotency_key ORDER BY ord) FILTER (WHERE idempotency_key IS NOT NULL))[1]
            AS idempotency_key,
        (array_agg(labels ORDER BY ord) FILTER (WHERE type = 'JobRequested'))[1] AS labels,
        (array_agg(spec ORDER BY ord) FILTER (WHERE type = 'JobRequested'))[1] AS spec,
        (array_agg(error ORDER BY ord) FILTER (WHERE job_status_rank(job_status) = 3))[1]
            AS error,
        (array_agg(stage ORDER BY ord DESC) FILTER (WHERE type = 'StageChanged'))[1]
            AS current_stage,
        min(occurred_at) FILTER (WHERE type = 'JobRequested') AS requested_at,
        min(occurred_at) FILTER (WHERE type = 'JobAccepted') AS accepted_at,
        min(occurred_at) FILTER (WHERE type = 'StageChanged' AND status = 'STARTED')
            AS started_at,
        (array_agg(occurred_at ORDER BY ord) FILTER (WHERE job_status_rank(job_status) = 3))[1]
            AS finished_at
    FROM facts
    GROUP BY job_id
),
keyed AS (
    -- A key already held by another job of the tenant is not stored again: the unique index
    -- would refuse it and stall the projector. The dispatcher answers such duplicates.
    SELECT d.*,
        CASE
            WHEN d.idempotency_key IS NULL THEN NULL
            WHEN row_number() OVER (
                PARTITION BY d.tenant, d.idempotency_key ORDER BY d.first_ord) > 1 THEN NULL
            WHEN EXISTS (
                SELECT 1 FROM jobs o
                WHERE o.tenant = d.tenant AND o.idempotency_key = d.idempotency_key
                  AND o.job_id <> d.job_id) THEN NULL
            ELSE d.idempotency_key
        END AS free_key
    FROM delta d
)
INSERT INTO jobs AS j (job_id, tenant, kind, target, status, current_stage, stages, error,
                       labels, idempotency_key, spec, requested_at, accepted_at, started_at,
                       finished_at)
SELECT job_id, tenant, (plan).kind, (plan).target, status, current_stage,
       COALESCE((plan).stages, '{}'), error, COALESCE(labels, '{}'), free_key, spec,
       requested_at, accepted_at, started_at, finished_at
FROM keyed
ORDER BY job_id
ON CONFLICT (job_id) DO UPDATE SET
    status = CASE WHEN job_status_rank(EXCLUDED.status) > job_status_rank(j.status)
                  THEN EXCLUDED.status ELSE j.status END,
    -- The first terminal event decides the outcome; later ones never overwrite it.
    error = CASE WHEN job_status_rank(EXCLUDED.status) = 3 AND job_status_rank(j.status) < 3
                 THEN EXCLUDED.error ELSE j.error END,
    finished_at = CASE WHEN job_status_rank(EXCLUDED.status) = 3
                            AND job_status_rank(j.status) < 3
                       THEN EXCLUDED.finished_at ELSE j.finished_at END,
    -- kind is set exactly when the batch planned the job (JobRequested or JobAccepted).
    kind = CASE WHEN EXCLUDED.kind IS NOT NULL
                     AND (EXCLUDED.accepted_at IS NOT NULL OR j.accepted_at IS NULL)
                THEN EXCLUDED.kind ELSE j.kind END,
    target = CASE WHEN EXCLUDED.kind IS NOT NULL
                       AND (EXCLUDED.accepted_at IS NOT NULL OR j.accepted_at IS NULL)
                  THEN EXCLUDED.target ELSE j.target END,
    stages = CASE WHEN EXCLUDED.kind IS NOT NULL
                       AND (EXCLUDED.accepted_at IS NOT NULL OR j.accepted_at IS NULL)
                  THEN EXCLUDED.stages ELSE j.stages END,
    idempotency_key = COALESCE(j.idempotency_key, EXCLUDED.idempotency_key),
    labels = CASE WHEN EXCLUDED.requested_at IS NOT NULL THEN EXCLUDED.labels ELSE j.labels END,
    spec = CASE WHEN EXCLUDED.requested_at IS NOT NULL THEN EXCLUDED.spec ELSE j.spec END,
    current_stage = COALESCE(EXCLUDED.current_stage, j.current_stage),
    requested_at = COALESCE(j.requested_at, EXCLUDED.requested_at),
    accepted_at = COALESCE(j.accepted_at, EXCLUDED.accepted_at),
    started_at = LEAST(j.started_at, EXCLUDED.started_at),
    updated_at = now();

WITH delta AS (
    SELECT job_id, stage, attempt,
        (array_agg(status ORDER BY stage_status_rank(status) DESC NULLS LAST, ord)
            FILTER (WHERE type = 'StageChanged'))[1] AS status,
        min(occurred_at) FILTER (WHERE status = 'STARTED') AS started_at,
        (array_agg(occurred_at ORDER BY ord) FILTER (WHERE stage_status_rank(status) = 1))[1]
            AS finished_at,
        (array_agg(duration_ms ORDER BY ord) FILTER (WHERE stage_status_rank(status) = 1))[1]
            AS duration_ms,
        (array_agg(summary ORDER BY ord) FILTER (WHERE stage_status_rank(status) = 1))[1]
            AS summary,
        (array_agg(error ORDER BY ord) FILTER (WHERE stage_status_rank(status) = 1))[1]
            AS error,
        (array_agg(percent ORDER BY ord DESC) FILTER (WHERE type = 'ProgressReported'))[1]
            AS percent
    FROM projector_batch
    WHERE fresh AND job_id IS NOT NULL AND type IN ('StageChanged', 'ProgressReported')
    GROUP BY job_id, stage, attempt
)
INSERT INTO job_stages AS s (job_id, stage, attempt, status, progress, started_at,
                             finished_at, duration_ms, summary, error)
SELECT job_id, stage, attempt, COALESCE(status, 'STARTED'),
       CASE WHEN status = 'SUCCEEDED' THEN 100 ELSE percent END,
       started_at, finished_at, duration_ms, summary, error
FROM delta
ORDER BY job_id, stage, attempt
ON CONFLICT (job_id, stage, attempt) DO UPDATE SET
    status = CASE WHEN stage_status_rank(EXCLUDED.status) > stage_status_rank(s.status)
                  THEN EXCLUDED.status ELSE s.status END,
    finished_at = CASE WHEN stage_status_rank(EXCLUDED.status) > stage_status_rank(s.status)
                       THEN EXCLUDED.finished_at ELSE s.finished_at END,
    duration_ms = CASE WHEN stage_status_rank(EXCLUDED.status) > stage_status_rank(s.status)
                       THEN EXCLUDED.duration_ms ELSE s.duration_ms END,
    summary = CASE WHEN stage_status_rank(EXCLUDED.status) > stage_status_rank(s.status)
                   THEN EXCLUDED.summary ELSE s.summary END,
    error = CASE WHEN stage_status_rank(EXCLUDED.status) > stage_status_rank(s.status)
                 THEN EXCLUDED.error ELSE s.error END,
    -- A late progress report (another topic) must not pull a finished attempt below 100.
    progress = CASE WHEN s.status = 'SUCCEEDED' THEN s.progress
                    ELSE COALESCE(EXCLUDED.progress, s.progress) END,
    started_at = LEAST(s.started_at, EXCLUDED.started_at),
    updated_at = now();

INSERT INTO metrics (event_id, job_id, stage, attempt, name, step, value, labels, occurred_at)
SELECT event_id, job_id, stage, attempt, name, step, value, COALESCE(labels, '{}'), occurred_at
FROM projector_batch
WHERE fresh AND job_id IS NOT NULL AND type = 'MetricRecorded'
ORDER BY ord
ON CONFLICT (event_id) DO NOTHING;

INSERT INTO artifacts (event_id, job_id, stage, attempt, name, media_type, uri, size_bytes,
                       sha256, content, occurred_at)
SELECT event_id, job_id, stage, attempt, name, media_type, uri, size_bytes, sha256, content,
       occurred_at
FROM projector_batch
WHERE fresh AND job_id IS NOT NULL AND type = 'ArtifactStored'
ORDER BY ord
ON CONFLICT (event_id) DO NOTHING;

-- Job progress: each planned stage weighs the same; a stage counts with its latest attempt.
WITH touched AS (
    SELECT DISTINCT job_id FROM projector_batch
    WHERE fresh AND job_id IS NOT NULL
      AND type IN ('StageChanged', 'ProgressReported', 'JobFinished')
),
latest AS (
    SELECT DISTINCT ON (s.job_id, s.stage) s.job_id,
        CASE WHEN s.status = 'SUCCEEDED' THEN 100 ELSE COALESCE(s.progress, 0) END AS percent
    FROM job_stages s JOIN touched t ON t.job_id = s.job_id
    ORDER BY s.job_id, s.stage, s.attempt DESC
),
per_job AS (
    SELECT job_id, sum(percent) AS total, count(*) AS seen FROM latest GROUP BY job_id
)
UPDATE jobs j
SET progress = CASE
        WHEN j.status = 'SUCCEEDED' THEN 100
        ELSE LEAST(100, COALESCE(p.total, 0) / GREATEST(cardinality(j.stages), p.seen, 1))
    END
FROM touched t LEFT JOIN per_job p ON p.job_id = t.job_id
WHERE j.job_id = t.job_id;
"""

SAVE_OFFSETS = """
INSERT INTO projection_offsets AS o (projector, topic, partition, next_offset)
SELECT $1, topic, partition, next_offset
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(topic, partition, next_offset)
ON CONFLICT (projector, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""

# NOTIFY is queued by the transaction and delivered only when it commits. Its payload is the
# max seq and the jobs whose feeds changed, so the API wakes only those; when the list would
# not fit a NOTIFY (8000 bytes) the max seq alone means "every feed".
FINISH = f"""
WITH batch AS (
    SELECT count(*) FILTER (WHERE fresh) AS fresh, max(seq) AS max_seq,
           string_agg(DISTINCT job_id::text, ' ') FILTER (WHERE fresh AND seq IS NOT NULL) AS jobs
    FROM projector_batch
)
SELECT fresh, max_seq,
       CASE WHEN max_seq IS NOT NULL THEN pg_notify(
           '{NOTIFY_CHANNEL}',
           CASE WHEN jobs IS NOT NULL AND length(jobs) < 7900 THEN max_seq || ' ' || jobs
                ELSE max_seq::text END
       ) END AS notified
FROM batch
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What one committed batch changed."""

    fresh: int
    duplicates: int
    max_seq: int | None


class ProjectionWriter:
    """Applies batches through one connection; `projector` names whose offsets are stored."""

    def __init__(self, conn: asyncpg.Connection, projector: str) -> None:
        self._conn = conn
        self._projector = projector

    async def prepare(self) -> None:
        """Create this connection's staging table."""
        await self._conn.execute(STAGING_TABLE)

    async def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read for every partition this projector has stored."""
        rows = await self._conn.fetch(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = $1",
            self._projector,
        )
        return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def apply(self, batch: Batch) -> Applied:
        """Rows, projections and offsets of the batch in one transaction, then NOTIFY on commit."""
        topics, partitions, next_offsets = [], [], []
        for (topic, partition), next_offset in batch.next_offsets.items():
            topics.append(topic)
            partitions.append(partition)
            next_offsets.append(next_offset)
        async with self._conn.transaction():
            fresh, max_seq = 0, None
            if batch.rows:
                await self._conn.copy_records_to_table(
                    "projector_batch", records=batch.rows, columns=STAGED_COLUMNS
                )
                await self._conn.execute(FOLD)
                finished = await self._conn.fetchrow(FINISH)
                assert finished is not None
                fresh, max_seq = finished["fresh"], finished["max_seq"]
            await self._conn.execute(
                SAVE_OFFSETS, self._projector, topics, partitions, next_offsets
            )
        return Applied(fresh, len(batch.rows) - fresh + batch.repeated, max_seq)
