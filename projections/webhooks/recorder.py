"""The webhook recorder: each event on the events topic becomes a delivery row for every
subscription it matches, in the transaction that stores the recorder's offsets.

A subscription matches an event of its tenant, of a type it asks for (all when it names none),
that occurred at or after its creation: a new subscription is not flooded with history, and a
re-read of the topic (a new broker generation) matches the same events again, which the
primary key (subscription, event id) keeps to one delivery each.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import TopicPartition

from projections.batch import MalformedEvent, jsonb_text, occurred_at_of
from projections.recorder import Fetched, TopicRecorder
from schemas.codec import Codec, DecodeError
from streams.settings import Settings

RECORDER_NAME = "webhooks"
# What the events topic carries: the types a subscription may ask for.
EVENT_TYPES = ("JobAccepted", "JobRejected", "StageChanged", "JobFinished")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What a delivery needs of one event."""

    event_id: uuid.UUID
    event_type: str
    tenant: str
    job_id: uuid.UUID | None
    occurred_at: datetime
    # The event as JSON, as the projector writes the SSE feed's data.
    body: str

    def row(self) -> tuple[object, ...]:
        return (
            self.event_id,
            self.event_type,
            self.tenant,
            self.job_id,
            self.occurred_at,
            self.body,
        )


def webhook_event(codec: Codec, value: bytes | None) -> WebhookEvent | None:
    """The event a message carries, or None for one that is not a storable event.

    Those are the projector's to dead-letter (it reads the same topic and sends each bad message
    once, with its origin); the recorder only skips and counts them.
    """
    try:
        event_type, record = codec.decode(value or b"")
        event_id = uuid.UUID(str(record["event_id"]))
        when = occurred_at_of(record["occurred_at"])
    except (DecodeError, MalformedEvent, ValueError, KeyError):
        return None
    # The codec lets only a UUID or, for some types, nothing through.
    job_id = uuid.UUID(record["job_id"]) if record["job_id"] else None
    return WebhookEvent(
        event_id=event_id,
        event_type=event_type,
        tenant=str(record["tenant"]).replace("\x00", "\ufffd"),
        job_id=job_id,
        occurred_at=when,
        body=jsonb_text(record),
    )


# The body goes through jsonb, as the feed's payload does, so a receiver gets the SSE feed's
# data text for text. How many deliveries were new.
_MATCH = """
WITH inserted AS (
    INSERT INTO webhook_deliveries
        (subscription_id, event_id, event_type, job_id, occurred_at, body)
    SELECT s.id, e.event_id, e.event_type, e.job_id, e.occurred_at, e.body::jsonb::text
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::text[])
        AS e(event_id, event_type, tenant, job_id, occurred_at, body)
    JOIN webhook_subscriptions s
        ON s.tenant = e.tenant AND s.active AND e.occurred_at >= s.created_at
        AND (cardinality(s.event_types) = 0 OR e.event_type = ANY (s.event_types))
    ON CONFLICT (subscription_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""


@dataclass
class WebhookRecorderStats:
    """Running totals since the recorder started."""

    messages: int = 0
    deliveries: int = 0
    skipped: int = 0


class WebhookRecorder(TopicRecorder):
    """Matches the events topic against the subscriptions until stopped; sets `wake` after a
    commit that added deliveries, so the sender in this process starts them at once."""

    what = "webhook recorder"

    def __init__(
        self, settings: Settings, codec: Codec, wake: asyncio.Event, name: str = RECORDER_NAME
    ) -> None:
        super().__init__(settings, name, settings.topics.events)
        self.codec = codec
        self.wake = wake
        self.stats = WebhookRecorderStats()

    async def store(
        self, conn: asyncpg.Connection, fetched: Fetched, next_offsets: dict[TopicPartition, int]
    ) -> None:
        """The batch's deliveries and where it ends, in one transaction."""
        messages = [m for batch in fetched.values() for m in batch]
        events = [e for m in messages if (e := webhook_event(self.codec, m.value)) is not None]
        async with conn.transaction():
            added = 0
            if events:
                columns = [list(c) for c in zip(*(e.row() for e in events), strict=True)]
                added = await conn.fetchval(_MATCH, *columns)
            await self.store_offsets(conn, next_offsets)
        self.stats.messages += len(messages)
        self.stats.deliveries += added
        self.stats.skipped += len(messages) - len(events)
        if added:
            self.wake.set()
