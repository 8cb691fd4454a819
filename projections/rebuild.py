"""A rebuild: the projections of a finite, ordered run of messages written into an empty schema
in large set-based batches.

A replay needs little of the live projector's care. Its source is the archive (already in the
order the live projector applied it) or the topics read to fixed ends and put in feed order
once (projections/feed_order.py), so there is no consistent cut to wait for; its schema is
empty and written by it alone, so copies are dropped here by event id (a set of every event id
seen: about a hundred bytes an event) and the feed's seq and the archive's positions and hashes
(the layout of projections/archive.py) are computed here. Rows go in large batches: the feed
and the archive by COPY straight into their tables, the rest through the same fold as a live
batch (fold_batch: migrations/010), while the next batch is decoded; the keys and indexes that
a batch would only slow down are built once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg
from asyncpg.transaction import Transaction

from projections.archive import GENESIS, link_bytes
from projections.batch import STAGED_COLUMNS, MalformedEvent, StagedRow, staged_row
from projections.migrate import quoted
from schemas.codec import Codec, DecodeError

# Rows per COPY and fold: large enough that per-statement costs vanish, small enough that a
# batch's fold overlaps the decoding of the next.
BATCH_ROWS = 10_000

# What the fold reads: the staged events with their seq (projector_new is all of them).
_SESSION_TABLES = """
CREATE TEMP TABLE projector_batch (LIKE staged_event, seq bigint) ON COMMIT DELETE ROWS;
CREATE TEMP VIEW projector_new AS SELECT * FROM projector_batch;
"""
# The fold needs no feed payload (it goes straight to job_events) nor message bytes.
_NOT_FOLDED = frozenset({"payload", "message_key", "message_value"})
_FOLDED_COLUMNS = (*(c for c in STAGED_COLUMNS if c not in _NOT_FOLDED), "seq")
_FEED_COLUMNS = (
    "seq",
    "event_id",
    "job_id",
    "type",
    "stage",
    "payload",
    "occurred_at",
    "topic",
    "partition",
    "offset",
)
_ARCHIVE_COLUMNS = (
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
_ORD = STAGED_COLUMNS.index("ord")
_EVENT_ID = STAGED_COLUMNS.index("event_id")
_JOB_ID = STAGED_COLUMNS.index("job_id")
_TYPE = STAGED_COLUMNS.index("type")
_TOPIC = STAGED_COLUMNS.index("topic")
_PARTITION = STAGED_COLUMNS.index("partition")
_OFFSET = STAGED_COLUMNS.index("offset")
_OCCURRED_AT = STAGED_COLUMNS.index("occurred_at")
_STAGE = STAGED_COLUMNS.index("stage")
_PAYLOAD = STAGED_COLUMNS.index("payload")
_KEY = STAGED_COLUMNS.index("message_key")
_VALUE = STAGED_COLUMNS.index("message_value")

# Written without a conflict check: every index and key is built after the last batch.
_UNCHECKED_TABLES = ("job_events", "event_archive")
# Written with upserts on their keys: only their other indexes wait for the end.
_FOLDED_TABLES = ("jobs", "job_stages", "metrics", "artifacts")

# Keys and indexes built once at the end: those of the tables written without a conflict
# check, and the plain indexes of the others; not those led by a column this rebuild numbers
# (seq, position), whose rows arrive in key order and so only ever extend their index.
_DEFERRED = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS index_def,
       c.conrelid::regclass::text AS tab, c.conname AS key, pg_get_constraintdef(c.oid) AS key_def
FROM pg_index i
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = ANY($1::regclass[])
  AND (i.indrelid = ANY($2::regclass[]) OR NOT i.indisunique)
  AND (SELECT a.attname FROM pg_attribute a
       WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) NOT IN ('seq', 'position')
ORDER BY c.conname NULLS LAST, 1
"""


@dataclass
class _Numbered:
    """A batch's fresh rows as the three COPYs take them."""

    folded: list[tuple[object, ...]] = field(default_factory=list)
    fed: list[tuple[object, ...]] = field(default_factory=list)
    archived: list[tuple[object, ...]] = field(default_factory=list)


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


