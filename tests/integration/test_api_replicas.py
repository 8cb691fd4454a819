"""API replicas: a second API process behind the same database serves the same feeds and
answers, and what every API process runs beside its routes (the outbox relay, the stage
watchdog) does each thing once with two of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.client import StagecastClient
from api.outbox import OutboxRelay
from api.watchdog import StageWatchdog
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.producer import EventPublisher
from streams.settings import Settings
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone
from tests.integration.test_control import accepted_bytes, produce
from tests.integration.test_projector import eventually, outgoing, requested, running
from tests.integration.test_watchdog import started_bytes
from tests.topics import from_start, held

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
PENDING = 40


@pytest.fixture
def second_api(pipeline: Pipeline, tmp_path: Path) -> Iterator[Launcher]:
    """Another API process on the pipeline's database and topics."""
    with api_alone(pipeline.settings, tmp_path / "api-2") as launcher:
        yield launcher


async def feed_ids(api_url: str, job_id: str, last_event_id: int | None = None) -> list[int]:
    async with StagecastClient(api_url) as client:
        return [event.seq async for event in client.events(job_id, last_event_id)]


async def follow(api_url: str, job_id: str, events: int) -> AsyncIterator[int]:
    async with StagecastClient(api_url) as client:
        async for event in client.events(job_id):
            yield event.seq
            events -= 1
            if not events:
                return


async def test_a_second_api_serves_the_same_feed_and_resumes_what_the_first_served(
    pipeline: Pipeline, second_api: Launcher
) -> None:
    first, second = pipeline.api_url, second_api.api_url
    async with StagecastClient(first) as client:
        job_id = (await client.submit(DIGITS))["job_id"]
    # The first events from API 2 while the job runs, the rest resumed on API 1 after them.
    head = [seq async for seq in follow(second, job_id, 2)]
    rest = await feed_ids(first, job_id, head[-1])
    whole = await feed_ids(first, job_id)
    assert await feed_ids(second, job_id) == whole
    assert head + rest == whole
    # And the other way: API 2 resumes after an id API 1 served.
    assert await feed_ids(second, job_id, rest[0]) == rest[1:]
    async with httpx.AsyncClient(timeout=10) as http:
        for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/stages", "/jobs?limit=5"):
            one, two = await http.get(first + path), await http.get(second + path)
            assert (one.status_code, json.loads(one.text)) == (two.status_code, two.json())
            assert one.status_code == 200
        # Bad input is refused alike by both: the same code from either replica.
        one = await http.get(f"{first}/jobs/not-a-job")
        two = await http.get(f"{second}/jobs/not-a-job")
    assert one.status_code == two.status_code and one.status_code // 100 == 4
    assert one.json()["error_code"] == two.json()["error_code"]


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    return await asyncio.to_thread(stack.isolated, stage_timeout_s=1.0)


@pytest.fixture
async def publishers(settings: Settings) -> AsyncIterator[list[EventPublisher]]:
    """Two publishers: what two API processes would each have."""
    started = [EventPublisher(settings, default_codec()) for _ in range(2)]
    for publisher in started:
        await publisher.start()
    yield started
    for publisher in started:
        await publisher.stop()


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    opened = [
        await asyncpg.create_pool(settings.require_database(), min_size=1, max_size=2)
        for _ in range(2)
    ]
    yield opened
    for pool in opened:
        await pool.close()


async def every_message(settings: Settings, topic: str, at_least: int) -> list[bytes]:
    """All of `topic`: once `at_least` came, what it holds after a second of nothing more."""
    await from_start(settings, [topic], lambda found: len(found) >= at_least, 30)
    return [message.value or b"" for message in await held(settings, topic, quiet_s=1.0)]


async def test_two_relays_publish_each_pending_request_once(
    settings: Settings, publishers: list[EventPublisher], pools: list[asyncpg.Pool]
) -> None:
    job_ids = [str(uuid.uuid4()) for _ in range(PENDING)]
    async with pools[0].acquire() as conn:
        for job_id in job_ids:
            raw = publishers[0].encoded(outgoing(settings, [requested(job_id)])[0]).raw
            await conn.execute(
                "INSERT INTO request_outbox (job_id, tenant, request, accepted_at) "
                "VALUES ($1, 'acme', $2, now() - interval '1 minute')",
                uuid.UUID(job_id),
                raw,
            )
    relays = [OutboxRelay(pool, pub, settings) for pool, pub in zip(pools, publishers, strict=True)]
    passes = await asyncio.gather(*(relay.relay_once() for relay in relays))
    assert sum(done.published for done in passes if done is not None) == PENDING
    codec = default_codec()
    values = await every_message(settings, settings.topics.requests, PENDING)
    published = sorted(codec.decode(value)[1]["job_id"] for value in values)
    assert published == sorted(job_ids)


async def test_two_watchdogs_end_a_silent_stage_once(
    settings: Settings, publishers: list[EventPublisher], pools: list[asyncpg.Pool]
) -> None:
    silent = str(uuid.uuid4())
    events = settings.topics.events
    await produce(
        settings,
        (events, accepted_bytes(silent, ["execute"])),
        (events, started_bytes(silent, "execute")),
    )
    pairs = zip(pools, publishers, strict=True)
    watchdogs = [StageWatchdog(pool, pub, settings) for pool, pub in pairs]
    conn = await asyncpg.connect(settings.require_database())
    try:
        async with running(settings):

            async def status_is(wanted: str) -> bool:
                status = await conn.fetchval(
                    "SELECT status FROM jobs WHERE job_id = $1", uuid.UUID(silent)
                )
                return bool(status == wanted)

            await eventually(lambda: status_is("RUNNING"))
            await asyncio.sleep(settings.stage_timeout_s + 0.5)
            # Both see the silent attempt at once, and both publish its end.
            found = await asyncio.gather(*(dog.check_once() for dog in watchdogs))
            assert found == [1, 1]
            await eventually(lambda: status_is("FAILED"))
            feed = await conn.fetch(
                "SELECT type, payload FROM job_events WHERE job_id = $1 ORDER BY seq",
                uuid.UUID(silent),
            )
    finally:
        await conn.close()
    steps = [(row["type"], json.loads(row["payload"]).get("status")) for row in feed]
    assert steps == [
        ("JobAccepted", None),
        ("StageChanged", "STARTED"),
        ("StageChanged", "FAILED"),
        ("JobFinished", "FAILED"),
    ]
