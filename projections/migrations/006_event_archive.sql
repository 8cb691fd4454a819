-- Every event the projector applies, as it arrived (original bytes, where it was read), in
-- the transaction that applied it, each row chained to the one before by a SHA-256 hash
-- (projections/archive.py says exactly what is hashed). `position` is the chain's order (1, 2,
-- ... as the one projector of this schema appends), `seq` the event's place in the feed (NULL
-- for JobRequested, which is not in the feed). An UPDATE or DELETE of any row breaks the
-- chain at or right after it: `stagecast audit verify`.
CREATE TABLE event_archive (
    position bigint PRIMARY KEY CHECK (position > 0),
    seq bigint UNIQUE,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    type text NOT NULL,
    job_id uuid,
    occurred_at timestamptz NOT NULL,
    key bytea,
    value bytea NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX event_archive_job ON event_archive (job_id, position);
