"""A rebuild: the projections of a finite, ordered run of messages written into an empty schema
in large set-based batches.

A replay needs little of the live projector's care. Its source is the archive (already in the
order the live projector applied it) or the topics read to fixed ends and put in feed order
once (projections/feed_order.py), so there is no consistent cut to wait for; its schema is
empty and written by it alone, so copies are dropped here by event id and the feed's seq and the
archive's positions are numbered here. Rows are copied in large batches and folded by the same
SQL as a live batch (fold_batch, archive_batch: migrations/010), while the next batch is
decoded; the indexes of the tables written without a conflict check are built once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg
from asyncpg.transaction import Transaction

from projections.batch import STAGED_COLUMNS, MalformedEvent, StagedRow, staged_row
from projections.migrate import quoted
from schemas.codec import Codec, DecodeError

log = logging.getLogger(__name__)

# Rows per COPY and fold: large enough that per-statement costs vanish, small enough that a
# batch's fold overlaps the decoding of the next.
BATCH_ROWS = 10_000

_SESSION_TABLES = """
CREATE TEMP TABLE projector_batch
    (LIKE staged_event, message_key bytea, message_value bytea, seq bigint) ON COMMIT DELETE ROWS;
CREATE TEMP VIEW projector_new AS SELECT * FROM projector_batch;
"""
_COLUMNS = (*STAGED_COLUMNS, "seq")
_ORD = STAGED_COLUMNS.index("ord")
_EVENT_ID = STAGED_COLUMNS.index("event_id")
_JOB_ID = STAGED_COLUMNS.index("job_id")
_TYPE = STAGED_COLUMNS.index("type")

# Written without a conflict check: every index and key is built after the last batch.
_UNCHECKED_TABLES = ("job_events", "event_archive")
# Written with upserts on their keys: only their other indexes wait for the end.
_FOLDED_TABLES = ("jobs", "job_stages", "metrics", "artifacts")

_DEFERRED_KEYS = """
SELECT c.conrelid::regclass::text AS tab, c.conname AS name, pg_get_constraintdef(c.oid) AS def
FROM pg_constraint c
WHERE c.conrelid = ANY($1::regclass[]) AND c.contype IN ('p', 'u')
ORDER BY c.contype, c.conname
"""
_DEFERRED_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i
WHERE i.indrelid = ANY($1::regclass[])
  AND (i.indrelid = ANY($2::regclass[]) OR NOT i.indisunique)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
"""


@dataclass
class Staged:
    """Decoded messages: their rows, and how many could not be decoded or stored."""

    rows: list[StagedRow] = field(default_factory=list)
    unreadable: int = 0


# (topic, partition, offset, key, value): a message as read from a topic or the archive.
Message = tuple[str, int, int, bytes | None, bytes]


