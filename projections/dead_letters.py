"""The dead-letter recorder: the dead-letter topic projected into `dead_letters`.

It runs beside the projector under a projector name of its own ('deadletters'): no consumer
group, offsets in `projection_offsets` written in the same transaction as the rows, so a
crash neither loses nor doubles a letter, and a letter delivered twice is one row (its event
id). A letter that cannot be decoded is recorded as far as it can be, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from projections.session import DATABASE_LOST, GenerationChanged, GenerationWatch, hold_name
from projections.writer import ProjectionWriter
from schemas.codec import Codec, DecodeError
from streams.generation import broker_state
from streams.producer import event_id_for
from streams.settings import Settings

RECORDER_NAME = "deadletters"
# The code of a well-formed event of another type on the dead-letter topic.
WRONG_EVENT = "WRONG_EVENT"

_IDLE_POLL_MS = 200
_FETCH_RECORDS = 500
_RECONNECT_DELAY_S = 1.0
_STATEMENT_TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordedLetter:
    """One row of `dead_letters`."""

    event_id: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    error_code: str
    reason: str
    source: str
    key: bytes | None
    value: bytes
    occurred_at: datetime | None
    letter_topic: str
    letter_partition: int
    letter_offset: int
    # False for a letter that could not be read as a DeadLetter.
    readable: bool = True

    def row(self) -> tuple[object, ...]:
        return (
            self.event_id,
            self.origin_topic,
            self.origin_partition,
            self.origin_offset,
            self.error_code,
            self.reason,
            self.source,
            self.key,
            self.value,
            len(self.value),
            hashlib.sha256(self.value).hexdigest(),
            self.occurred_at,
            self.letter_topic,
            self.letter_partition,
            self.letter_offset,
        )


def recorded_letter(
    codec: Codec, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> RecordedLetter:
    """The row for the message at topic/partition/offset of the dead-letter topic; never raises.

    A letter that is not a decodable DeadLetter keeps its own place as its origin, its own
    bytes as the value, and why it could not be read as its error code and reason; its id
    follows from that place and those bytes, so a second delivery is the same row.
    """
    data = value or b""
    try:
        event_type, record = codec.decode(data)
    except DecodeError as error:
        return _unreadable(topic, partition, offset, key, data, error.code, str(error))
    if event_type != "DeadLetter":
        reason = f"a {event_type} on the dead-letter topic, not a DeadLetter"
        return _unreadable(topic, partition, offset, key, data, WRONG_EVENT, reason)
    return RecordedLetter(
        event_id=_event_id(record.get("event_id"), topic, partition, offset, data),
        origin_topic=_text(record["source_topic"]),
        origin_partition=int(record["source_partition"]),
        origin_offset=int(record["source_offset"]),
        error_code=_text(record["error_code"]),
        reason=_text(record["reason"]),
        source=_text(record["source"]),
        key=record["key"],
        value=record["value"],
        occurred_at=_moment(record["occurred_at"]),
        letter_topic=topic,
        letter_partition=partition,
        letter_offset=offset,
    )


def _unreadable(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    code: str,
    reason: str,
) -> RecordedLetter:
    return RecordedLetter(
        event_id=_position_id(topic, partition, offset, value),
        origin_topic=topic,
        origin_partition=partition,
        origin_offset=offset,
        error_code=code,
        reason=_text(f"the dead letter itself could not be read: {reason}"),
        source="",
        key=key,
        value=value,
        occurred_at=None,
        letter_topic=topic,
        letter_partition=partition,
        letter_offset=offset,
        readable=False,
    )


def _position_id(topic: str, partition: int, offset: int, value: bytes) -> str:
    fingerprint = hashlib.sha256(f"{topic}/{partition}/{offset}".encode() + value).hexdigest()
    return event_id_for("dlq-letter", fingerprint)


def _event_id(given: Any, topic: str, partition: int, offset: int, value: bytes) -> str:
    """The letter's own event id; one derived from where it lies when it carries no UUID."""
    try:
        return str(uuid.UUID(str(given)))
    except ValueError:
        return _position_id(topic, partition, offset, value)


def _text(value: Any) -> str:
    """Text a column can hold: PostgreSQL text has no NUL."""
    return str(value).replace("\x00", "\ufffd")


