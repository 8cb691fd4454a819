"""Replay: the projections rebuilt into a schema of their own, and compared with the live ones.

`replay()` migrates a separate, empty Postgres schema (the same migrations; an earlier replay
there is dropped) and rebuilds it in bulk (projections/rebuild.py): from the topics (from
their start, or from the offsets an event time maps to) as far as they reached when the replay
began, put in feed order once, or from the live schema's event archive, in the order the live
projector applied it. The live schema is only read. `compare()` then diffs every projected table
between the two, row by row on each table's key, leaving out what legitimately differs (feed
seq numbers, archive positions and hashes, the times rows were written, and log offsets,
which a log rebuilt by `republish()` assigns anew).

`republish()` is how history survives the loss of a memory-only broker: it produces every
archived event again, in archive order, to its topic and partition. What the new log already
holds comes again as copies the projector drops by event id, and a request for a job that
has ended is not run again (streams/dispatches.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from projections.batch import STAGED_COLUMNS, StagedRow
from projections.feed_order import WindowedMerge
from projections.migrate import migrate, quoted
from projections.rebuild import BATCH_ROWS, Rebuild, stage
from schemas.codec import Codec
from streams.generation import broker_state
from streams.settings import Settings

log = logging.getLogger(__name__)

LIVE_SCHEMA = "public"
_ARCHIVE_BATCH = 2_000
_HELD_WAIT_S = 10.0
# Messages per fetch while a replay reads the topics.
_FETCH_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class Table:
    """A projected table as compare() sees it: its key and the columns that must agree."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]


TABLES = (
    Table(
        "jobs",
        ("job_id",),
        (
            "tenant",
            "kind",
            "target",
            "status",
            "current_stage",
            "stages",
            "progress",
            "error",
            "labels",
            "idempotency_key",
            "spec",
            "requested_at",
            "accepted_at",
            "started_at",
            "finished_at",
        ),
    ),
    Table(
        "job_stages",
        ("job_id", "stage", "attempt"),
        ("status", "progress", "started_at", "finished_at", "duration_ms", "summary", "error"),
    ),
    Table(
        "job_events",
        ("event_id",),
        ("job_id", "type", "stage", "payload", "occurred_at", "topic", "partition"),
    ),
    Table(
        "metrics",
        ("event_id",),
        ("job_id", "stage", "attempt", "name", "step", "value", "labels", "occurred_at"),
    ),
    Table(
        "artifacts",
        ("event_id",),
        (
            "job_id",
            "stage",
            "attempt",
            "name",
            "media_type",
            "uri",
            "size_bytes",
            "sha256",
            "content",
            "occurred_at",
        ),
    ),
    Table(
        "event_archive",
        ("event_id",),
        ("topic", "partition", "type", "job_id", "occurred_at", "key", "value"),
    ),
)


@dataclass(frozen=True, slots=True)
class TableDiff:
    """One table's rows in both schemas, and the keys whose rows differ (the first few)."""

    table: str
    live_rows: int
    replay_rows: int
    mismatched: int
    # (key as text, where: "live only" | "replay only" | "differs")
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return self.mismatched == 0 and self.live_rows == self.replay_rows


@dataclass(frozen=True, slots=True)
class ReplayResult:
    schema: str
    # Messages read, and of them those skipped as the live projector skips them (undecodable
    # or unstorable: it dead-letters them).
    events: int
    skipped: int
    seconds: float


def replay_name(schema: str) -> str:
    return f"replay-{schema}"


def check_schema(schema: str) -> str:
    """A replay's schema: a plain lower-case identifier, never the live one."""
    if not schema.isidentifier() or schema != schema.lower() or len(schema) > 63:
        raise ValueError(f"a replay schema is a lower-case SQL identifier, not {schema!r}")
    if schema in (LIVE_SCHEMA, "pg_catalog", "information_schema") or schema.startswith("pg_"):
        raise ValueError(f"{schema!r} is not a schema a replay may write")
    return schema


async def replay(
    settings: Settings,
    codec: Codec,
    schema: str,
    *,
    source: str = "kafka",
    since: datetime | None = None,
) -> ReplayResult:
    """Rebuild the projections into `schema` (from the topics or the live archive)."""
    check_schema(schema)
    url = settings.require_database()
    await _empty_schema(url, schema)
    await migrate(url, schema=schema)
    started = time.monotonic()
    if source == "archive":
        if since is not None:
            raise ValueError("--from applies to a replay from kafka, not from the archive")
        events, skipped = await _from_archive(url, codec, schema)
    elif source == "kafka":
        events, skipped = await _from_topics(settings, codec, schema, since)
    else:
        raise ValueError(f"unknown replay source {source!r} (kafka or archive)")
    return ReplayResult(schema, events, skipped, time.monotonic() - started)


async def _empty_schema(url: str, schema: str) -> None:
    """Drop an earlier replay in `schema`; refuse a schema that holds anything else."""
    conn = await asyncpg.connect(url)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1",
            schema,
        )
        if not held:
            return
        replayed = await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quoted(schema)}.schema_migrations"
        )
        if not replayed:
            raise ValueError(f"schema {schema!r} holds tables that are not a replay's")
        await conn.execute(f"DROP SCHEMA {quoted(schema)} CASCADE")
    finally:
        await conn.close()


