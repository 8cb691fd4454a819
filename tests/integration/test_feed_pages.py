"""Feed pages read together give each feed exactly what its own query would have given."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy

from api.feed_pages import PAGE, FeedPages
from streams.pool import open_pool
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

_ALONE = (
    "SELECT seq, type, payload FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)


async def _events(conn: PoolConnectionProxy, job_id: uuid.UUID, count: int) -> None:
    await conn.executemany(
        "INSERT INTO job_events (event_id, job_id, type, stage, payload, occurred_at, topic,"
        " partition, \"offset\") VALUES ($1, $2, $3, NULL, $4, now(), 'events', 0, $5)",
        [(uuid.uuid4(), job_id, "LogEmitted", f'{{"n": {n}}}', n) for n in range(count)],
    )


def _rows(page: Any) -> list[tuple[int, str, str]]:
    return [(row["seq"], row["type"], row["payload"]) for row in page]


def test_pages_read_together_match_each_feed_read_alone(stack: RunningStack) -> None:
    url = stack.isolated().require_database()

    async def scenario() -> None:
        pool = await open_pool(url, min_size=1, max_size=2)
        try:
            jobs = [uuid.uuid4() for _ in range(3)]
            async with pool.acquire() as conn:
                # Interleaved, so each job's seqs have gaps where the others' are.
                for _ in range(4):
                    for job in jobs:
                        await _events(conn, job, 2)
                await _events(conn, jobs[0], PAGE + 3)
            pages = FeedPages(pool)
            middle = int(
                await pool.fetchval(
                    "SELECT min(seq) + 5 FROM job_events WHERE job_id = $1", jobs[1]
                )
            )
            asked = [
                (jobs[0], 0),
                (jobs[1], middle),
                (jobs[2], 0),
                (jobs[2], 0),  # two feeds of one job at one place share a page
                (uuid.uuid4(), 0),  # a job without events
            ]
            together = await asyncio.gather(*(pages.page(job, after) for job, after in asked))
            for (job, after), page in zip(asked, together, strict=True):
                alone = await pool.fetch(_ALONE, job, after, PAGE)
                assert _rows(page) == _rows(alone)
            assert len(together[0]) == PAGE
            assert together[4] == []
            # The next page of the long feed goes on where the first ended.
            rest = await pages.page(jobs[0], together[0][-1]["seq"])
            assert len(rest) == 11  # 8 interleaved + PAGE + 3, less the first page
            everything = await pool.fetch(_ALONE, jobs[0], 0, 2 * PAGE)
            assert _rows([*together[0], *rest]) == _rows(everything)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_closed_feed_does_not_cancel_the_read_of_the_others(stack: RunningStack) -> None:
    url = stack.isolated().require_database()

    async def scenario() -> None:
        pool = await open_pool(url, min_size=1, max_size=1)
        try:
            job = uuid.uuid4()
            async with pool.acquire() as conn:
                await _events(conn, job, 3)
            pages = FeedPages(pool)
            leaving = asyncio.create_task(pages.page(job, 0))
            staying = asyncio.create_task(pages.page(job, 0))
            await asyncio.sleep(0)
            leaving.cancel()
            assert len(await staying) == 3
            with pytest.raises(asyncio.CancelledError):
                await leaving
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_failed_read_reaches_every_feed_in_it(stack: RunningStack) -> None:
    url = stack.isolated().require_database()

    async def scenario() -> list[object]:
        pool = await open_pool(url, min_size=1, max_size=1)
        pages = FeedPages(pool)
        await pool.close()
        return list(
            await asyncio.gather(
                pages.page(uuid.uuid4(), 0), pages.page(uuid.uuid4(), 0), return_exceptions=True
            )
        )

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 2
    assert all(isinstance(outcome, asyncpg.InterfaceError) for outcome in outcomes)
