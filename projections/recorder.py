"""A topic recorded into PostgreSQL: what the dead-letter recorder and the webhook recorder do
alike.

A recorder reads every partition of one topic with no consumer group, and stores its offsets in
`projection_offsets` under a name of its own, in the same transaction as the rows it writes: a
crash neither loses nor doubles a row. In a new broker generation it reads the topic from its
start, as the projector does. Subclasses say what a fetched batch becomes (`store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from projections.session import GenerationWatch, hold_name, open_session, resume_sessions
from projections.writer import ProjectionWriter
from streams.generation import broker_state
from streams.settings import Settings

_IDLE_POLL_MS = 200
_FETCH_RECORDS = 500
_STATEMENT_TIMEOUT_S = 60.0

_STORE_OFFSET = """
INSERT INTO projection_offsets (projector, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (projector, topic, partition)
DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""

log = logging.getLogger(__name__)

Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class TopicRecorder:
    """Records `topic` under the projector name `name` until stopped; `what` names it in logs."""

    what = "recorder"

    def __init__(self, settings: Settings, name: str, topic: str) -> None:
        self.settings = settings
        self.name = name
        self.topic = topic

    async def store(
        self, conn: asyncpg.Connection, fetched: Fetched, next_offsets: dict[TopicPartition, int]
    ) -> None:
        """Write what was fetched and `store_offsets` in one transaction."""
        raise NotImplementedError

    async def store_offsets(
        self, conn: asyncpg.Connection, next_offsets: dict[TopicPartition, int]
    ) -> None:
        """Where each partition resumes; call it inside the transaction that writes the rows."""
        await conn.executemany(
            _STORE_OFFSET,
            [(self.name, tp.topic, tp.partition, end) for tp, end in next_offsets.items()],
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Record until `stop` is set; lost connections resume from the stored offsets."""
        await resume_sessions(self.what, self._session, stop)

    async def _session(self, stop: asyncio.Event) -> None:
        # Off a job's path: dead letters and webhook deliveries may wait a little for a fetch.
        opened = open_session(
            self.settings,
            f"recorder-{self.name}",
            _STATEMENT_TIMEOUT_S,
            fetch_max_wait_ms=self.settings.fetch_background_wait_ms,
        )
        async with opened as (conn, consumer):
            if not await hold_name(conn, self.name, stop, self.what):
                return
            await consumer.start()
            generation = await self._position(conn, consumer, stop)
            if generation is not None:
                await self._record(conn, consumer, generation, stop)

    async def _position(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> str | None:
        """Assign every partition at its stored offset; the broker generation read, or None."""
        partitions: Sequence[TopicPartition] = []
        while not partitions:
            if stop.is_set():
                return None
            await consumer.topics()
            found = consumer.partitions_for_topic(self.topic) or set()
            partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
            if not partitions:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        generation = (await broker_state(consumer._client)).generation
        # Offsets and generations are kept as the projector keeps its own.
        offsets = ProjectionWriter(conn, self.name, generation)
        left = await offsets.enter_generation()
        if left is not None:
            log.warning(
                "%s: the broker started a new log (generation %s, was %s); "
                "reading %s from its start",
                self.what,
                generation,
                left,
                self.topic,
            )
        stored = await offsets.offsets()
        consumer.assign(list(partitions))
        for tp in partitions:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        return generation

    async def _record(
        self,
        conn: asyncpg.Connection,
        consumer: AIOKafkaConsumer,
        generation: str,
        stop: asyncio.Event,
    ) -> None:
        watch = GenerationWatch(generation)
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=_IDLE_POLL_MS, max_records=_FETCH_RECORDS)
            await watch.check(consumer._client, bool(fetched))
            if not fetched:
                continue
            next_offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
            await self.store(conn, fetched, next_offsets)