def _moment(value: Any) -> datetime | None:
    """An aware datetime, or None for a time out of every range (the row keeps the rest)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        return None


# Letters in one statement, one array per column; how many were new.
_INSERT = """
WITH inserted AS (
    INSERT INTO dead_letters (event_id, origin_topic, origin_partition, origin_offset,
        error_code, reason, source, key, value, value_size, value_sha256, occurred_at,
        letter_topic, letter_partition, letter_offset)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[],
        $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::int[], $11::text[],
        $12::timestamptz[], $13::text[], $14::int[], $15::bigint[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""
_STORE_OFFSET = """
INSERT INTO projection_offsets (projector, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (projector, topic, partition)
DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""


@dataclass
class RecorderStats:
    """Running totals since the recorder started."""

    letters: int = 0
    recorded: int = 0
    unreadable: int = 0


class DeadLetterRecorder:
    """Projects the dead-letter topic into `dead_letters` until stopped."""

    def __init__(self, settings: Settings, codec: Codec, name: str = RECORDER_NAME) -> None:
        self.settings = settings
        self.codec = codec
        self.name = name
        self.topic = settings.topics.deadletter
        self.stats = RecorderStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Record until `stop` is set; lost connections resume from the stored offsets."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except GenerationChanged as change:
                log.warning("dead-letter recorder: %s; starting a new session", change)
            except (KafkaError, *DATABASE_LOST) as exc:
                if stop.is_set():
                    break
                log.warning("dead-letter recorder lost a server (%r); resuming", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RECONNECT_DELAY_S)

    async def _session(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(
            self.settings.require_database(),
            command_timeout=_STATEMENT_TIMEOUT_S,
            server_settings={"application_name": f"stagecast-recorder-{self.name}"},
        )
        try:
            if not await hold_name(conn, self.name, stop, "dead-letter recorder"):
                return
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.require_kafka(),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
                client_id=f"{self.settings.app_id}-recorder-{self.name}",
            )
            try:
                await consumer.start()
                generation = await self._position(conn, consumer, stop)
                if generation is not None:
                    await self._record(conn, consumer, generation, stop)
            finally:
                await consumer.stop()
        except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            # A connection the server dropped while idle surfaces as a client-side error.
            if conn.is_closed():
                raise ConnectionError("the database closed the connection") from exc
            raise
        finally:
            await conn.close()

    async def _position(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> str | None:
        """Assign every partition at its stored offset; the broker generation read, or None."""
        partitions: list[TopicPartition] = []
        while not partitions:
            if stop.is_set():
                return None
            await consumer.topics()
            found = consumer.partitions_for_topic(self.topic) or set()
            partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
            if not partitions:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        generation = (await broker_state(consumer._client)).generation
        # Offsets and generations are kept as the projector keeps its own.
        offsets = ProjectionWriter(conn, self.name, generation)
        left = await offsets.enter_generation()
        if left is not None:
            log.warning(
                "dead-letter recorder: the broker started a new log (generation %s, was %s); "
                "reading the dead-letter topic from its start",
                generation,
                left,
            )
        stored = await offsets.offsets()
        consumer.assign(partitions)
        for tp in partitions:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        return generation

    async def _record(
        self,
        conn: asyncpg.Connection,
        consumer: AIOKafkaConsumer,
        generation: str,
        stop: asyncio.Event,
    ) -> None:
        watch = GenerationWatch(generation)
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=_IDLE_POLL_MS, max_records=_FETCH_RECORDS)
            await watch.check(consumer._client, bool(fetched))
            if not fetched:
                continue
            letters = [
                recorded_letter(self.codec, tp.topic, tp.partition, m.offset, m.key, m.value)
                for tp, messages in fetched.items()
                for m in messages
            ]
            next_offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
            await self._store(conn, letters, next_offsets)

    async def _store(
        self,
        conn: asyncpg.Connection,
        letters: Sequence[RecordedLetter],
        next_offsets: dict[TopicPartition, int],
    ) -> None:
        """The letters and where they end, in one transaction."""
        rows = [letter.row() for letter in letters]
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with conn.transaction():
            recorded: int = await conn.fetchval(_INSERT, *columns)
            await conn.executemany(
                _STORE_OFFSET,
                [(self.name, tp.topic, tp.partition, end) for tp, end in next_offsets.items()],
            )
        self.stats.letters += len(letters)
        self.stats.recorded += recorded
        self.stats.unreadable += sum(not letter.readable for letter in letters)
