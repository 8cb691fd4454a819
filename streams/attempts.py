"""Which attempt a delivered command of a long stage is, from what the projection recorded.

A worker killed mid-stage leaves its command uncommitted, and the next worker gets it again.
For a stage whose events are fixed by its input (parse, compile, codegen) running it again
under the same attempt is harmless: it re-emits the same events under the same ids and the
projector drops the copies. A long stage's events are not fixed: heartbeats and rate-limited
progress come with the clock, so a second run's n-th event is not the first run's, and
matching them by id would drop events of the second run (an epoch's metrics) as copies of
different ones. So for execute and train a delivery that finds its attempt STARTED and never
ended is a retry: that attempt ends FAILED `ATTEMPT_LOST` and the next one runs, in the open;
after `stage_max_attempts` lost attempts the job fails `WORKER_LOST` instead of being run
over and over by whatever keeps killing its workers. A delivery of an attempt that ended and
whose job went on (the next stage started, or the job finished) is not run again: the worker
died before committing what it had done.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, NamedTuple

import asyncpg

from streams.pool import open_pool

if TYPE_CHECKING:
    from streams.runner import StageCommand

ATTEMPT_LOST = "ATTEMPT_LOST"
WORKER_LOST = "WORKER_LOST"

_LATEST = """
SELECT s.attempt, s.status, s.error->>'code' AS code,
       job_status_rank(j.status) = 3 AS job_ended,
       EXISTS (SELECT 1 FROM job_stages n WHERE n.job_id = $1 AND n.stage = $3) AS next_started
FROM job_stages s JOIN jobs j ON j.job_id = s.job_id
WHERE s.job_id = $1 AND s.stage = $2
ORDER BY s.attempt DESC LIMIT 1
"""


class Recorded(NamedTuple):
    """The latest attempt of a job's stage as the projection has it, and whether the job went
    on after it (its next stage has started, or the job has ended)."""

    attempt: int
    status: str
    code: str | None = None
    next_started: bool = False
    job_ended: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Resumption:
    """What to do with a delivered command: run `command` (its attempt may be a later one than
    it names), after ending `lost` (an attempt that never ended) as FAILED; with `give_up`,
    end the job instead of running anything; with `done`, nothing (it ran and the job went on).
    """

    command: StageCommand
    lost: int | None = None
    give_up: bool = False
    done: bool = False


def resumption(command: StageCommand, latest: Recorded | None, max_attempts: int) -> Resumption:
    """The decision, from the latest recorded attempt of the command's stage (pure logic)."""
    if latest is None or latest.attempt < command.attempt:
        return Resumption(command)
    if latest.job_ended:
        return Resumption(command, done=True)
    if latest.status == "STARTED":
        retry = latest.attempt + 1
        if retry > max_attempts:
            return Resumption(command, lost=latest.attempt, give_up=True)
        return Resumption(dataclasses.replace(command, attempt=retry), lost=latest.attempt)
    if latest.status == "FAILED" and latest.code == ATTEMPT_LOST:
        # The retry was announced but did not get far enough to be recorded: it runs now.
        return Resumption(dataclasses.replace(command, attempt=latest.attempt + 1))
    if latest.next_started:
        return Resumption(command, done=True)
    # It ended but what follows may not have been sent: running it again re-sends it all
    # under the same ids.
    return Resumption(dataclasses.replace(command, attempt=latest.attempt))


class AttemptHistory:
    """Reads the latest attempt of a job's stage; one small pool per worker process."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await open_pool(
            self._database_url,
            min_size=1,
            max_size=2,
            command_timeout=10,
            application_name="stagecast-attempts",
        )

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def latest(self, command: StageCommand) -> Recorded | None:
        if self._pool is None:
            raise RuntimeError("AttemptHistory used before start()")
        following = command.next_stage or ""
        row = await self._pool.fetchrow(
            _LATEST, uuid.UUID(command.job_id), command.stage, following
        )
        if row is None:
            return None
        return Recorded(
            row["attempt"], row["status"], row["code"], row["next_started"], row["job_ended"]
        )
