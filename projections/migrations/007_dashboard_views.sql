-- Views for dashboards on the projections (README "Dashboards"): plain SQL over jobs and
-- job_stages, so any SQL client or Grafana's Postgres source can chart them.

-- Jobs requested and ended per minute, by outcome.
CREATE VIEW dash_throughput AS
SELECT minute,
    count(*) FILTER (WHERE moment = 'requested') AS requested,
    count(*) FILTER (WHERE moment = 'ended') AS ended,
    count(*) FILTER (WHERE moment = 'ended' AND status = 'SUCCEEDED') AS succeeded,
    count(*) FILTER (WHERE moment = 'ended' AND status = 'FAILED') AS failed,
    count(*) FILTER (WHERE moment = 'ended' AND status = 'CANCELLED') AS cancelled,
    count(*) FILTER (WHERE moment = 'ended' AND status = 'REJECTED') AS rejected
FROM (
    SELECT date_trunc('minute', requested_at) AS minute, 'requested' AS moment, status
    FROM jobs WHERE requested_at IS NOT NULL
    UNION ALL
    SELECT date_trunc('minute', finished_at), 'ended', status
    FROM jobs WHERE finished_at IS NOT NULL AND job_status_rank(status) = 3
) AS moments
GROUP BY minute;

-- Stage attempt durations since a moment: count and p50/p95/p99/max in milliseconds, of the
-- attempts that ended (any outcome) since then.
CREATE FUNCTION dash_stage_latency_since(since timestamptz)
RETURNS TABLE (stage text, attempts bigint, p50_ms double precision, p95_ms double precision,
               p99_ms double precision, max_ms bigint)
LANGUAGE sql STABLE
AS $$
    SELECT stage, count(*),
        percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms),
        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),
        percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms),
        max(duration_ms)
    FROM job_stages
    WHERE duration_ms IS NOT NULL AND finished_at >= since
    GROUP BY stage
$$;

-- The same over the last hour.
CREATE VIEW dash_stage_latency AS
SELECT * FROM dash_stage_latency_since(now() - interval '1 hour');

-- Ended stage attempts by stage and outcome code: how many, and their share of the stage's
-- ended attempts (FAILED with its error code, CANCELLED, SUCCEEDED as '-').
CREATE VIEW dash_failures AS
SELECT stage, status, coalesce(error->>'code', '-') AS error_code, count(*) AS attempts,
    round(count(*)::numeric / sum(count(*)) OVER (PARTITION BY stage), 4) AS share
FROM job_stages
WHERE stage_status_rank(status) = 1
GROUP BY stage, status, coalesce(error->>'code', '-');

-- Jobs not ended yet, with their latest stage attempt and how long it has been silent (a
-- stalled stage: `WHERE silent_for > interval '30 seconds'`; the watchdog ends an attempt
-- silent for STAGECAST_STAGE_TIMEOUT_S).
CREATE VIEW dash_in_flight AS
SELECT j.job_id, j.tenant, j.status, j.current_stage, s.attempt, s.status AS stage_status,
    s.progress AS stage_progress, now() - j.requested_at AS age,
    now() - coalesce(s.updated_at, j.updated_at) AS silent_for
FROM jobs j
LEFT JOIN LATERAL (
    SELECT attempt, status, progress, updated_at FROM job_stages st
    WHERE st.job_id = j.job_id ORDER BY st.updated_at DESC, st.attempt DESC LIMIT 1
) s ON true
WHERE job_status_rank(j.status) < 3;
