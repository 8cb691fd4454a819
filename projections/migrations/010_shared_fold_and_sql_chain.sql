-- The projector's fold split in pieces that a live batch and a rebuild share, and the event
-- archive written in PostgreSQL: each row's hash is computed here, in the transaction that
-- applies its event, with exactly the layout projections/archive.py gives (so `stagecast audit
-- verify` checks these rows as it checked the ones Python wrote).
--
-- The session's staging table now carries each message's key and bytes as they arrived
-- (message_key, message_value), for the archive; see projections/writer.py.

-- The bytes a row's hash covers after the previous row's hash (projections/archive.py):
-- integers 8-byte big-endian (-1 for none), uuids their 16 bytes (16 zero bytes for none),
-- texts and byte strings length-prefixed (-1 for none), the event time in microseconds.
-- STABLE, like convert_to, so that it is inlined into the query that calls it.
CREATE FUNCTION archive_link_bytes(
    p_position bigint, p_seq bigint, p_event_id uuid, p_topic text, p_partition int,
    p_offset bigint, p_type text, p_job_id uuid, p_occurred_at timestamptz, p_key bytea,
    p_value bytea
) RETURNS bytea LANGUAGE sql STABLE
RETURN int8send(p_position) || int8send(COALESCE(p_seq, -1)) || uuid_send(p_event_id)
    || int8send(octet_length(convert_to(p_topic, 'UTF8'))::bigint) || convert_to(p_topic, 'UTF8')
    || int8send(p_partition::bigint) || int8send(p_offset)
    || int8send(octet_length(convert_to(p_type, 'UTF8'))::bigint) || convert_to(p_type, 'UTF8')
    || COALESCE(uuid_send(p_job_id), '\x00000000000000000000000000000000'::bytea)
    || int8send((extract(epoch FROM p_occurred_at) * 1000000)::bigint)
    || COALESCE(int8send(octet_length(p_key)::bigint) || p_key, int8send(-1::bigint))
    || int8send(octet_length(p_value)::bigint) || p_value;

