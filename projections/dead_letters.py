"""The dead-letter recorder: the dead-letter topic projected into `dead_letters`.

It runs beside the projector under a projector name of its own ('deadletters'), a
TopicRecorder (projections/recorder.py): a crash neither loses nor doubles a letter, and a
letter delivered twice is one row (its event id). A letter that cannot be decoded is recorded
as far as it can be, never skipped.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from projections.recorder import Fetched, TopicRecorder
from schemas.codec import Codec, DecodeError
from streams.producer import event_id_for
from streams.settings import Settings

RECORDER_NAME = "deadletters"
# The code of a well-formed event of another type on the dead-letter topic.
WRONG_EVENT = "WRONG_EVENT"


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


@dataclass
class RecorderStats:
    """Running totals since the recorder started."""

    letters: int = 0
    recorded: int = 0
    unreadable: int = 0


class DeadLetterRecorder(TopicRecorder):
    """Projects the dead-letter topic into `dead_letters` until stopped."""

    what = "dead-letter recorder"

    def __init__(self, settings: Settings, codec: Codec, name: str = RECORDER_NAME) -> None:
        super().__init__(settings, name, settings.topics.deadletter)
        self.codec = codec
        self.stats = RecorderStats()

    async def store(
        self, conn: asyncpg.Connection, fetched: Fetched, next_offsets: dict[TopicPartition, int]
    ) -> None:
        """The letters and where they end, in one transaction."""
        letters = [
            recorded_letter(self.codec, tp.topic, tp.partition, m.offset, m.key, m.value)
            for tp, messages in fetched.items()
            for m in messages
        ]
        rows = [letter.row() for letter in letters]
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with conn.transaction():
            recorded: int = await conn.fetchval(_INSERT, *columns)
            await self.store_offsets(conn, next_offsets)
        self.stats.letters += len(letters)
        self.stats.recorded += recorded
        self.stats.unreadable += sum(not letter.readable for letter in letters)
