"""Dead letters reach PostgreSQL: `dead_letters` and `dash_dead_letters`, once per letter."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from projections.dead_letters import RECORDER_NAME, DeadLetterRecorder
from schemas.codec import default_codec
from streams.envelope import Origin, dead_letter
from streams.producer import Outgoing
from streams.settings import Settings
from tests.conftest import Pipeline, RunningStack
from tests.integration.test_dead_letters import dead_letters
from tests.integration.test_projector import eventually, publish

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    return await asyncio.to_thread(stack.isolated)


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.require_database())
    try:
        yield conn
    finally:
        await conn.close()


async def produce(settings: Settings, items: list[tuple[str, bytes]]) -> list[RecordMetadata]:
    """Raw values onto topics, as a system that does not speak our codec would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    try:
        return [await producer.send_and_wait(t, value, key=b"junk") for t, value in items]
    finally:
        await producer.stop()


async def letters_holding(settings: Settings, values: set[bytes]) -> list[dict[str, Any]]:
    """The letters on the dead-letter topic that hold `values`, once there is one for each."""
    while True:
        found = [x for x in await dead_letters(settings, 0) if x["value"] in values]
        if len(found) >= len(values):
            return found
        await asyncio.sleep(0.2)


async def recorded_past(conn: asyncpg.Connection, meta: RecordMetadata) -> None:
    """Wait until the recorder committed past the message `meta` names."""

    async def past() -> bool:
        done = await conn.fetchval(
            "SELECT next_offset FROM projection_offsets WHERE projector = $1 "
            "AND topic = $2 AND partition = $3",
            RECORDER_NAME,
            meta.topic,
            meta.partition,
        )
        return done is not None and done > meta.offset

    await eventually(past, within_s=60)


async def test_garbage_on_events_and_requests_is_recorded_once_with_its_reason(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    events, requests = settings.topics.events, settings.topics.requests
    garbage = {topic: f"garbage {uuid.uuid4()}".encode() for topic in (events, requests)}
    landed = dict(zip(garbage, await produce(settings, list(garbage.items())), strict=True))
    async with connected(settings) as conn:
        # The letters themselves, as the dispatcher and the projector sent them.
        letters = await asyncio.wait_for(letters_holding(settings, set(garbage.values())), 60)
        # The same letters delivered a second time: still one row each.
        again = await produce(
            settings,
            [
                (settings.topics.deadletter, default_codec().encode("DeadLetter", letter))
                for letter in letters
            ],
        )
        for meta in again:
            await recorded_past(conn, meta)
        rows = await conn.fetch(
            "SELECT * FROM dead_letters WHERE value = ANY($1::bytea[])", list(garbage.values())
        )
        assert len(rows) == len(garbage)
        for row in rows:
            topic = row["origin_topic"]
            meta = landed[topic]
            assert row["value"] == garbage[topic]
            assert (row["origin_partition"], row["origin_offset"]) == (meta.partition, meta.offset)
            assert row["error_code"] == "BAD_MARKER"
            assert "not 'c301'" in row["reason"]
            assert row["key"] == b"junk"
            assert row["value_size"] == len(garbage[topic])
            assert row["occurred_at"] is not None
        for topic in garbage:
            view = await conn.fetchrow(
                "SELECT * FROM dash_dead_letters WHERE origin_topic = $1 AND error_code = $2",
                topic,
                "BAD_MARKER",
            )
            counted = await conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE origin_topic = $1 AND error_code = $2",
                topic,
                "BAD_MARKER",
            )
            assert view is not None
            assert view["letters"] == counted >= 1
            assert view["first_seen"] <= view["last_seen"]