async def _from_topics(
    settings: Settings, codec: Codec, schema: str, since: datetime | None
) -> tuple[int, int]:
    """Every partition read from its start (or `since`) to where it ended when the replay
    began, put in feed order window by window, each window written while the next is read."""
    topics = settings.topics
    conn = await asyncpg.connect(
        settings.require_database(), server_settings={"search_path": schema}
    )
    rebuild = Rebuild(conn)
    try:
        await rebuild.start()
        async with _reader(settings, (topics.requests, topics.events, topics.progress)) as read:
            consumer = read.consumer
            ends = {tp: end for tp, (_, end) in read.offsets.items()}
            starts = {tp: first for tp, (first, _) in read.offsets.items()}
            if since is not None:
                moment = int(since.timestamp() * 1000)
                found = await consumer.offsets_for_times(dict.fromkeys(read.partitions, moment))
                starts = {tp: ends[tp] if at is None else at.offset for tp, at in found.items()}
            generation = (await broker_state(consumer._client)).generation
            since_ms = None if since is None else int(since.timestamp() * 1000)
            counts = await _read_partitions(consumer, codec, starts, ends, since_ms, rebuild)
        await rebuild.finish(
            replay_name(schema),
            generation,
            {(tp.topic, tp.partition): end for tp, end in ends.items()},
        )
    finally:
        await rebuild.abandon()
        await conn.close()
    return counts


async def _read_partitions(
    consumer: AIOKafkaConsumer,
    codec: Codec,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    since_ms: int | None,
    rebuild: Rebuild,
) -> tuple[int, int]:
    """Each partition read from its start to its end into `rebuild`; the messages read, and
    those skipped.

    With `since_ms`, a partition's messages count from its first one sent at or after it, as
    ListOffsets by time defines it: the embedded broker answers that request with the start of
    a partition that holds no such message, so the start it gave is only where reading begins.
    """
    merge = WindowedMerge(STAGED_COLUMNS, ends)
    left = set()
    for tp in ends:
        consumer.seek(tp, starts[tp])
        if starts[tp] < ends[tp]:
            left.add(tp)
        else:
            merge.end(tp)
    count = skipped = 0
    pending: list[StagedRow] = []
    begun = set(ends) if since_ms is None else set()
    while left:
        fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=_FETCH_RECORDS)
        for tp, messages in fetched.items():
            in_range = [m for m in messages if m.offset < ends[tp]]
            wanted = in_range
            if tp not in begun:
                first = next((n for n, m in enumerate(in_range) if m.timestamp >= since_ms), None)
                if first is not None:
                    begun.add(tp)
                wanted = [] if first is None else in_range[first:]
            count += len(wanted)
            staged = stage(
                codec,
                ((tp.topic, tp.partition, m.offset, m.key, m.value or b"") for m in wanted),
            )
            merge.add(tp, staged.rows)
            skipped += staged.unreadable
            if len(in_range) < len(messages) or await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
                merge.end(tp)
        # Windows follow each other in feed order: a batch may hold several, or part of one.
        pending.extend(merge.window())
        while len(pending) >= BATCH_ROWS or (pending and not left):
            await rebuild.add(pending[:BATCH_ROWS])
            del pending[:BATCH_ROWS]
    return count, skipped


@contextlib.asynccontextmanager
async def _reader(settings: Settings, topics: Sequence[str]) -> AsyncIterator[_Bounds]:
    """A consumer in no group assigned every partition of `topics`, and their bounds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.require_kafka(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        yield _Bounds(consumer, partitions, await _bounds(consumer, partitions))
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class _Bounds:
    consumer: AIOKafkaConsumer
    partitions: list[TopicPartition]
    # (first offset, end offset) of each partition
    offsets: dict[TopicPartition, tuple[int, int]]


async def _bounds(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, tuple[int, int]]:
    """Each partition's first and end offsets. The end is the larger of ListOffsets and the
    high-water mark of a fetch from the start: the embedded broker's ListOffsets was seen to
    answer one message per partition for full ones."""
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    starts = await consumer.beginning_offsets(partitions)
    listed = await consumer.end_offsets(partitions)
    deadline = time.monotonic() + _HELD_WAIT_S
    while time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=1)
        if all(consumer.highwater(tp) is not None for tp in partitions):
            break
    return {
        tp: (starts[tp], max(listed[tp], consumer.highwater(tp) or 0, starts[tp]))
        for tp in partitions
    }


async def _from_archive(url: str, codec: Codec, schema: str) -> tuple[int, int]:
    """The live archive's events, in the order they were applied, written in batches."""
    source = await asyncpg.connect(url)
    target = await asyncpg.connect(url, server_settings={"search_path": schema})
    count = skipped = 0
    rebuild = Rebuild(target)
    try:
        await rebuild.start()
        archive = f"{quoted(LIVE_SCHEMA)}.event_archive"
        async with source.transaction(readonly=True, isolation="repeatable_read"):
            cursor = await source.cursor(
                f'SELECT topic, partition, "offset", key, value FROM {archive} ORDER BY position'
            )
            while messages := await cursor.fetch(BATCH_ROWS):
                count += len(messages)
                staged = stage(codec, messages)
                skipped += staged.unreadable
                await rebuild.add(staged.rows)
            ends = await source.fetch(
                f'SELECT topic, partition, max("offset") + 1 AS next_offset FROM {archive} '
                "GROUP BY topic, partition"
            )
        await rebuild.finish(
            replay_name(schema),
            "archive",
            {(row["topic"], row["partition"]): row["next_offset"] for row in ends},
        )
    finally:
        await rebuild.abandon()
        await source.close()
        await target.close()
    return count, skipped


