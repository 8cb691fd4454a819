"""Writes one batch in one statement, which commits alone: feed rows, folded projections, the
archive, the outbox, offsets, NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.batch import Batch

NOTIFY_CHANNEL = "stagecast_events"

# The session's staging area for project_rows() (migrations/002, 010 and 013): staged events
# with the messages they arrived as. Emptied at every commit, so a batch never sees another's.
SESSION_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS projector_batch (LIKE staged_event) ON COMMIT DELETE ROWS;
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


# Requests read from the log go to the outbox too (the API's are already there): a job not
# finished when this generation ends can be published again from it.
_PROJECT_ROWS = (
    "SELECT applied, last_seq FROM project_rows($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


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
        """Rows, projections, archive, requests and offsets of the batch in one statement, which
        commits alone; NOTIFY on its commit."""
        topics, partitions, next_offsets = [], [], []
        for (topic, partition), next_offset in batch.next_offsets.items():
            topics.append(topic)
            partitions.append(partition)
            next_offsets.append(next_offset)
        requests = zip(*batch.requests, strict=True) if batch.requests else ((), (), ())
        job_ids, tenants, bodies = requests
        result = await self._conn.fetchrow(
            _PROJECT_ROWS,
            batch.in_feed_order(),
            self._projector,
            NOTIFY_CHANNEL,
            topics,
            partitions,
            next_offsets,
            job_ids,
            tenants,
            bodies,
            self.generation,
        )
        assert result is not None
        fresh: int = result["applied"]
        return Applied(fresh, len(batch.rows) - fresh + batch.repeated, result["last_seq"])
