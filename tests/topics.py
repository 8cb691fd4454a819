"""What topics hold, read from their start through the real broker: for integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from schemas.codec import default_codec
from streams.settings import Settings

Message: TypeAlias = ConsumerRecord[Any, Any]
Decoded = tuple[str, dict[str, Any]]


def _consumer(settings: Settings, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.require_kafka(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )


async def from_start(
    settings: Settings,
    topics: Sequence[str],
    until: Callable[[list[Message]], bool],
    within_s: float = 20.0,
) -> list[Message]:
    """The messages of `topics` from their start, read until `until` says enough (TimeoutError
    when it does not within `within_s`)."""
    consumer = _consumer(settings, *topics)
    await consumer.start()
    found: list[Message] = []
    try:
        async with asyncio.timeout(within_s):
            while not until(found):
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    found += messages
    finally:
        await consumer.stop()
    return found


async def events_from_start(
    settings: Settings,
    topics: Sequence[str],
    until: Callable[[list[Decoded]], bool],
    within_s: float = 20.0,
) -> list[Decoded]:
    """As `from_start`, decoded, with `until` judging the decoded events."""
    messages = await from_start(settings, topics, lambda found: until(decoded(found)), within_s)
    return decoded(messages)


async def held(settings: Settings, topic: str, quiet_s: float = 0.5) -> list[Message]:
    """Everything `topic` holds: every partition read from its start to at least the end
    ListOffsets names, then on until `quiet_s` passes with nothing more (Tansu's ListOffsets
    can name an end short of the last message)."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()
        numbers = sorted(consumer.partitions_for_topic(topic) or range(settings.partitions))
        partitions = [TopicPartition(topic, number) for number in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Message] = []
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + quiet_s
        async with asyncio.timeout(30):
            while loop.time() < quiet_until or any(
                [await consumer.position(tp) < ends[tp] for tp in partitions]
            ):
                fetched = await consumer.getmany(timeout_ms=100)
                if fetched:
                    quiet_until = loop.time() + quiet_s
                for messages in fetched.values():
                    found += messages
        return found
    finally:
        await consumer.stop()


def decoded(messages: Sequence[Message]) -> list[Decoded]:
    codec = default_codec()
    return [codec.decode(message.value or b"") for message in messages]
