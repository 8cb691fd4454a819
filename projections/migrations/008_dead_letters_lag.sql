-- An operator's view in PostgreSQL: the dead-letter topic projected into `dead_letters`, and
-- the latest consumer-lag sample of every consumer in `consumer_lag` (README "Dashboards").

-- One row per dead letter, keyed by the letter's event id (it follows from the refused
-- message's origin and bytes, so a letter sent twice is one row). The recorder stores its
-- offsets in projection_offsets (projector 'deadletters') in the same transaction as these
-- rows. A letter that is itself undecodable is kept too: its origin is then its own place on
-- the dead-letter topic and its error code the reason it could not be decoded.
CREATE TABLE dead_letters (
    event_id uuid PRIMARY KEY,
    origin_topic text NOT NULL,
    origin_partition int NOT NULL,
    origin_offset bigint NOT NULL,
    error_code text NOT NULL,
    reason text NOT NULL,
    -- What sent the letter (e.g. 'stagecast'); '' when the letter could not be decoded.
    source text NOT NULL,
    key bytea,
    -- The refused message's value as the letter carries it (empty when it was too big to
    -- keep; the reason then gives its size and hash), with its size and SHA-256 (hex).
    value bytea NOT NULL,
    value_size int NOT NULL,
    value_sha256 text NOT NULL,
    -- When the letter was sent (NULL when it says no storable time), and where it was read.
    occurred_at timestamptz,
    letter_topic text NOT NULL,
    letter_partition int NOT NULL,
    letter_offset bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_origin ON dead_letters (origin_topic, error_code);

-- The latest sample of each consumer's lag, per partition. `consumer_group` is the workers'
-- Kafka consumer group (STAGECAST_APP_ID) or 'projector:<name>' for a projector, whose
-- offsets live in projection_offsets. `end_offset` is where the partition ends (the larger of
-- ListOffsets and a fetch's high-water mark), `committed` the next offset the consumer will
-- read (NULL when it has committed none in this broker generation), `lag` what lies between.
CREATE TABLE consumer_lag (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    end_offset bigint NOT NULL,
    committed bigint,
    lag bigint NOT NULL,
    sampled_at timestamptz NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Lag per consumer group and topic, from the latest samples.
CREATE VIEW dash_consumer_lag AS
SELECT consumer_group, topic, count(*) AS partitions, sum(lag) AS lag,
    max(lag) AS max_partition_lag, sum(end_offset) AS end_offsets,
    count(*) FILTER (WHERE committed IS NULL) AS uncommitted_partitions,
    min(sampled_at) AS sampled_at, now() - min(sampled_at) AS sample_age
FROM consumer_lag
GROUP BY consumer_group, topic;

-- Dead letters by the topic they were refused on and why, with when the first and last were
-- sent (recorded, for letters that carry no time).
CREATE VIEW dash_dead_letters AS
SELECT origin_topic, error_code, count(*) AS letters,
    min(coalesce(occurred_at, recorded_at)) AS first_seen,
    max(coalesce(occurred_at, recorded_at)) AS last_seen,
    (array_agg(reason ORDER BY coalesce(occurred_at, recorded_at) DESC, event_id))[1]
        AS last_reason
FROM dead_letters
GROUP BY origin_topic, error_code;
