"""Writes one batch in one transaction: feed rows, folded projections, the archive, offsets,
NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.batch import STAGED_COLUMNS, Batch

NOTIFY_CHANNEL = "stagecast_events"

# The session's staging area for project_batch() (migrations/002 and 010): staged events with
# the messages they arrived as. Emptied at every commit, so a batch never sees another's rows.
SESSION_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS projector_batch
    (LIKE staged_event, message_key bytea, message_value bytea) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS projector_fresh (event_id uuid NOT NULL, seq bigint)
    ON COMMIT DELETE ROWS;
CREATE OR REPLACE TEMP VIEW projector_new AS
    SELECT b.*, f.seq FROM projector_batch b JOIN projector_fresh f ON f.event_id = b.event_id;
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What one committed batch changed."""

    fresh: int
    duplicates: int
    max_seq: int | None


# Requests read from the log are in the outbox (the API's are already there): a job not finished
# when this generation ends can be published again from it. The first body of a job id stays.
_RECORD_REQUESTS = """
INSERT INTO request_outbox AS o (job_id, tenant, request, published_generation, published_at)
SELECT r.job_id, r.tenant, r.request, $4, now()
FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS r(job_id, tenant, request)
ON CONFLICT (job_id) DO UPDATE
    SET published_generation = EXCLUDED.published_generation, published_at = now()
    WHERE o.published_generation IS DISTINCT FROM EXCLUDED.published_generation
"""


class ProjectionWriter:
    """Applies batches through one connection; `projector` names whose offsets are stored.

    `generation` is the broker generation the batches are read from (streams/generation.py).
    """

    def __init__(self, conn: asyncpg.Connection, projector: str, generation: str) -> None:
        self._conn = conn
        self._projector = projector
        self.generation = generation

    async def prepare(self) -> None:
        """Create this connection's staging tables."""
        await self._conn.execute(SESSION_TABLES)

    async def enter_generation(self) -> str | None:
        """Forget offsets stored in another generation; return that generation, if any."""
        async with self._conn.transaction():
            left: str | None = await self._conn.fetchval(
                "SELECT generation FROM projector_generations WHERE projector = $1 FOR UPDATE",
                self._projector,
            )
            if left == self.generation:
                return None
            await self._conn.execute(
                "DELETE FROM projection_offsets WHERE projector = $1", self._projector
            )
            await self._conn.execute(
                "INSERT INTO projector_generations (projector, generation) VALUES ($1, $2) "
                "ON CONFLICT (projector) DO UPDATE "
                "SET generation = EXCLUDED.generation, updated_at = now()",
                self._projector,
                self.generation,
            )
        return left

    async def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read for every partition this projector has stored."""
        rows = await self._conn.fetch(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = $1",
            self._projector,
        )
        return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def apply(self, batch: Batch) -> Applied:
        """Rows, projections, archive and offsets of the batch in one transaction, then NOTIFY on
        commit."""
        topics, partitions, next_offsets = [], [], []
        for (topic, partition), next_offset in batch.next_offsets.items():
            topics.append(topic)
            partitions.append(partition)
            next_offsets.append(next_offset)
        async with self._conn.transaction():
            if batch.rows:
                await self._conn.copy_records_to_table(
                    "projector_batch", records=batch.in_feed_order(), columns=STAGED_COLUMNS
                )
            result = await self._conn.fetchrow(
                "SELECT applied, last_seq FROM project_batch($1, $2, $3, $4, $5)",
                self._projector,
                NOTIFY_CHANNEL,
                topics,
                partitions,
                next_offsets,
            )
            if batch.requests:
                job_ids, tenants, requests = zip(*batch.requests, strict=True)
                await self._conn.execute(
                    _RECORD_REQUESTS, job_ids, tenants, requests, self.generation
                )
        assert result is not None
        fresh: int = result["applied"]
        return Applied(fresh, len(batch.rows) - fresh + batch.repeated, result["last_seq"])
