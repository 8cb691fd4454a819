"""The stage watchdog: a stage attempt whose heartbeats stopped ends FAILED STAGE_TIMEOUT.

A worker killed mid-stage leaves its command uncommitted, so the consumer group hands it to
another worker, which runs the stage again (streams/attempts.py). The watchdog is for when
that does not happen within `stage_timeout_s`: no event of the attempt for that long (the
execute stage sends a heartbeat every second). It publishes what the runner would have:
StageChanged FAILED and JobFinished FAILED, under the runner's own event ids, after a
CancelRequested from the watchdog that tells any worker still at it to stop without a word.

Every API process runs one; two of them publishing the same timeout publish the same ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from streams.control import WATCHDOG_SUFFIX
from streams.envelope import envelope, error_info
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import Settings

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0

_SILENT = """
SELECT s.job_id, s.stage, s.attempt, j.tenant,
       ARRAY(SELECT done.stage FROM job_stages done
             WHERE done.job_id = s.job_id AND done.status = 'SUCCEEDED'
             ORDER BY done.started_at) AS completed
FROM job_stages s JOIN jobs j ON j.job_id = s.job_id
WHERE s.status = 'STARTED' AND job_status_rank(j.status) < 3
  AND s.updated_at < now() - make_interval(secs => $1)
ORDER BY s.updated_at
LIMIT 200
"""


class StageWatchdog:
    def __init__(self, pool: asyncpg.Pool, publisher: EventPublisher, settings: Settings) -> None:
        self._pool = pool
        self._publisher = publisher
        self._settings = settings
        self.source = f"{settings.source}{WATCHDOG_SUFFIX}"

    async def run(self, interval: float = CHECK_INTERVAL_S) -> None:
        """Check until cancelled; an outage only delays the next check."""
        while True:
            try:
                timed_out = await self.check_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as error:
                log.warning("stage watchdog: check failed (%r); trying again", error)
            else:
                if timed_out:
                    log.warning("stage watchdog: %d stage attempt(s) timed out", timed_out)
            await asyncio.sleep(interval)

    async def check_once(self) -> int:
        """Fail every attempt silent for longer than the deadline; how many there were."""
        rows = await self._pool.fetch(_SILENT, self._settings.stage_timeout_s)
        for row in rows:
            await self._publisher.publish(self._timed_out(row))
        return len(rows)

    def _timed_out(self, row: asyncpg.Record) -> list[Outgoing]:
        job_id, stage, attempt = str(row["job_id"]), row["stage"], row["attempt"]
        topics = self._settings.topics
        seconds = self._settings.stage_timeout_s
        error = error_info(
            "STAGE_TIMEOUT",
            f"stage {stage} sent nothing for {seconds:g} s (its worker stopped?)",
            {"stage": stage, "attempt": attempt, "timeout_s": seconds},
        )

        def record(*id_parts: object) -> dict[str, Any]:
            event_id = event_id_for(job_id, stage, attempt, *id_parts)
            return envelope(job_id, row["tenant"], self.source, event_id)

        cancel = record("watchdog", "cancel") | {"reason": error["message"]}
        failed = record("FAILED") | {
            "stage": stage,
            "attempt": attempt,
            "status": "FAILED",
            "summary": json.dumps({}),
            "error": error,
            "duration_ms": None,
            "reported": 0,
        }
        finished = record("finished", "FAILED") | {
            "status": "FAILED",
            "error": error,
            "stages_completed": list(row["completed"]),
            "duration_ms": None,
        }
        return [
            Outgoing(topics.control, "CancelRequested", cancel),
            Outgoing(topics.events, "StageChanged", failed),
            Outgoing(topics.events, "JobFinished", finished),
        ]
