"""The event archive's hash chain: what each row's hash covers, and how a chain is checked.

Each row's `hash` is SHA-256 over the previous row's hash (32 zero bytes for the first row)
and the row's own fields in a fixed binary layout: position, seq, event id, topic, partition,
offset, type, job id, event time (microseconds since the epoch) and the message's key and
value as they arrived. Integers are 8-byte big-endian (a missing one is -1), uuids their 16
bytes (a missing one 16 zero bytes), texts and byte strings length-prefixed (-1 for none).
Anyone with the rows can recompute it; no secret is involved, so the chain proves that rows
were not changed or removed after the fact by someone who could not also rewrite every later
row, and the feed's seq numbers (`job_events`) pin its end.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT = struct.Struct(">q")
_HEAD = struct.Struct(">qq16s")  # position, seq, event id
_PLACE = struct.Struct(">qq")  # partition, offset
_NO_UUID = bytes(16)


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One event as archived (without its chain columns)."""

    event_id: uuid.UUID
    seq: int | None
    topic: str
    partition: int
    offset: int
    type: str
    job_id: uuid.UUID | None
    occurred_at: datetime
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Link:
    """A row of the chain: the event, its position, and the hashes that chain it."""

    position: int
    event: ArchivedEvent
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Break:
    """The first row at which the chain does not hold, and why."""

    position: int
    event_id: str
    reason: str

    def __str__(self) -> str:
        return f"position {self.position} (event {self.event_id}): {self.reason}"


def _bytes(data: bytes | None) -> bytes:
    return _INT.pack(-1) if data is None else _INT.pack(len(data)) + data


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def link_bytes(
    position: int,
    seq: int | None,
    event_id: bytes,
    topic: str,
    partition: int,
    offset: int,
    event_type: str,
    job_id: bytes | None,
    occurred_at: datetime,
    key: bytes | None,
    value: bytes,
) -> bytes:
    """What a row's hash covers after the previous row's hash; uuids as their 16 bytes."""
    return b"".join(
        (
            _HEAD.pack(position, -1 if seq is None else seq, event_id),
            _bytes(topic.encode()),
            _PLACE.pack(partition, offset),
            _bytes(event_type.encode()),
            job_id if job_id is not None else _NO_UUID,
            _INT.pack(_micros(occurred_at)),
            _bytes(key),
            _bytes(value),
        )
    )


def digest(prev_hash: bytes, position: int, event: ArchivedEvent) -> bytes:
    """The hash of the row at `position` holding `event`, after a row hashed `prev_hash`."""
    link = link_bytes(
        position,
        event.seq,
        event.event_id.bytes,
        event.topic,
        event.partition,
        event.offset,
        event.type,
        None if event.job_id is None else event.job_id.bytes,
        event.occurred_at,
        event.key,
        event.value,
    )
    return hashlib.sha256(prev_hash + link).digest()


class ChainCheck:
    """Checks a chain one row at a time, in position order.

    A row whose hash is not the hash of its contents was changed (an UPDATE); a row whose
    prev_hash is not the hash of the row before it follows a removed or changed row (a DELETE
    shows here, at the row after the gap).
    """

    def __init__(self) -> None:
        self.previous = GENESIS
        self.rows = 0

    def check(self, link: Link) -> Break | None:
        self.rows += 1
        if link.prev_hash != self.previous:
            return Break(
                link.position,
                str(link.event.event_id),
                "its prev_hash is not the hash of the row before it "
                "(a row before it was deleted or changed)",
            )
        if digest(link.prev_hash, link.position, link.event) != link.hash:
            return Break(
                link.position,
                str(link.event.event_id),
                "its hash is not the hash of its contents (the row was changed after archiving)",
            )
        self.previous = link.hash
        return None


def first_break(links: Iterable[Link]) -> Break | None:
    """The first row of `links` (in position order) at which the chain does not hold."""
    check = ChainCheck()
    for link in links:
        broken = check.check(link)
        if broken is not None:
            return broken
    return None
