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


def envelope(job_id: str, tenant: str, source: str, event_id: str) -> dict[str, Any]:
    """The common fields of ARCHITECTURE.md's wire format."""
    return {
        "event_id": event_id,
        "job_id": job_id,
        "tenant": tenant,
        "occurred_at": now_ms(),
        "source": source,
    }


def dead_letter(settings: Settings, origin: Origin, error_code: str, reason: str) -> Outgoing:
    """A DeadLetter keeping the original bytes, where they came from, and why they were refused."""
    fingerprint = hashlib.sha256(
        f"{origin.topic}/{origin.partition}/{origin.offset}".encode() + origin.value
    ).hexdigest()
    record = envelope(
        "", settings.default_tenant, settings.source, event_id_for("dlq", fingerprint)
    )
    record.update(
        source_topic=origin.topic,
        source_partition=origin.partition,
        source_offset=origin.offset,
        key=origin.key,
        value=origin.value,
        reason=reason,
        error_code=error_code,
    )
    return Outgoing(settings.topics.deadletter, "DeadLetter", record, key=origin.key or b"")


def error_info(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ErrorInfo record: details travel as JSON text."""
    return {"code": code, "message": message, "details": json.dumps(details or {})}
