"""The dispatcher's memory of the jobs it started, kept in PostgreSQL (`job_dispatches`).

Kafka delivers at least once and other systems may send a request twice, so the dispatcher
needs to know whether a job id was already started. The broker cannot be that memory (the
embedded one forgets everything when it restarts); PostgreSQL is.
"""

from __future__ import annotations

import enum
import uuid

import asyncpg

from streams.pool import open_pool

_CLAIM = """
INSERT INTO job_dispatches AS d (job_id, request_sha256, generation)
VALUES ($1, $2, $3)
ON CONFLICT (job_id) DO UPDATE
    SET generation = EXCLUDED.generation, dispatched = false, updated_at = now()
    WHERE d.request_sha256 = EXCLUDED.request_sha256
      AND (d.generation <> EXCLUDED.generation OR NOT d.dispatched)
      -- A job that has ended is not started again, whichever log its request is read from
      -- (the archive republished after a broker loss holds every request ever accepted).
      AND NOT EXISTS (
          SELECT 1 FROM jobs j WHERE j.job_id = d.job_id AND job_status_rank(j.status) = 3
      )
RETURNING true
"""


class Claim(enum.Enum):
    """What to do with a request: run it, drop it as a copy, or reject it as a conflict."""

    RUN = "run"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class DispatchLedger:
    """Claims job ids for dispatch; one pool per worker process."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await open_pool(
            self._database_url,
            min_size=1,
            max_size=4,
            command_timeout=10,
            application_name="stagecast-dispatcher",
        )

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("DispatchLedger used before start()")
        return self._pool

    async def claim(self, job_id: str, digest: str, generation: str) -> Claim:
        """RUN for a job id new to this generation (or whose dispatch did not finish)."""
        key = uuid.UUID(job_id)
        if await self.pool.fetchval(_CLAIM, key, digest, generation):
            return Claim.RUN
        first = await self.pool.fetchval(
            "SELECT request_sha256 FROM job_dispatches WHERE job_id = $1", key
        )
        return Claim.DUPLICATE if first == digest else Claim.CONFLICT

    async def dispatched(self, job_id: str) -> None:
        """The job's first command is on the broker: a copy of its request is now a duplicate."""
        await self.pool.execute(
            "UPDATE job_dispatches SET dispatched = true, updated_at = now() WHERE job_id = $1",
            uuid.UUID(job_id),
        )
