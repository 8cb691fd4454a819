"""The archive's hash chain as PostgreSQL computes it (migrations/010) is the one
projections/archive.py defines, row for row, so `stagecast audit verify` checks it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections.archive import GENESIS, ArchivedEvent, Link, digest, first_break
from projections.writer import SESSION_TABLES
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC)


def events() -> list[ArchivedEvent]:
    """Rows with every optional field missing somewhere, odd times, texts and sizes."""
    job = uuid.uuid4()

    def event(n: int, **changes: object) -> ArchivedEvent:
        fields: dict[str, object] = {
            "event_id": uuid.uuid4(),
            "seq": n,
            "topic": "stagecast.events",
            "partition": n % 3,
            "offset": 10 * n,
            "type": "StageChanged",
            "job_id": job,
            "occurred_at": T0 + timedelta(microseconds=n),
            "key": str(job).encode(),
            "value": bytes(range(n % 256)) * 3,
        }
        return ArchivedEvent(**(fields | changes))  # type: ignore[arg-type]

    return [
        event(1, seq=None, type="JobRequested"),
        event(2, job_id=None, key=None),
        event(3, key=b""),
        event(4, value=b""),
        event(5, topic="stagecast.événements", type="Ereignis✓"),
        event(6, occurred_at=datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC)),
        event(7, offset=2**62, partition=2**31 - 1, seq=2**40),
        event(8, value=b"\x00" * 70_000),
    ]


def placed(e: ArchivedEvent) -> tuple[object, ...]:
    return e.topic, e.partition, e.offset, e.key, e.value


async def archive(conn: asyncpg.Connection, batch: list[ArchivedEvent]) -> None:
    """`batch` staged as a projector stages it, then archived by archive_batch()."""
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO projector_batch (ord, event_id, job_id, type, tenant, occurred_at, "
            'topic, partition, "offset", message_key, message_value) '
            "VALUES ($1, $2, $3, $4, 't', $5, $6, $7, $8, $9, $10)",
            [
                (n, e.event_id, e.job_id, e.type, e.occurred_at, *placed(e))
                for n, e in enumerate(batch)
            ],
        )
        await conn.executemany(
            "INSERT INTO projector_fresh (event_id, seq) VALUES ($1, $2)",
            [(e.event_id, e.seq) for e in batch],
        )
        await conn.execute("SELECT archive_batch()")


async def test_a_chain_computed_in_postgres_is_the_python_digest_row_for_row(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    conn = await asyncpg.connect(settings.require_database())
    try:
        await conn.execute(SESSION_TABLES)
        written = events()
        # Each batch chains onto the archive's last row.
        for first, end in ((0, 3), (3, 6), (6, len(written))):
            await archive(conn, written[first:end])
        rows = await conn.fetch("SELECT * FROM event_archive ORDER BY position")
    finally:
        await conn.close()

    links = [
        Link(
            row["position"],
            ArchivedEvent(
                row["event_id"],
                row["seq"],
                row["topic"],
                row["partition"],
                row["offset"],
                row["type"],
                row["job_id"],
                row["occurred_at"],
                None if row["key"] is None else bytes(row["key"]),
                bytes(row["value"]),
            ),
            bytes(row["prev_hash"]),
            bytes(row["hash"]),
        )
        for row in rows
    ]
    assert [link.event for link in links] == written
    previous = GENESIS
    for position, link in enumerate(links, start=1):
        assert link.position == position
        assert link.prev_hash == previous, position
        assert link.hash == digest(previous, position, link.event), position
        previous = link.hash
    assert first_break(links) is None