async def compare(url: str, schema: str, limit: int = 5) -> list[TableDiff]:
    """Every projected table in the live schema beside the replay's, table by table."""
    check_schema(schema)
    conn = await asyncpg.connect(url)
    try:
        return [await _diff(conn, table, schema, limit) for table in TABLES]
    finally:
        await conn.close()


async def _diff(conn: asyncpg.Connection, table: Table, schema: str, limit: int) -> TableDiff:
    key = ", ".join(table.key)
    columns = ", ".join(table.columns)

    def side(where: str) -> str:
        return (
            f"SELECT ROW({key})::text AS k, md5(ROW({columns})::text) AS h "
            f"FROM {quoted(where)}.{quoted(table.name)}"
        )

    differing = (
        f"SELECT coalesce(l.k, r.k) AS k, CASE WHEN l.k IS NULL THEN 'replay only' "
        f"WHEN r.k IS NULL THEN 'live only' ELSE 'differs' END AS how "
        f"FROM ({side(LIVE_SCHEMA)}) l FULL JOIN ({side(schema)}) r ON l.k = r.k "
        f"WHERE l.h IS DISTINCT FROM r.h"
    )
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        live = await conn.fetchval(f"SELECT count(*) FROM {quoted(LIVE_SCHEMA)}.{table.name}")
        replayed = await conn.fetchval(f"SELECT count(*) FROM {quoted(schema)}.{table.name}")
        mismatched = await conn.fetchval(f"SELECT count(*) FROM ({differing}) d")
        examples = await conn.fetch(f"{differing} ORDER BY 1 LIMIT {int(limit)}")
    return TableDiff(
        table.name, live, replayed, mismatched, [(row["k"], row["how"]) for row in examples]
    )


@dataclass(frozen=True, slots=True)
class Republished:
    events: int
    seconds: float
    # Per topic: messages on it before, and archived events sent to it.
    topics: dict[str, tuple[int, int]]


async def republish(settings: Settings, force: bool = False) -> Republished:
    """Every archived event produced again to its topic and partition, in archive order.

    Refused (ValueError) when the topics already hold at least as many messages as the archive
    has events for each of them, i.e. nothing was lost, unless `force`.
    """
    url = settings.require_database()
    conn = await asyncpg.connect(url)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(),
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=settings.max_message_bytes + 4096,
    )
    started = time.monotonic()
    try:
        archived = {
            row["topic"]: int(row["n"])
            for row in await conn.fetch(
                "SELECT topic, count(*) AS n FROM event_archive GROUP BY topic"
            )
        }
        if not archived:
            raise ValueError("the archive is empty: there is nothing to republish")
        held = await _messages_held(settings, list(archived))
        if not force and all(held.get(topic, 0) >= n for topic, n in archived.items()):
            raise ValueError(
                "the topics already hold as many messages as the archive has events "
                "(nothing was lost); --force republishes anyway"
            )
        await producer.start()
        partitions = {topic: producer.partitions_for(topic) for topic in archived}
        counts = await _send_archive(conn, producer, {t: await p for t, p in partitions.items()})
        await producer.flush()
    finally:
        await producer.stop()
        await conn.close()
    topics = {topic: (held.get(topic, 0), counts.get(topic, 0)) for topic in archived}
    return Republished(sum(counts.values()), time.monotonic() - started, topics)


async def _messages_held(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Messages on each topic now."""
    held: dict[str, int] = {}
    async with _reader(settings, topics) as read:
        for tp, (first, end) in read.offsets.items():
            held[tp.topic] = held.get(tp.topic, 0) + end - first
    return held


async def _send_archive(
    conn: asyncpg.Connection, producer: AIOKafkaProducer, partitions: dict[str, set[int]]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    query = "SELECT topic, partition, key, value FROM event_archive ORDER BY position"
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(query, prefetch=_ARCHIVE_BATCH):
            topic = row["topic"]
            # The same partition when the topic still has it: a job's events stay together.
            partition = row["partition"] if row["partition"] in partitions[topic] else None
            key = None if row["key"] is None else bytes(row["key"])
            await producer.send(topic, bytes(row["value"]), key=key, partition=partition)
            counts[topic] = counts.get(topic, 0) + 1
    return counts
