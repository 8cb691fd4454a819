"""What every reader of the log that keeps its offsets in PostgreSQL does alike: hold its name
alone, tell a lost database from a bug, and notice when the broker starts a new log."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka.client import AIOKafkaClient

from streams.generation import broker_state

# What a restarted, unreachable or terminated database looks like (ConnectionError included,
# an OSError); anything else is a bug.
DATABASE_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.CrashShutdownError,
)
# While nothing is fetched the broker is asked its generation this often: after a restart,
# fetches at the old positions may bring nothing, and nothing fetched would mean no check.
IDLE_GENERATION_CHECK_S = 2.0

log = logging.getLogger(__name__)


def cancelled_beneath() -> bool:
    """Whether the CancelledError being handled was not meant for this task: a future it
    awaited was cancelled by its owner (a client library whose connection dropped) while no
    one asked the task itself to stop.

    Left to propagate, such an error ends the task as cancelled, and a TaskGroup drops a
    cancelled child without a word: a projector stopped this way after a database restart
    and projected nothing more. Readers resume instead, as from a lost connection.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class GenerationChanged(Exception):
    """The broker under a reader started a new log: its session starts over."""


async def hold_name(
    conn: asyncpg.Connection, name: str, stop: asyncio.Event, what: str = "projector"
) -> bool:
    """Wait to be the only reader named `name` (offsets and seq order assume one writer; a
    second process waits as a standby); False if asked to stop first."""
    said = log.warning
    while not stop.is_set():
        if await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended('stagecast.projector.' || $1, 0))",
            name,
        ):
            return True
        said("%s %s is running elsewhere; waiting as a standby", what, name)
        said = log.info
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


class GenerationWatch:
    """Raises GenerationChanged once the broker is no longer in the generation a session began
    in: asked after every fetch that brought messages (before they are committed), and every
    IDLE_GENERATION_CHECK_S while none come."""

    def __init__(self, generation: str) -> None:
        self.generation = generation
        self._asked_at: float | None = None

    async def check(self, client: AIOKafkaClient, fetched: bool) -> None:
        clock = asyncio.get_running_loop().time()
        if self._asked_at is None:
            self._asked_at = clock
        if not fetched and clock - self._asked_at < IDLE_GENERATION_CHECK_S:
            return
        self._asked_at = clock
        now = (await broker_state(client)).generation
        if now != self.generation:
            raise GenerationChanged(f"broker generation changed from {self.generation} to {now}")
