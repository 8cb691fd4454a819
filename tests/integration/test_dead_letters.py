"""Every topic's undecodable messages reach the dead-letter topic once, from whoever reads it."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from projections.projector import Projector
from schemas.codec import default_codec
from streams.producer import EventPublisher, Outgoing
from streams.settings import Settings
from tests.conftest import Pipeline, RunningStack
from tests.integration.test_projector import (
    consumed,
    event,
    eventually,
    outgoing,
    running,
    spawn_projector,
    successful_job,
)
from tests.topics import decoded, from_start, held

pytestmark = pytest.mark.integration

Letter = dict[str, Any]
Where = tuple[str, int, int]  # topic, partition, offset


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    return await asyncio.to_thread(stack.isolated)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.require_database())
    yield conn
    await conn.close()


async def publish_at(settings: Settings, items: list[Outgoing]) -> list[Where]:
    """Publish in order; where each item landed."""
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        landed = await asyncio.gather(*await publisher.send(items))
    finally:
        await publisher.stop()
    return [(meta.topic, meta.partition, meta.offset) for meta in landed]


async def dead_letters(settings: Settings, at_least: int, within_s: float = 30) -> list[Letter]:
    """Every DeadLetter on the topic, read to its end once at least `at_least` are there."""
    topic = settings.topics.deadletter
    await from_start(settings, [topic], lambda found: len(found) >= at_least, within_s)
    found = decoded(await held(settings, topic))
    assert {kind for kind, _ in found} <= {"DeadLetter"}
    return [record for _, record in found]


def where(letter: Letter) -> Where:
    return letter["source_topic"], letter["source_partition"], letter["source_offset"]


def raw(settings: Settings, topic: str, value: bytes, key: bytes) -> Outgoing:
    return Outgoing(topic, "Garbage", {}, key=key, raw=value)


async def test_the_projector_dead_letters_what_it_cannot_store_and_projects_the_rest(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = default_codec()
    job_id = str(uuid.uuid4())
    good = outgoing(settings, successful_job(job_id))
    _, late = event("ProgressReported", job_id, 0, stage="parse", attempt=1, percent=1.0)
    late["occurred_at"] = 10**17  # decodes, but no timestamp PostgreSQL can store
    valid = codec.encode("JobFinished", good[-1].record)
    key = job_id.encode()
    events, progress = settings.topics.events, settings.topics.progress
    bad = {
        (events, "BAD_MARKER"): raw(settings, events, b"not avro at all", key),
        (events, "TRUNCATED"): raw(settings, events, valid[:-3], key),
        (events, "UNKNOWN_FINGERPRINT"): raw(settings, events, b"\xc3\x01" + bytes(8) + b"x", key),
        (progress, "MALFORMED_EVENT"): raw(
            settings, progress, codec.encode("ProgressReported", late), b"other"
        ),
        (progress, "BAD_MARKER"): raw(settings, progress, b"{json: no}", key),
    }
    # The dispatcher dead-letters bad requests; the projector must not do it a second time.
    bad_request = raw(settings, settings.topics.requests, b"not a request", key)
    items = [*good[:5], *bad.values(), bad_request, *good[5:]]
    landed = dict(zip((id(item) for item in items), await publish_at(settings, items), strict=True))
    async with running(settings) as projector:
        await consumed(projector, len(items))

    letters = await dead_letters(settings, len(bad))
    assert len(letters) == len(bad)
    assert projector.stats.dead_lettered == len(bad)
    assert projector.stats.undecodable == len(bad) + 1
    by_where = {where(letter): letter for letter in letters}
    for (topic, code), item in bad.items():
        letter = by_where[landed[id(item)]]
        assert letter["source_topic"] == topic
        assert (letter["value"], letter["key"], letter["error_code"]) == (item.raw, item.key, code)
        assert letter["reason"]
    assert "out of range" in by_where[landed[id(bad[(progress, "MALFORMED_EVENT")])]]["reason"]
    assert await db.fetchval("SELECT count(*) FROM job_events") == len(good) - 1
    assert await db.fetchval("SELECT status FROM jobs") == "SUCCEEDED"

    # A replay reads the same bytes under another name and sends no letter again.
    replay = Projector(settings, codec, name="replay")
    stop = asyncio.Event()
    task = asyncio.create_task(replay.run(stop))
    try:
        await consumed(replay, len(items))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert replay.stats.undecodable == len(bad) + 1
    assert replay.stats.dead_lettered == 0
    assert len(await dead_letters(settings, len(bad))) == len(bad)


async def test_a_projector_killed_mid_stream_loses_no_dead_letter(
    settings: Settings, db: asyncpg.Connection
) -> None:
    jobs = [str(uuid.uuid4()) for _ in range(40)]
    items: list[Outgoing] = []
    for number, job_id in enumerate(jobs):
        items += outgoing(settings, successful_job(job_id))
        for topic in (settings.topics.events, settings.topics.progress):
            items.append(raw(settings, topic, f"garbage {number} {topic}".encode(), b"k"))
    expected = sum(item.event_type not in ("JobRequested", "Garbage") for item in items)
    process = spawn_projector(settings)
    try:

        async def produce_slowly() -> list[Where]:
            landed: list[Where] = []
            for start in range(0, len(items), 50):
                landed += await publish_at(settings, items[start : start + 50])
                await asyncio.sleep(0.05)
            return landed

        producing = asyncio.create_task(produce_slowly())

        async def some_projected() -> bool:
            return bool(await db.fetchval("SELECT count(*) > 100 FROM job_events"))

        await eventually(some_projected)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        landed = await producing
        assert await db.fetchval("SELECT count(*) FROM job_events") < expected
        process = spawn_projector(settings)

        async def all_committed() -> bool:
            done = await db.fetchval(
                "SELECT sum(next_offset) FROM projection_offsets WHERE projector = 'main'"
            )
            return bool(done == len(items))

        # Every batch's letters are acknowledged before its offsets are committed.
        await eventually(all_committed, within_s=60)
        assert await db.fetchval("SELECT count(*) FROM job_events") == expected
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)

    garbage = {
        spot: item.raw for spot, item in zip(landed, items, strict=True) if item.raw is not None
    }
    letters = await dead_letters(settings, len(garbage))
    assert {where(letter) for letter in letters} == set(garbage)
    assert all(letter["value"] == garbage[where(letter)] for letter in letters)
    # A letter sent again after the kill is the same letter: one event id per message.
    ids = {where(letter): letter["event_id"] for letter in letters}
    assert len(set(ids.values())) == len(garbage)
    assert all(ids[where(letter)] == letter["event_id"] for letter in letters)


async def projected_past(pipeline: Pipeline, spot: Where) -> None:
    """Wait until the live projector committed past `spot`."""
    topic, partition, offset = spot
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:

        async def past() -> bool:
            done = await conn.fetchval(
                "SELECT next_offset FROM projection_offsets WHERE projector = 'main' "
                "AND topic = $1 AND partition = $2",
                topic,
                partition,
            )
            return done is not None and done > offset

        await eventually(past)
    finally:
        await conn.close()


async def test_garbage_on_any_projected_topic_is_dead_lettered_exactly_once(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    topics = (settings.topics.requests, settings.topics.events, settings.topics.progress)
    garbage = {topic: f"garbage {uuid.uuid4()}".encode() for topic in topics}
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    try:
        landed = {
            topic: await producer.send_and_wait(topic, value, key=b"junk")
            for topic, value in garbage.items()
        }
    finally:
        await producer.stop()
    for meta in landed.values():
        await projected_past(pipeline, (meta.topic, meta.partition, meta.offset))

    async def letters_for(value: bytes) -> list[Letter]:
        while True:
            found = [x for x in await dead_letters(settings, 0) if x["value"] == value]
            if found:
                return found
            await asyncio.sleep(0.2)

    for topic, value in garbage.items():
        letters = await asyncio.wait_for(letters_for(value), 30)
        assert [where(letter) for letter in letters] == [
            (topic, landed[topic].partition, landed[topic].offset)
        ], f"{topic} dead-lettered {len(letters)} times"
        assert letters[0]["key"] == b"junk"
        assert letters[0]["error_code"] == "BAD_MARKER"
