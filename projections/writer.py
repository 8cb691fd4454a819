"""Writes one batch in one transaction: feed rows, folded projections, the archive, offsets,
NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.archive import GENESIS, Link, digest
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


# The events this batch applied (new to the projections), in the order they were staged.
_FRESH = """
SELECT f.event_id::text AS event_id, f.seq FROM projector_fresh f
JOIN projector_batch b ON b.event_id = f.event_id ORDER BY b.ord
"""
ARCHIVE_COLUMNS = (
    "position",
    "seq",
    "event_id",
    "topic",
    "partition",
    "offset",
    "type",
    "job_id",
    "occurred_at",
    "key",
    "value",
    "prev_hash",
    "hash",
)


def archive_record(link: Link) -> tuple[object, ...]:
    event = link.event
    return (
        link.position,
        event.seq,
        event.event_id,
        event.topic,
        event.partition,
        event.offset,
        event.type,
        event.job_id,
        event.occurred_at,
        event.key,
        event.value,
        link.prev_hash,
        link.hash,
    )


class ProjectionWriter:
    """Applies batches through one connection; `projector` names whose offsets are stored.

    `generation` is the broker generation the batches are read from (streams/generation.py).
    """

    def __init__(self, conn: asyncpg.Connection, projector: str, generation: str) -> None:
        self._conn = conn
        self._projector = projector
        self.generation = generation
        # The archive's last row (position, hash): this projector is the schema's only writer.
        self._head = (0, GENESIS)

    async def prepare(self) -> None:
        """Create this connection's staging tables; find the archive's end."""
        await self._conn.execute(SESSION_TABLES)
        head = await self._conn.fetchrow(
            "SELECT position, hash FROM event_archive ORDER BY position DESC LIMIT 1"
        )
        if head is not None:
            self._head = (head["position"], bytes(head["hash"]))

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
            if batch.requests:
                job_ids, tenants, requests = zip(*batch.requests, strict=True)
                await self._conn.execute(
                    _RECORD_REQUESTS, job_ids, tenants, requests, self.generation
                )
            links = self._chained(batch, await self._conn.fetch(_FRESH)) if batch.rows else []
            if links:
                await self._conn.copy_records_to_table(
                    "event_archive",
                    records=[archive_record(link) for link in links],
                    columns=ARCHIVE_COLUMNS,
                )
        if links:
            self._head = (links[-1].position, links[-1].hash)
        assert result is not None
        fresh: int = result["applied"]
        return Applied(fresh, len(batch.rows) - fresh + batch.repeated, result["last_seq"])

    def _chained(self, batch: Batch, fresh: list[asyncpg.Record]) -> list[Link]:
        """The applied events as the archive's next rows, each chained to the one before."""
        position, previous = self._head
        links = []
        for row in fresh:
            position += 1
            event = batch.archived(row["event_id"], row["seq"])
            link = Link(position, event, previous, digest(previous, position, event))
            links.append(link)
            previous = link.hash
        return links
