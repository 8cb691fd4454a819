"""Consumer lag sampled into `consumer_lag` and `dash_consumer_lag`, for the workers' group
and the projectors."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from projections.dead_letters import RECORDER_NAME
from projections.lag import PROJECTOR_GROUP_PREFIX, LagSampler
from projections.webhooks.recorder import RECORDER_NAME as WEBHOOKS_RECORDER_NAME
from streams.settings import Settings
from tests.conftest import Pipeline, RunningStack
from tests.integration.test_projector import eventually, outgoing, publish, running, successful_job
from tests.topics import held

pytestmark = pytest.mark.integration

MAIN = PROJECTOR_GROUP_PREFIX + "main"


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    return await asyncio.to_thread(stack.isolated)


@contextlib.asynccontextmanager
async def sampling(settings: Settings) -> AsyncIterator[LagSampler]:
    sampler = LagSampler(settings, interval_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop))
    try:
        yield sampler
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def messages_held(settings: Settings, topic: str) -> dict[int, int]:
    """How many messages each partition of `topic` holds, counted by reading them all."""
    counts = Counter(message.partition for message in await held(settings, topic))
    return {partition: counts[partition] for partition in range(settings.partitions)}


async def lag_rows(settings: Settings, group: str, topic: str) -> dict[int, asyncpg.Record]:
    conn = await asyncpg.connect(settings.require_database())
    try:
        rows = await conn.fetch(
            "SELECT * FROM consumer_lag WHERE consumer_group = $1 AND topic = $2", group, topic
        )
    finally:
        await conn.close()
    return {row["partition"]: row for row in rows}


async def test_lag_counts_every_message_not_yet_projected_then_drops_to_zero(
    settings: Settings,
) -> None:
    items = []
    for _ in range(40):
        items += outgoing(settings, successful_job(str(uuid.uuid4())))
    # Lingering sends go in multi-record batches, whose ends ListOffsets under-reports.
    await publish(settings.model_copy(update={"producer_linger_ms": 20}), items)
    events = settings.topics.events
    held = await messages_held(settings, events)
    assert sum(held.values()) > 0
    async with sampling(settings) as sampler:

        async def sampled() -> bool:
            return len(await lag_rows(settings, MAIN, events)) == settings.partitions

        await eventually(sampled)
        rows = await lag_rows(settings, MAIN, events)
        for partition, count in held.items():
            row = rows[partition]
            assert (row["end_offset"], row["committed"], row["lag"]) == (count, None, count)
        # No worker reads these topics: the group lags by every request.
        requests = await lag_rows(settings, settings.app_id, settings.topics.requests)
        assert sum(row["lag"] for row in requests.values()) == 40
        # Nor does a webhooks process: its recorder lags by every event.
        webhooks = PROJECTOR_GROUP_PREFIX + WEBHOOKS_RECORDER_NAME
        unrecorded = await lag_rows(settings, webhooks, events)
        assert sum(row["lag"] for row in unrecorded.values()) == sum(held.values())
        assert {s.consumer_group for s in sampler.latest} == {
            settings.app_id,
            MAIN,
            PROJECTOR_GROUP_PREFIX + RECORDER_NAME,
            webhooks,
        }

        async with running(settings):

            async def caught_up() -> bool:
                rows = await lag_rows(settings, MAIN, events)
                return all(
                    row["lag"] == 0 and row["committed"] == held[p] for p, row in rows.items()
                )

            await eventually(caught_up)

    conn = await asyncpg.connect(settings.require_database())
    try:
        view = await conn.fetchrow(
            "SELECT * FROM dash_consumer_lag WHERE consumer_group = $1 AND topic = $2",
            MAIN,
            events,
        )
    finally:
        await conn.close()
    assert view is not None
    assert (view["partitions"], view["lag"], view["end_offsets"]) == (
        settings.partitions,
        0,
        sum(held.values()),
    )


async def test_the_running_stack_samples_its_workers_and_projectors_and_idles_at_zero(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    groups = {
        settings.app_id,
        MAIN,
        PROJECTOR_GROUP_PREFIX + RECORDER_NAME,
        PROJECTOR_GROUP_PREFIX + WEBHOOKS_RECORDER_NAME,
    }
    conn = await asyncpg.connect(settings.require_database())
    try:

        async def idle() -> bool:
            rows = await conn.fetch(
                "SELECT consumer_group, sum(lag) AS lag, sum(end_offsets) AS ends "
                "FROM dash_consumer_lag GROUP BY consumer_group"
            )
            lag = {row["consumer_group"]: row["lag"] for row in rows}
            # A sample after the warm-up job: there were messages to be behind on.
            ends = {row["consumer_group"]: row["ends"] for row in rows}
            busy = ends.get(settings.app_id, 0) > 0 and ends.get(MAIN, 0) > 0
            return set(lag) == groups and busy and not any(lag.values())

        await eventually(idle, within_s=60)
    finally:
        await conn.close()