def _uuid_bytes(text: str) -> bytes:
    """A uuid's 16 bytes from its text (the codec has checked that it is one)."""
    return bytes.fromhex(text.replace("-", ""))


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
        # Each job's id as bytes, for the hashes: a job has dozens of events.
        self._job_bytes: dict[str, bytes] = {}
        self._ord = 0
        self._seq = 0
        self._archive_head = GENESIS
        self._folding: asyncio.Task[None] | None = None
        # The statements that build the deferred keys and indexes again, in order.
        self._deferred: list[str] = []

    async def start(self) -> None:
        """Session tables; the deferred indexes and keys dropped (kept to build at the end)."""
        conn = self._conn
        # A rebuild can be run again from its source: a commit need not wait for the disk.
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET work_mem = '64MB'")
        await conn.execute(_SESSION_TABLES)
        everything = [*_UNCHECKED_TABLES, *_FOLDED_TABLES]
        deferred = await conn.fetch(_DEFERRED, everything, list(_UNCHECKED_TABLES))
        async with conn.transaction():
            for index in deferred:
                if index["key"] is None:
                    await conn.execute(f"DROP INDEX {index['name']}")
                    self._deferred.append(index["index_def"])
                else:
                    table, key = index["tab"], quoted(index["key"])
                    await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {key}")
                    self._deferred.append(
                        f"ALTER TABLE {table} ADD CONSTRAINT {key} {index['key_def']}"
                    )

    async def add(self, rows: Iterable[StagedRow]) -> None:
        """Rows in feed order: copied now, folded while the caller prepares the next ones."""
        numbered = self._fresh(rows)
        await self._folded()
        if not numbered.folded:
            return
        conn = self._conn
        transaction = conn.transaction()
        await transaction.start()
        try:
            # Copied before returning: a COPY needs this process to feed it, the fold not. The
            # feed and the archive go straight to their tables, the rest to the fold.
            await conn.copy_records_to_table(
                "job_events", records=numbered.fed, columns=_FEED_COLUMNS
            )
            await conn.copy_records_to_table(
                "event_archive", records=numbered.archived, columns=_ARCHIVE_COLUMNS
            )
            await conn.copy_records_to_table(
                "projector_batch", records=numbered.folded, columns=_FOLDED_COLUMNS
            )
        except BaseException:
            await transaction.rollback()
            raise
        self._folding = asyncio.create_task(self._fold(transaction))
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

    def _fresh(self, rows: Iterable[StagedRow]) -> _Numbered:
        """The rows the projections take, numbered and chained: the first of each event id, and
        of each job's requests (as the live fold takes a request only while its job has none).

        The archive's hashes are computed here, where they cost a third of what they cost in
        PostgreSQL, which is the busier of the two processes in a rebuild.
        """
        numbered = _Numbered()
        folded, fed, archived = numbered.folded, numbered.fed, numbered.archived
        seen, requested = self._seen, self._requested
        previous = self._archive_head
        for row in rows:
            event_id = row[_EVENT_ID]
            if event_id in seen:
                continue
            seen.add(event_id)
            event_type, job_id = row[_TYPE], row[_JOB_ID]
            seq: int | None = None
            if event_type == "JobRequested":
                if job_id is None or job_id in requested:
                    continue
                requested.add(job_id)
            else:
                self._seq += 1
                seq = self._seq
            self._ord += 1
            position = self._ord
            topic, partition, offset = row[_TOPIC], row[_PARTITION], row[_OFFSET]
            occurred_at, key, value = row[_OCCURRED_AT], row[_KEY], row[_VALUE]
            link = link_bytes(
                position,
                seq,
                _uuid_bytes(event_id),
                topic,
                partition,
                offset,
                event_type,
                None if job_id is None else self._job_id_bytes(job_id),
                occurred_at,
                key,
                value,
            )
            digest = hashlib.sha256(previous + link).digest()
            folded.append((position, *row[_ORD + 1 : _PAYLOAD], *row[_PAYLOAD + 1 : _KEY], seq))
            if seq is not None:
                fed.append(
                    (
                        seq,
                        event_id,
                        job_id,
                        event_type,
                        row[_STAGE],
                        row[_PAYLOAD],
                        occurred_at,
                        topic,
                        partition,
                        offset,
                    )
                )
            archived.append(
                (
                    position,
                    seq,
                    event_id,
                    topic,
                    partition,
                    offset,
                    event_type,
                    job_id,
                    occurred_at,
                    key,
                    value,
                    previous,
                    digest,
                )
            )
            previous = digest
        self._archive_head = previous
        return numbered

    def _job_id_bytes(self, job_id: str) -> bytes:
        known = self._job_bytes.get(job_id)
        if known is None:
            known = self._job_bytes[job_id] = _uuid_bytes(job_id)
        return known

    async def _fold(self, transaction: Transaction) -> None:
        """The copied batch folded, and committed."""
        await self._conn.execute("SELECT fold_batch()")
        await transaction.commit()

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