-- One step of the chain: the hash of a row whose predecessor hashed `state` (or, for the
-- first row of a run, `head`: the archive's last hash before it).
CREATE FUNCTION archive_chain_step(state bytea, head bytea, link bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN sha256(COALESCE(state, head) || link);
END;
$$;

-- As a window function over rows in position order: each row's hash.
CREATE AGGREGATE archive_chain(bytea, bytea) (sfunc = archive_chain_step, stype = bytea);

-- The batch's applied events (projector_new) appended to the archive in staging order, the
-- first chained to the archive's last row (an index lookup).
CREATE FUNCTION archive_batch() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    after_position bigint;
    after_hash bytea;
BEGIN
    SELECT a.position, a.hash INTO after_position, after_hash
    FROM event_archive a ORDER BY a.position DESC LIMIT 1;
    after_position := COALESCE(after_position, 0);
    -- The first row's predecessor: 32 zero bytes (projections/archive.py).
    after_hash := COALESCE(after_hash, decode(repeat('00', 32), 'hex'));
    -- Every window in staging order, so the rows are sorted once; only the archived columns.
    WITH placed AS (
        SELECT n.ord, after_position + row_number() OVER (ORDER BY n.ord) AS position,
               n.seq, n.event_id, n.topic, n.partition, n."offset", n.type, n.job_id,
               n.occurred_at, n.message_key, n.message_value
        FROM projector_new n
    ),
    chained AS (
        SELECT p.*, archive_chain(after_hash, archive_link_bytes(
                p.position, p.seq, p.event_id, p.topic, p.partition, p."offset", p.type,
                p.job_id, p.occurred_at, p.message_key, p.message_value))
            OVER (ORDER BY p.ord) AS hash
        FROM placed p
    )
    INSERT INTO event_archive (position, seq, event_id, topic, partition, "offset", type,
                               job_id, occurred_at, key, value, prev_hash, hash)
    SELECT position, seq, event_id, topic, partition, "offset", type, job_id, occurred_at,
           message_key, message_value, COALESCE(lag(hash) OVER (ORDER BY ord), after_hash), hash
    FROM chained
    ORDER BY ord;
END;
$$;

-- The batch's applied events (projector_new: the staged rows with their seq) folded into jobs,
-- job_stages, metrics, artifacts and the jobs' progress: the fold of 004, unchanged.
CREATE FUNCTION fold_batch() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH facts AS (
        SELECT n AS event, n.job_id, n.ord, n.type, n.tenant, n.stage, n.status, n.error,
            n.occurred_at, n.idempotency_key, n.labels, n.spec,
            CASE n.type
                WHEN 'JobRequested' THEN 'QUEUED'
                WHEN 'JobAccepted' THEN 'ACCEPTED'
                -- A second request under a running job's id is refused on that job's feed;
                -- the job itself goes on.
                WHEN 'JobRejected' THEN CASE WHEN n.error->>'code' = 'IDEMPOTENCY_CONFLICT'
                                             THEN NULL ELSE 'REJECTED' END
                WHEN 'StageChanged' THEN 'RUNNING'
                ELSE n.status
            END AS job_status
        FROM projector_new n
        WHERE n.job_id IS NOT NULL
          AND n.type IN ('JobRequested', 'JobAccepted', 'JobRejected', 'StageChanged',
                         'JobFinished')
    ),
    delta AS (
        SELECT job_id,
            min(ord) AS first_ord,
            (array_agg(tenant ORDER BY ord))[1] AS tenant,
            (array_agg(job_status
                ORDER BY job_status_rank(job_status) DESC NULLS LAST, ord))[1] AS status,
            -- The dispatcher's plan (JobAccepted) wins over what the request asked for.
            (array_agg(event ORDER BY type = 'JobAccepted' DESC, ord)
                FILTER (WHERE type IN ('JobRequested', 'JobAccepted')))[1] AS plan,
            (array_agg(idempotency_key ORDER BY ord)
                FILTER (WHERE idempotency_key IS NOT NULL))[1] AS idempotency_key,
            (array_agg(labels ORDER BY ord) FILTER (WHERE type = 'JobRequested'))[1] AS labels,
            (array_agg(spec ORDER BY ord) FILTER (WHERE type = 'JobRequested'))[1] AS spec,
            (array_agg(error ORDER BY ord)
                FILTER (WHERE job_status_rank(job_status) = 3))[1] AS error,
            (array_agg(stage ORDER BY ord DESC)
                FILTER (WHERE type = 'StageChanged'))[1] AS current_stage,
            min(occurred_at) FILTER (WHERE type = 'JobRequested') AS requested_at,
            min(occurred_at) FILTER (WHERE type = 'JobAccepted') AS accepted_at,
            min(occurred_at)
                FILTER (WHERE type = 'StageChanged' AND status = 'STARTED') AS started_at,
            (array_agg(occurred_at ORDER BY ord)
                FILTER (WHERE job_status_rank(job_status) = 3))[1] AS finished_at
        FROM facts
        GROUP BY job_id
    ),
    keyed AS (
        -- A key another job of the tenant already holds is not stored again: the unique index
        -- would refuse the row and stall the projector. (The API reserves keys before it queues
        -- a job; only a producer writing straight to Kafka can reuse one.)
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
                           labels, idempotency_key, spec, requested_at, accepted_at,
                           started_at, finished_at)
    SELECT job_id, tenant, (plan).kind, (plan).target, COALESCE(status, 'QUEUED'), current_stage,
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
        labels = CASE WHEN EXCLUDED.requested_at IS NOT NULL
                      THEN EXCLUDED.labels ELSE j.labels END,
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
            (array_agg(occurred_at ORDER BY ord)
                FILTER (WHERE stage_status_rank(status) = 1))[1] AS finished_at,
            (array_agg(duration_ms ORDER BY ord)
                FILTER (WHERE stage_status_rank(status) = 1))[1] AS duration_ms,
            (array_agg(summary ORDER BY ord)
                FILTER (WHERE stage_status_rank(status) = 1))[1] AS summary,
            (array_agg(error ORDER BY ord)
                FILTER (WHERE stage_status_rank(status) = 1))[1] AS error,
            (array_agg(percent ORDER BY ord DESC)
                FILTER (WHERE type = 'ProgressReported'))[1] AS percent
        FROM projector_new
        WHERE job_id IS NOT NULL AND type IN ('StageChanged', 'ProgressReported')
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
        progress = CASE WHEN s.status = 'SUCCEEDED'
                             OR (s.status = 'STARTED' AND EXCLUDED.status = 'SUCCEEDED')
                        THEN 100 ELSE COALESCE(EXCLUDED.progress, s.progress) END,
        started_at = LEAST(s.started_at, EXCLUDED.started_at),
        updated_at = now();

    INSERT INTO metrics (event_id, job_id, stage, attempt, name, step, value, labels,
                         occurred_at)
    SELECT event_id, job_id, stage, attempt, name, step, value, COALESCE(labels, '{}'),
           occurred_at
    FROM projector_new
    WHERE job_id IS NOT NULL AND type = 'MetricRecorded'
    ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING;

    INSERT INTO artifacts (event_id, job_id, stage, attempt, name, media_type, uri,
                           size_bytes, sha256, content, occurred_at)
    SELECT event_id, job_id, stage, attempt, name, media_type, uri, size_bytes, sha256,
           content, occurred_at
    FROM projector_new
    WHERE job_id IS NOT NULL AND type = 'ArtifactStored'
    ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING;

    -- Job progress: each planned stage weighs the same; a stage counts with its latest attempt.
    WITH touched AS (
        SELECT DISTINCT job_id FROM projector_new
        WHERE job_id IS NOT NULL
          AND type IN ('StageChanged', 'ProgressReported', 'JobFinished')
    ),
    latest AS (
        SELECT DISTINCT ON (s.job_id, s.stage) s.job_id,
            CASE WHEN s.status = 'SUCCEEDED' THEN 100 ELSE COALESCE(s.progress, 0) END
                AS percent
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

END;
$$;

-- The fold of 004 with the archive written in the same call: the feed rows (which tells which
-- events are new), the fold, the archive rows of the new events, the offsets, then NOTIFY.
CREATE OR REPLACE FUNCTION project_batch(
    p_projector text,
    p_channel text,
    p_topics text[],
    p_partitions int[],
    p_next_offsets bigint[],
    OUT applied int,
    OUT last_seq bigint
) LANGUAGE plpgsql AS $$
DECLARE
    touched_jobs text;
BEGIN
    -- Redelivered events hit the unique event_id and are dropped here, before any fold.
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
    INSERT INTO projector_fresh (event_id, seq) SELECT event_id, seq FROM inserted;

    -- JobRequested is not in the feed: a job's first one is new while its job has not been
    -- requested. One per job in a batch too (a producer that sent the request twice under
    -- two event ids), so what counts does not depend on where batches happen to end.
    INSERT INTO projector_fresh (event_id)
    SELECT DISTINCT ON (b.job_id) b.event_id FROM projector_batch b
    WHERE b.type = 'JobRequested' AND b.job_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM jobs j WHERE j.job_id = b.job_id AND j.requested_at IS NOT NULL
      )
    ORDER BY b.job_id, b.ord;

    PERFORM fold_batch();
    PERFORM archive_batch();

    INSERT INTO projection_offsets AS o (projector, topic, partition, next_offset)
    SELECT p_projector, u.topic, u.partition, u.next_offset
    FROM unnest(p_topics, p_partitions, p_next_offsets) AS u(topic, partition, next_offset)
    ON CONFLICT (projector, topic, partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = now();

    SELECT count(*), max(n.seq),
           string_agg(DISTINCT n.job_id::text, ' ') FILTER (WHERE n.seq IS NOT NULL)
    INTO applied, last_seq, touched_jobs
    FROM projector_new n;

    -- Payload: the max seq and the jobs whose feeds changed, so the API wakes only those;
    -- when the list would not fit a NOTIFY (8000 bytes) the max seq alone means "every feed".
    IF last_seq IS NOT NULL THEN
        PERFORM pg_notify(
            p_channel,
            CASE WHEN touched_jobs IS NOT NULL AND length(touched_jobs) < 7900
                 THEN last_seq || ' ' || touched_jobs
                 ELSE last_seq::text END
        );
    END IF;
END;
$$;
