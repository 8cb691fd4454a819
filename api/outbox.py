"""The outbox relay: what PostgreSQL accepted reaches the broker, in every broker generation.

A submission is stored in `request_outbox` before the API answers 202, then published. The
relay publishes what is still missing from the broker's log:

- requests whose publish failed or never happened (the broker was down, the API crashed);
- once per new broker generation, the request of every job that had not finished when the
  old log was lost, under the same job id, so the stages' deterministic event ids keep the
  feed free of repeats;
- a request published in this generation that no dispatcher has taken after
  DISPATCH_GRACE_S (a worker that read it from a log it was leaving, and committed past it,
  was seen to skip one after a broker restart): published again, and the dispatcher's claim
  keeps a copy from starting anything twice;
- for a job PostgreSQL knows but has no request of (it reached the projection only through
  its other events), a JobFinished FAILED `BROKER_LOST`, so that no job stays unfinished.

Several API processes may run relays at once: rows are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from streams.envelope import envelope, error_info
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import Settings

log = logging.getLogger(__name__)

# A submission publishes its own request; the relay steps in only after this long.
PUBLISH_GRACE_S = 10.0
RELAY_INTERVAL_S = 1.0
# A request on the broker that no dispatcher has claimed for this long is published again.
DISPATCH_GRACE_S = 60.0
_CLAIM_LIMIT = 500

_PENDING = """
SELECT o.job_id, o.request FROM request_outbox o
LEFT JOIN jobs j ON j.job_id = o.job_id
WHERE ((o.published_generation IS NULL AND o.accepted_at < now() - make_interval(secs => $2))
       OR ($3 AND o.published_generation <> $1)
       OR (o.published_generation = $1 AND o.published_at < now() - make_interval(secs => $5)
           AND NOT EXISTS (SELECT 1 FROM job_dispatches d
                           WHERE d.job_id = o.job_id AND d.generation = $1 AND d.dispatched)))
  AND (j.status IS NULL OR job_status_rank(j.status) < 3)
ORDER BY o.accepted_at
LIMIT $4
FOR UPDATE OF o SKIP LOCKED
"""

_LOST = """
SELECT j.job_id, j.tenant,
       ARRAY(SELECT s.stage FROM job_stages s
             WHERE s.job_id = j.job_id AND s.status = 'SUCCEEDED'
             ORDER BY s.started_at) AS completed
FROM jobs j
WHERE job_status_rank(j.status) < 3 AND j.updated_at < $1
  AND NOT EXISTS (SELECT 1 FROM request_outbox o WHERE o.job_id = j.job_id)
"""


@dataclass(frozen=True, slots=True)
class Relayed:
    """What one pass did."""

    generation: str
    published: int = 0
    lost: int = 0


class OutboxRelay:
    """Publishes from `request_outbox` what the current broker generation does not hold."""

    def __init__(self, pool: asyncpg.Pool, publisher: EventPublisher, settings: Settings) -> None:
        self._pool = pool
        self._publisher = publisher
        self._settings = settings
        self.source = f"{settings.source}.relay"

    async def run(self, interval: float = RELAY_INTERVAL_S) -> None:
        """Relay until cancelled; an outage of the broker or the database is waited out."""
        while True:
            try:
                relayed = await self.relay_once()
            except Exception as error:  # an outage: the next pass tries again
                log.info("outbox relay waits (%s: %s)", type(error).__name__, error)
            else:
                if relayed is not None and (relayed.published or relayed.lost):
                    log.warning(
                        "outbox relay: published %d request(s), ended %d lost job(s) in "
                        "generation %s",
                        relayed.published,
                        relayed.lost,
                        relayed.generation,
                    )
            await asyncio.sleep(interval)

    async def relay_once(
        self, grace_s: float = PUBLISH_GRACE_S, dispatch_grace_s: float = DISPATCH_GRACE_S
    ) -> Relayed | None:
        """One pass; None while the broker lacks topics (it was just restarted)."""
        broker = await self._publisher.broker_state()
        if broker.missing(self._settings.topics.all()):
            return None
        generation = broker.generation
        seen = await self._pool.fetchrow(
            "INSERT INTO broker_generations (generation) VALUES ($1) "
            "ON CONFLICT (generation) DO UPDATE SET generation = EXCLUDED.generation "
            "RETURNING first_seen_at, redriven_at",
            generation,
        )
        assert seen is not None
        redriving = seen["redriven_at"] is None
        published = await self._publish_pending(generation, grace_s, dispatch_grace_s, redriving)
        lost = 0
        if redriving and published < _CLAIM_LIMIT:
            lost = await self._finish_lost(generation, seen["first_seen_at"])
            await self._pool.execute(
                "UPDATE broker_generations SET redriven_at = now() "
                "WHERE generation = $1 AND redriven_at IS NULL",
                generation,
            )
        return Relayed(generation, published, lost)

    async def _publish_pending(
        self, generation: str, grace_s: float, dispatch_grace_s: float, redriving: bool
    ) -> int:
        topic = self._settings.topics.requests
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                _PENDING, generation, grace_s, redriving, _CLAIM_LIMIT, dispatch_grace_s
            )
            if not rows:
                return 0
            await self._publisher.publish(
                [
                    Outgoing(topic, "JobRequested", {}, key=str(r["job_id"]).encode(), raw=r[1])
                    for r in rows
                ]
            )
            await conn.execute(
                "UPDATE request_outbox SET published_generation = $1, published_at = now() "
                "WHERE job_id = ANY($2::uuid[])",
                generation,
                [r["job_id"] for r in rows],
            )
        return len(rows)

    async def _finish_lost(self, generation: str, first_seen: datetime) -> int:
        rows = await self._pool.fetch(_LOST, first_seen)
        if rows:
            await self._publisher.publish([self._lost(generation, r) for r in rows])
        return len(rows)

    def _lost(self, generation: str, row: asyncpg.Record) -> Outgoing:
        job_id: uuid.UUID = row["job_id"]
        record = envelope(
            str(job_id), row["tenant"], self.source, event_id_for(job_id, "lost", generation)
        )
        record.update(
            status="FAILED",
            error=error_info(
                "BROKER_LOST",
                "the broker lost this job's events and PostgreSQL holds no request to run "
                "it again; submit it again",
                {"generation": generation},
            ),
            stages_completed=list(row["completed"]),
            duration_ms=None,
        )
        return Outgoing(self._settings.topics.events, "JobFinished", record)
