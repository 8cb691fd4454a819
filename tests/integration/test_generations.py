"""Broker generations: a log that started over is noticed; what Postgres accepted is re-driven."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from api.outbox import OutboxRelay
from schemas.codec import default_codec
from streams.producer import EventPublisher
from streams.settings import Settings
from tests.conftest import RunningStack
from tests.integration.test_projector import (
    accepted,
    consumed,
    outgoing,
    publish,
    requested,
    running,
    stage_changed,
    successful_job,
)
from tests.topics import Decoded, events_from_start

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    return await asyncio.to_thread(stack.isolated)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.require_database())
    yield conn
    await conn.close()


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[EventPublisher]:
    started = EventPublisher(settings, default_codec())
    await started.start()
    yield started
    await started.stop()


async def test_offsets_of_another_generation_are_dropped_and_every_partition_read_again(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    items = outgoing(settings, successful_job(str(uuid.uuid4())))
    await publish(settings, items)
    # What a projector of the broker's previous life left: offsets far into a lost log.
    await db.execute("INSERT INTO projector_generations VALUES ('main', 'gone-cluster', now())")
    for topic in (settings.topics.requests, settings.topics.events, settings.topics.progress):
        for partition in range(settings.partitions):
            await db.execute(
                "INSERT INTO projection_offsets (projector, topic, partition, next_offset) "
                "VALUES ('main', $1, $2, 5000)",
                topic,
                partition,
            )
    with caplog.at_level(logging.WARNING, logger="projections.projector"):
        async with running(settings) as projector:
            await consumed(projector, len(items))
    assert projector.stats.applied == len(items)
    assert await db.fetchval("SELECT status FROM jobs") == "SUCCEEDED"
    assert "the broker started a new log" in caplog.text
    assert "was gone-cluster" in caplog.text
    generation = await db.fetchval("SELECT generation FROM projector_generations")
    assert generation not in (None, "gone-cluster")
    assert max((await db.fetchval("SELECT max(next_offset) FROM projection_offsets")), 0) < 5000


async def test_a_stored_offset_past_the_end_of_its_partition_reads_it_from_the_start(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = str(uuid.uuid4())
    history = outgoing(settings, successful_job(job_id))
    await publish(settings, history[:2])
    async with running(settings) as projector:
        await consumed(projector, 2)
    # Same generation, but the topic was created again: its offsets start at zero.
    await db.execute("UPDATE projection_offsets SET next_offset = next_offset + 1000")
    await publish(settings, history[2:])
    with caplog.at_level(logging.WARNING, logger="projections.projector"):
        async with running(settings) as restarted:
            await consumed(restarted, len(history) - 2)
    assert "before the stored offset; reading it from its start" in caplog.text
    assert await db.fetchval("SELECT status FROM jobs") == "SUCCEEDED"
    assert await db.fetchval("SELECT count(*) FROM job_events") == len(history) - 1


async def test_requests_read_from_the_log_are_kept_in_the_outbox_as_sent(
    settings: Settings, db: asyncpg.Connection, publisher: EventPublisher
) -> None:
    job_id = str(uuid.uuid4())
    item = outgoing(settings, [requested(job_id)])[0]
    sent = publisher.encoded(item)
    await publisher.publish([sent])
    async with running(settings) as projector:
        await consumed(projector, 1)
    row = await db.fetchrow("SELECT * FROM request_outbox WHERE job_id = $1", uuid.UUID(job_id))
    assert row is not None
    assert bytes(row["request"]) == sent.raw
    assert row["tenant"] == "acme"
    assert row["published_generation"] == publisher.generation


async def test_relay_publishes_a_request_that_was_accepted_but_never_published(
    settings: Settings, db: asyncpg.Connection, publisher: EventPublisher
) -> None:
    job_id = str(uuid.uuid4())
    raw = publisher.encoded(outgoing(settings, [requested(job_id)])[0]).raw
    await db.execute(
        "INSERT INTO request_outbox (job_id, tenant, request, accepted_at) "
        "VALUES ($1, 'acme', $2, now() - interval '1 minute')",
        uuid.UUID(job_id),
        raw,
    )
    pool = await asyncpg.create_pool(settings.require_database(), min_size=1, max_size=2)
    try:
        relay = OutboxRelay(pool, publisher, settings)
        first = await relay.relay_once()
        again = await relay.relay_once()
    finally:
        await pool.close()
    assert first is not None and first.published == 1
    assert again is not None and again.published == 0
    [(event_type, record)] = await events_from_start(settings, [settings.topics.requests], any)
    assert (event_type, record["job_id"]) == ("JobRequested", job_id)
    published = await db.fetchval(
        "SELECT published_generation FROM request_outbox WHERE job_id = $1", uuid.UUID(job_id)
    )
    assert published == publisher.generation


async def test_relay_publishes_again_a_request_no_dispatcher_took_and_not_one_it_took(
    settings: Settings, db: asyncpg.Connection, publisher: EventPublisher
) -> None:
    skipped, taken = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (skipped, taken):
        raw = publisher.encoded(outgoing(settings, [requested(job_id)])[0]).raw
        # On the broker of this generation two minutes ago; only `taken` was dispatched.
        await db.execute(
            "INSERT INTO request_outbox (job_id, tenant, request, accepted_at, "
            "published_generation, published_at) "
            "VALUES ($1, 'acme', $2, now() - interval '2 minutes', $3, "
            "now() - interval '2 minutes')",
            uuid.UUID(job_id),
            raw,
            publisher.generation,
        )
    await db.execute(
        "INSERT INTO job_dispatches (job_id, request_sha256, generation, dispatched) "
        "VALUES ($1, 'x', $2, true)",
        uuid.UUID(taken),
        publisher.generation,
    )
    pool = await asyncpg.create_pool(settings.require_database(), min_size=1, max_size=2)
    try:
        relay = OutboxRelay(pool, publisher, settings)
        first = await relay.relay_once()
        # Published again just now: not again until the grace has passed once more.
        again = await relay.relay_once()
    finally:
        await pool.close()
    assert first is not None and first.published == 1
    assert again is not None and again.published == 0
    [(event_type, record)] = await events_from_start(settings, [settings.topics.requests], any)
    assert (event_type, record["job_id"]) == ("JobRequested", skipped)


async def test_relay_redrives_unfinished_jobs_of_a_lost_generation_and_ends_those_it_cannot(
    settings: Settings, db: asyncpg.Connection, publisher: EventPublisher
) -> None:
    redriven, finished, lost = (str(uuid.uuid4()) for _ in range(3))
    # The previous generation's log: three jobs got as far as these events before it was lost.
    events = [
        *[e for job in (redriven, finished) for e in (requested(job), accepted(job, 5, ["parse"]))],
        stage_changed(redriven, 10, "parse", "STARTED"),
        *successful_job(finished)[2:],
        accepted(lost, 5, ["parse"]),
        stage_changed(lost, 10, "parse", "STARTED"),
    ]
    await publish(settings, outgoing(settings, events))
    async with running(settings) as projector:
        await consumed(projector, len(events))
    await db.execute("UPDATE request_outbox SET published_generation = 'gone-cluster'")
    pool = await asyncpg.create_pool(settings.require_database(), min_size=1, max_size=2)
    try:
        relay = OutboxRelay(pool, publisher, settings)
        first = await relay.relay_once()
        again = await relay.relay_once()
    finally:
        await pool.close()
    assert first is not None and (first.published, first.lost) == (1, 1)
    assert again is not None and (again.published, again.lost) == (0, 0)
    requests = await events_from_start(
        settings, [settings.topics.requests], lambda got: len(got) >= 3
    )
    assert Counter(record["job_id"] for _, record in requests) == {redriven: 2, finished: 1}

    def lost_ended(got: list[Decoded]) -> bool:
        return any(kind == "JobFinished" and r["job_id"] == lost for kind, r in got)

    endings = [
        record
        for kind, record in await events_from_start(settings, [settings.topics.events], lost_ended)
        if kind == "JobFinished" and record["job_id"] == lost
    ]
    assert len(endings) == 1
    assert endings[0]["status"] == "FAILED"
    assert endings[0]["error"]["code"] == "BROKER_LOST"


async def test_relay_waits_while_the_broker_lacks_topics(
    stack: RunningStack, settings: Settings
) -> None:
    elsewhere = settings.model_copy(update={"topic_prefix": f"absent_{uuid.uuid4().hex[:8]}"})
    publisher = EventPublisher(elsewhere, default_codec())
    await publisher.start()
    pool = await asyncpg.create_pool(settings.require_database(), min_size=1, max_size=2)
    try:
        assert await OutboxRelay(pool, publisher, elsewhere).relay_once() is None
    finally:
        await pool.close()
        await publisher.stop()
