-- One call per batch: the staged rows travel as a parameter instead of a COPY into the staging
-- table inside BEGIN ... COMMIT. A lone statement commits alone, so a batch costs one round
-- trip instead of four or five (BEGIN, COPY and its data, project_batch, the outbox, COMMIT),
-- which is most of a small batch's time (bench/e2e_latency.py, projector transactions).

-- A staged event carries the message it arrived as (for the archive): the rows of the session
-- table projector_batch, and what project_rows receives.
ALTER TYPE staged_event ADD ATTRIBUTE message_key bytea, ADD ATTRIBUTE message_value bytea;

-- Stages the rows, applies them as project_batch does, then records the batch's requests in
-- the outbox (the first body of a job id stays; see projections/writer.py). The caller
-- sends it as a statement of its own: rows, outbox, offsets and NOTIFY commit together.
CREATE FUNCTION project_rows(
    p_rows staged_event[],
    p_projector text,
    p_channel text,
    p_topics text[],
    p_partitions int[],
    p_next_offsets bigint[],
    p_request_jobs uuid[],
    p_request_tenants text[],
    p_requests bytea[],
    p_generation text,
    OUT applied int,
    OUT last_seq bigint
) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO projector_batch SELECT * FROM unnest(p_rows);
    SELECT p.applied, p.last_seq INTO applied, last_seq
    FROM project_batch(p_projector, p_channel, p_topics, p_partitions, p_next_offsets) AS p;
    IF cardinality(p_requests) > 0 THEN
        INSERT INTO request_outbox AS o (job_id, tenant, request, published_generation,
                                         published_at)
        SELECT r.job_id, r.tenant, r.request, p_generation, now()
        FROM unnest(p_request_jobs, p_request_tenants, p_requests) AS r(job_id, tenant, request)
        ON CONFLICT (job_id) DO UPDATE
            SET published_generation = EXCLUDED.published_generation, published_at = now()
            WHERE o.published_generation IS DISTINCT FROM EXCLUDED.published_generation;
    END IF;
END;
$$;