def stage(codec: Codec, messages: Iterable[Message] | Iterable[asyncpg.Record]) -> Staged:
    """Messages as staging rows, in the order given.

    What the live projector would not store (undecodable bytes, a malformed event) is counted
    and left out: it dead-letters those; a rebuild only skips them as the projections did.
    """
    staged = Staged()
    rows = staged.rows
    decode = codec.decode
    with _collector_paused():
        for topic, partition, offset, key, value in messages:
            try:
                event_type, record = decode(value)
                rows.append(
                    staged_row(len(rows), topic, partition, offset, event_type, record, key, value)
                )
            except (DecodeError, MalformedEvent, ValueError, KeyError, TypeError):
                staged.unreadable += 1
    return staged


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while decoding: the rows hold no cycles, and its passes
    over the many dicts decoding allocates cost a fifth of the decoding time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Rebuild:
    """Writes rows in feed order into the empty schema `conn` has as its search path."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._seen: set[str] = set()
        self._requested: set[str] = set()
        self._ord = 0
        self._seq = 0
        self._archived: tuple[int, bytes] = (0, bytes(32))
        self._folding: asyncio.Task[None] | None = None
        # The statements that build the deferred keys and indexes again, in order.
        self._deferred: list[str] = []
        self.applied = 0

    async def start(self) -> None:
        """Session tables; the deferred indexes and keys dropped (kept to build at the end)."""
        conn = self._conn
        # A rebuild can be run again from its source: a commit need not wait for the disk.
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET work_mem = '64MB'")
        await conn.execute(_SESSION_TABLES)
        everything = [*_UNCHECKED_TABLES, *_FOLDED_TABLES]
        keys = await conn.fetch(_DEFERRED_KEYS, list(_UNCHECKED_TABLES))
        indexes = await conn.fetch(_DEFERRED_INDEXES, everything, list(_UNCHECKED_TABLES))
        async with conn.transaction():
            for key in keys:
                table, name = key["tab"], quoted(key["name"])
                await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
                self._deferred.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {key['def']}")
            for index in indexes:
                await conn.execute(f"DROP INDEX {index['name']}")
                self._deferred.append(index["def"])

    async def add(self, rows: Iterable[StagedRow]) -> None:
        """Rows in feed order: copied now, folded while the caller prepares the next ones."""
        fresh = self._fresh(rows)
        await self._folded()
        if not fresh:
            return
        transaction = self._conn.transaction()
        await transaction.start()
        try:
            # Copied before returning: the COPY needs this process to feed it, the fold not.
            await self._conn.copy_records_to_table(
                "projector_batch", records=fresh, columns=_COLUMNS
            )
        except BaseException:
            await transaction.rollback()
            raise
        self._folding = asyncio.create_task(self._fold(transaction, len(fresh)))
        # Let the fold's statement go out before the caller goes back to decoding.
        await asyncio.sleep(0)

    async def finish(
        self, projector: str, generation: str, next_offsets: dict[tuple[str, int], int]
    ) -> None:
        """The last batch written, the deferred indexes built, where the source ended stored."""
        await self._folded()
        conn = self._conn
        async with conn.transaction():
            for statement in self._deferred:
                await conn.execute(statement)
            if self._seq:
                await conn.execute(
                    f"ALTER TABLE job_events ALTER COLUMN seq RESTART WITH {self._seq + 1}"
                )
            await conn.execute(
                "INSERT INTO projector_generations (projector, generation) VALUES ($1, $2) "
                "ON CONFLICT (projector) DO UPDATE SET generation = EXCLUDED.generation",
                projector,
                generation,
            )
            await conn.executemany(
                "INSERT INTO projection_offsets (projector, topic, partition, next_offset) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (projector, topic, partition) "
                "DO UPDATE SET next_offset = EXCLUDED.next_offset",
                [
                    (projector, topic, partition, end)
                    for (topic, partition), end in next_offsets.items()
                ],
            )

    def _fresh(self, rows: Iterable[StagedRow]) -> list[tuple[object, ...]]:
        """The rows the projections take, numbered: the first of each event id, and of each
        job's requests (as the live fold takes a request only while its job has none)."""
        fresh = []
        seen, requested = self._seen, self._requested
        for row in rows:
            event_id = row[_EVENT_ID]
            if event_id in seen:
                continue
            seen.add(event_id)
            if row[_TYPE] == "JobRequested":
                job_id = row[_JOB_ID]
                if job_id is None or job_id in requested:
                    continue
                requested.add(job_id)
                seq = None
            else:
                self._seq += 1
                seq = self._seq
            self._ord += 1
            fresh.append((self._ord, *row[_ORD + 1 :], seq))
        return fresh

    async def _fold(self, transaction: Transaction, rows: int) -> None:
        """The copied batch folded and archived, and committed."""
        position, last = self._archived
        done = await self._conn.fetchrow(
            "SELECT last_position, last_hash FROM rebuild_batch($1, $2)", position, last
        )
        await transaction.commit()
        assert done is not None
        self._archived = (done["last_position"], bytes(done["last_hash"]))
        self.applied += rows

    async def abandon(self) -> None:
        """Stop the batch being folded, if any: the caller gives up (and closes the connection,
        which ends its transaction)."""
        if self._folding is not None:
            folding, self._folding = self._folding, None
            folding.cancel()
            with contextlib.suppress(BaseException):
                await folding

    async def _folded(self) -> None:
        """The batch being folded, done."""
        if self._folding is not None:
            folding, self._folding = self._folding, None
            await folding
