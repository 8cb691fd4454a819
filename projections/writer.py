"""Writes one batch in one transaction: feed rows, folded projections, offsets, NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.batch import STAGED_COLUMNS, Batch

NOTIFY_CHANNEL = "stagecast_events"

# The session's staging area for project_batch() (migrations/002_project_batch.sql). Emptied
# at every commit, so a batch never sees another's rows.
SESSION_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS projector_batch OF staged_event ON COMMIT DELETE ROWS;
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


class ProjectionWriter:
    """Applies batches through one connection; `projector` names whose offsets are stored."""

    def __init__(self, conn: asyncpg.Connection, projector: str) -> None:
        self._conn = conn
        self._projector = projector

    async def prepare(self) -> None:
        """Create this connection's staging tables."""
        await self._conn.execute(SESSION_TABLES)

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
        assert result is not None
        fresh: int = result["applied"]
        return Applied(fresh, len(batch.rows) - fresh + batch.repeated, result["last_seq"])
