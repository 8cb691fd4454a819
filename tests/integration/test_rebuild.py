"""A rebuild from the topics into an empty database gives every job the feed it has live."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from projections.migrate import migrate
from projections.projector import Projector
from schemas.codec import default_codec
from streams.settings import Settings
from streams.stack import create_database
from tests.conftest import EXAMPLES, Pipeline
from tests.feeds import causal_problems, feeds

pytestmark = pytest.mark.integration

JOBS = 1_050
MODELS = [
    (EXAMPLES / "tiny.neural").read_text(),
    (EXAMPLES / "iris_mlp.neural").read_text(),
    (EXAMPLES / "invalid" / "unknown_layer.neural").read_text(),
    (EXAMPLES / "invalid" / "shape_too_small.neural").read_text(),
]


async def submit_all(api_url: str) -> list[str]:
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:

        async def one(number: int) -> str:
            async with gate:
                response = await http.post("/jobs", json={"dsl": MODELS[number % len(MODELS)]})
            assert response.status_code == 202, response.text
            return str(response.json()["job_id"])

        return list(await asyncio.gather(*(one(n) for n in range(JOBS))))


async def settle(conn: asyncpg.Connection, job_ids: list[str], within_s: float = 240) -> None:
    ids = [uuid.UUID(j) for j in job_ids]
    deadline = time.monotonic() + within_s
    while True:
        ended = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) "
            "AND status IN ('SUCCEEDED', 'FAILED', 'REJECTED')",
            ids,
        )
        if ended == len(ids):
            return
        assert time.monotonic() < deadline, f"{len(ids) - ended} jobs did not end"
        await asyncio.sleep(0.5)


async def offsets(conn: asyncpg.Connection, projector: str) -> dict[tuple[str, int], int]:
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = $1",
        projector,
    )
    return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}


@pytest.fixture(scope="module")
async def history(
    pipeline: Pipeline,
) -> AsyncIterator[tuple[list[str], dict[tuple[str, int], int]]]:
    """1,000+ jobs (successes and failures) run live; their ids and the live offsets after."""
    job_ids = await submit_all(pipeline.api_url)
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        await settle(conn, job_ids)
        # Quiet: nothing more arrives for any of them (a job ends before its last commit is seen).
        await asyncio.sleep(1.0)
        yield job_ids, await offsets(conn, "main")
    finally:
        await conn.close()


async def empty_database(pipeline: Pipeline, batch: int) -> Settings:
    database = pipeline.launcher.database
    assert database is not None
    name = f"rebuild_{uuid.uuid4().hex[:10]}"
    await create_database(database.url(), name)
    await migrate(database.url(name))
    return pipeline.settings.model_copy(
        update={"database_url": database.url(name), "projector_batch": batch}
    )


@pytest.mark.parametrize("batch", [2000, 37])
async def test_a_rebuild_into_an_empty_database_keeps_every_feed_causal_and_as_live(
    pipeline: Pipeline,
    history: tuple[list[str], dict[tuple[str, int], int]],
    batch: int,
) -> None:
    job_ids, live_offsets = history
    settings = await empty_database(pipeline, batch)
    projector = Projector(settings, default_codec(), name="rebuild")
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    conn = await asyncpg.connect(settings.require_database())
    try:
        deadline = time.monotonic() + 120
        while (done := await offsets(conn, "rebuild")) != live_offsets:
            assert not task.done(), task
            assert time.monotonic() < deadline, f"rebuild stopped at {done}, live {live_offsets}"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
        stop.set()
        await asyncio.wait_for(task, 30)

    rebuilt = await feeds(settings.require_database(), job_ids)
    live = await feeds(pipeline.settings.require_database(), job_ids)
    wrong = {job: problems for job, feed in rebuilt.items() if (problems := causal_problems(feed))}
    assert wrong == {}, f"{len(wrong)} of {len(job_ids)} rebuilt feeds out of order"
    live_wrong = {
        job: problems for job, feed in live.items() if (problems := causal_problems(feed))
    }
    assert live_wrong == {}

    def ids(feed: list[tuple[str, dict[str, object]]]) -> list[object]:
        return [data["event_id"] for _, data in feed]

    differ = [job for job in job_ids if ids(rebuilt[job]) != ids(live[job])]
    assert differ == [], f"{len(differ)} feeds differ from live, e.g. {differ[:3]}"
    ended = [feed[-1][0] for feed in rebuilt.values()]
    assert set(ended) == {"JobFinished"}