async def test_an_undecodable_letter_is_recorded_and_the_recorder_goes_on(
    settings: Settings,
) -> None:
    # Topics of its own: the other tests read the shared dead-letter topic as letters only.
    deadletter = settings.topics.deadletter
    bad_letter = f"not a letter {uuid.uuid4()}".encode()
    other_event = default_codec().encode(
        "DeadLetter",
        dead_letter(
            settings,
            Origin(settings.topics.progress, 0, 7, None, f"after {uuid.uuid4()}".encode()),
            "TRUNCATED",
            "a letter sent after the bad one",
        ).record,
    )
    bad, after = await produce(settings, [(deadletter, bad_letter), (deadletter, other_event)])
    async with connected(settings) as conn:
        await record_until(settings, conn, 2, letters=2)
        row = await conn.fetchrow("SELECT * FROM dead_letters WHERE value = $1", bad_letter)
        assert row is not None
        assert (row["origin_topic"], row["origin_partition"], row["origin_offset"]) == (
            deadletter,
            bad.partition,
            bad.offset,
        )
        assert row["error_code"] == "BAD_MARKER"
        assert row["reason"].startswith("the dead letter itself could not be read")
        following = await conn.fetchrow(
            "SELECT * FROM dead_letters WHERE letter_topic = $1 AND letter_partition = $2 "
            "AND letter_offset = $3",
            deadletter,
            after.partition,
            after.offset,
        )
        assert following is not None
        assert (following["origin_topic"], following["error_code"]) == (
            settings.topics.progress,
            "TRUNCATED",
        )


async def test_a_recorder_reading_letters_again_neither_doubles_nor_loses_one(
    settings: Settings,
) -> None:
    def letter(n: int) -> Outgoing:
        origin = Origin(settings.topics.events, n % 2, n, None, f"bad {n}".encode())
        return dead_letter(settings, origin, "BAD_MARKER", f"bad message {n}")

    # The first letter twice in a row: one row.
    await publish(settings, [letter(0)] + [letter(n) for n in range(5)])
    async with connected(settings) as conn:
        await record_until(settings, conn, 5, letters=6)
        # Read again from the start (a crash before the next commit, or a second delivery).
        await conn.execute("DELETE FROM projection_offsets WHERE projector = $1", RECORDER_NAME)
        await publish(settings, [letter(n) for n in range(5, 7)])
        recorder = await record_until(settings, conn, 7, letters=8)
        assert (recorder.stats.letters, recorder.stats.recorded) == (8, 2)


async def test_letters_of_a_new_broker_generation_are_read_from_the_start(
    settings: Settings,
) -> None:
    origins = [Origin(settings.topics.events, 0, n, b"same", f"x {n}".encode()) for n in range(3)]
    # One key: every letter in one partition, at offsets 0, 1, 2.
    await publish(settings, [dead_letter(settings, o, "BAD_MARKER", "bad") for o in origins])
    async with connected(settings) as conn:
        # What a recorder of the broker's previous life left: an offset into a lost log.
        await conn.execute(
            "INSERT INTO projector_generations VALUES ($1, 'gone-cluster', now())", RECORDER_NAME
        )
        await conn.executemany(
            "INSERT INTO projection_offsets (projector, topic, partition, next_offset) "
            "VALUES ($1, $2, $3, 2)",
            [(RECORDER_NAME, settings.topics.deadletter, p) for p in range(settings.partitions)],
        )
        await record_until(settings, conn, 3, letters=3)
        generation = await conn.fetchval(
            "SELECT generation FROM projector_generations WHERE projector = $1", RECORDER_NAME
        )
        assert generation != "gone-cluster"


async def record_until(
    settings: Settings, conn: asyncpg.Connection, rows: int, letters: int
) -> DeadLetterRecorder:
    """Run a recorder in this event loop until it committed past `letters` letters and
    recorded `rows` rows; then there must be no more rows."""
    recorder = DeadLetterRecorder(settings, default_codec())
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    try:

        async def read_all() -> bool:
            stored = await conn.fetchval(
                "SELECT sum(next_offset) FROM projection_offsets WHERE projector = $1",
                RECORDER_NAME,
            )
            recorded = await conn.fetchval("SELECT count(*) FROM dead_letters")
            return bool(stored == letters and recorded >= rows)

        await eventually(read_all)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == rows
    return recorder
