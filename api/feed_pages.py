"""The next page of many job feeds in one query: feeds woken by the same commit read together.

A commit touches several jobs, and each of their open feeds would ask the database for its next
page on its own. Feeds that ask within one turn of the event loop share one statement instead;
each still gets exactly the rows its own query would have given (same job, same `after`, same
page size), so a feed's order, resumption and ending are unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

PAGE = 500

# Each (job, after) asked for, with its page of events: one index range scan apiece.
_PAGES = """
SELECT r.i, e.seq, e.type, e.payload
FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS r(job_id, after, i)
CROSS JOIN LATERAL (
    SELECT seq, type, payload FROM job_events
    WHERE job_id = r.job_id AND seq > r.after
    ORDER BY seq LIMIT $3
) e
ORDER BY r.i, e.seq
"""

Page = Sequence[asyncpg.Record]
_Asked = tuple[uuid.UUID, int]


class FeedPages:
    """Reads feed pages through `pool`, every request of one loop turn in one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._asked: dict[_Asked, asyncio.Future[Page]] = {}

    async def page(self, job_id: uuid.UUID, after: int) -> Page:
        """The job's events after `after`, in seq order, at most PAGE of them."""
        asked = (job_id, after)
        answer = self._asked.get(asked)
        if answer is None:
            loop = asyncio.get_running_loop()
            if not self._asked:
                loop.call_soon(self._read)
            answer = loop.create_future()
            # A failure nobody is left waiting for (every feed closed) is not an error to log.
            answer.add_done_callback(_consume_outcome)
            self._asked[asked] = answer
        # One closed feed must not cancel the read the others wait for.
        return await asyncio.shield(answer)

    def _read(self) -> None:
        asked, self._asked = self._asked, {}
        task = asyncio.get_running_loop().create_task(self._answer(asked))
        task.add_done_callback(_consume_outcome)

    async def _answer(self, asked: dict[_Asked, asyncio.Future[Page]]) -> None:
        keys = list(asked)
        try:
            rows = await self._pool.fetch(
                _PAGES, [job for job, _ in keys], [after for _, after in keys], PAGE
            )
        except asyncio.CancelledError:
            for answer in asked.values():
                answer.cancel()
            raise
        except Exception as error:
            # Every feed in the statement hears what its own query would have raised.
            for answer in asked.values():
                if not answer.done():
                    answer.set_exception(error)
            return
        pages: list[list[asyncpg.Record]] = [[] for _ in keys]
        for row in rows:
            pages[row["i"] - 1].append(row)
        for key, page in zip(keys, pages, strict=True):
            answer = asked[key]
            if not answer.done():
                answer.set_result(page)


def _consume_outcome(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
