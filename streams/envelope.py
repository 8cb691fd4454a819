"""What every event carries, and where an undecodable message goes instead of being dropped."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from streams.producer import Outgoing, event_id_for, now_ms
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a consumed message came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @classmethod
    def of(cls, message: Any) -> Origin:
        """The origin of a consumed message (aiokafka's or faust's: both name the same fields)."""
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value or b"",  # a tombstone is dead-lettered like any bad message
        )


def envelope(job_id: str, tenant: str, source: str, event_id: str) -> dict[str, Any]:
    """The common fields of ARCHITECTURE.md's wire format."""
    return {
        "event_id": event_id,
        "job_id": job_id,
        "tenant": tenant,
        "occurred_at": now_ms(),
        "source": source,
    }


# Room for a DeadLetter's own fields (the reason included) around the original key and value.
_LETTER_ROOM = 2048
_REASON_LIMIT = 500


def dead_letter(settings: Settings, origin: Origin, error_code: str, reason: str) -> Outgoing:
    """A DeadLetter keeping the original bytes, where they came from, and why they were refused.

    The event id follows from the origin and the bytes, so a letter published again after a
    crash is recognisably the same letter.
    """
    fingerprint = hashlib.sha256(
        f"{origin.topic}/{origin.partition}/{origin.offset}".encode() + origin.value
    ).hexdigest()
    reason = reason[:_REASON_LIMIT]
    value = origin.value
    if len(value) + len(origin.key or b"") + _LETTER_ROOM > settings.max_message_bytes:
        # A letter the broker refuses would stop whoever publishes it, at every retry.
        digest = hashlib.sha256(value).hexdigest()
        reason += f" (the {len(value)}-byte value, sha256 {digest}, is too big to keep)"
        value = b""
    record = envelope(
        "", settings.default_tenant, settings.source, event_id_for("dlq", fingerprint)
    )
    record.update(
        source_topic=origin.topic,
        source_partition=origin.partition,
        source_offset=origin.offset,
        key=origin.key,
        value=value,
        reason=reason,
        error_code=error_code,
    )
    return Outgoing(settings.topics.deadletter, "DeadLetter", record, key=origin.key or b"")


def error_info(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ErrorInfo record: details travel as JSON text."""
    return {"code": code, "message": message, "details": json.dumps(details or {})}
