"""The one way events leave a process: encoded with the codec, keyed by job id, delivery awaited."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas.codec import Codec
from streams.generation import BrokerState, broker_state
from streams.settings import Settings

EVENT_NAMESPACE = uuid.UUID("5b0f6d0e-8f0c-4d51-9f3e-6a7b1c2d3e4f")
CONTENT_TYPE = b"application/vnd.apache.avro+binary; encoding=single-object"


def now_ms() -> int:
    return int(time.time() * 1000)


def event_id_for(*parts: object) -> str:
    """A deterministic event id: a retry that emits the same event emits the same id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join(str(part) for part in parts)))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: where, which type, and the record (common fields included)."""

    topic: str
    event_type: str
    record: Mapping[str, Any]
    key: bytes | None = None
    raw: bytes | None = None
    # None: the producer's partitioner chooses from the key (placed() chooses it beforehand).
    partition: int | None = None


class EventPublisher:
    """An aiokafka producer speaking our codec; idempotence off (the embedded broker lacks it)."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings = settings
        self.codec = codec
        # The broker generation this publisher found at start (see streams/generation.py).
        self.generation = ""
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.require_kafka(),
            client_id=f"{self.settings.app_id}-publisher",
            acks="all",
            enable_idempotence=False,
            linger_ms=self.settings.producer_linger_ms,
            max_request_size=self.settings.max_message_bytes + 1024,
        )
        await self._producer.start()
        self.generation = (await self.broker_state()).generation

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventPublisher used before start()")
        return self._producer

    def encoded(self, item: Outgoing) -> Outgoing:
        """The item with its bytes: a record the schema refuses raises ValueError here."""
        raw = item.raw if item.raw is not None else self.codec.encode(item.event_type, item.record)
        limit = self.settings.max_message_bytes
        if len(raw) > limit:
            raise ValueError(
                f"a {item.event_type} of {len(raw)} bytes is over the {limit}-byte limit"
            )
        return dataclasses.replace(item, raw=raw)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Send every item, then wait until the broker has acknowledged all of them."""
        futures = await self.send(items)
        if futures:
            await asyncio.gather(*futures)

    async def send(self, items: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        """Queue every item in order; the futures resolve when the broker acknowledges each."""
        futures = []
        for item in items:
            value = (
                item.raw
                if item.raw is not None
                else self.codec.encode(item.event_type, item.record)
            )
            headers = [("content-type", CONTENT_TYPE), ("event-type", item.event_type.encode())]
            futures.append(
                await self.producer.send(
                    item.topic,
                    value=value,
                    key=self._key(item),
                    headers=headers,
                    partition=item.partition,
                )
            )
        return futures

    async def placed(self, item: Outgoing, among: Collection[int] = ()) -> Outgoing:
        """The item with its partition chosen now, so where it lands is known before the broker
        acknowledges it: by the producer's own partitioner from the key, over those of `among`
        the topic has, or over all of them when it has none of those."""
        partitions = sorted(await self.producer.partitions_for(item.topic))
        preferred = [partition for partition in partitions if partition in among]
        choices = preferred or partitions
        return dataclasses.replace(
            item, partition=DefaultPartitioner()(self._key(item), choices, choices)
        )

    @staticmethod
    def _key(item: Outgoing) -> bytes:
        return item.key if item.key is not None else str(item.record.get("job_id", "")).encode()

    async def broker_state(self) -> BrokerState:
        """The broker's generation and topics now; raises when the broker does not answer."""
        return await broker_state(self.producer.client)
