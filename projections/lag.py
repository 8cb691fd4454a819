"""Consumer lag: where each partition ends against where each consumer is, sampled into
`consumer_lag` every few seconds.

The consumers are the workers' consumer group (its offsets committed to Kafka, read with
OffsetFetch for the partitions it reads: the embedded broker drops the connection on an
OffsetFetch for all of a group's topics) and the projectors and recorders (the projector, the
dead-letter recorder, the webhooks process's recorder), whose offsets live in
`projection_offsets`. A partition's end is the high-water mark of a fetch at its end: the
embedded broker's ListOffsets can under-report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from projections.dead_letters import RECORDER_NAME
from projections.webhooks.recorder import RECORDER_NAME as WEBHOOKS_RECORDER_NAME
from streams.generation import GenerationUnknown, broker_state
from streams.settings import STAGES, Settings

# How a projector is named in `consumer_lag.consumer_group`.
PROJECTOR_GROUP_PREFIX = "projector:"
# How long one sample waits for a fetch answer from every partition.
_FETCH_WAIT_S = 5.0
_RETRY_DELAY_S = 1.0
_STATEMENT_TIMEOUT_S = 30.0

Partition = tuple[str, int]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LagSample:
    """One row of `consumer_lag`."""

    consumer_group: str
    topic: str
    partition: int
    end_offset: int
    committed: int | None
    lag: int


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer whose lag is sampled: its group name and the topics it reads."""

    group: str
    topics: tuple[str, ...]


def consumers(settings: Settings, projectors: Iterable[str]) -> list[Consumer]:
    """The workers' group (requests and every stage topic) and each named projector."""
    topics = settings.topics
    read_by = {
        "main": (topics.requests, topics.events, topics.progress),
        RECORDER_NAME: (topics.deadletter,),
        WEBHOOKS_RECORDER_NAME: (topics.events,),
    }
    workers = Consumer(settings.app_id, (topics.requests, *(topics.stage(s) for s in STAGES)))
    return [workers] + [
        Consumer(PROJECTOR_GROUP_PREFIX + name, read_by[name]) for name in projectors
    ]


def lag_samples(
    group: str, ends: Mapping[Partition, int], committed: Mapping[Partition, int | None]
) -> list[LagSample]:
    """The lag of `group` on every partition in `ends`: what lies past its committed offset
    (the whole partition when it committed none); never below zero (an offset past the end
    belongs to an older log, which the consumer leaves when it reads again)."""
    samples = []
    for (topic, partition), end in sorted(ends.items()):
        at = committed.get((topic, partition))
        lag = max(0, end - (at or 0))
        samples.append(LagSample(group, topic, partition, end, at, lag))
    return samples


_UPSERT = """
INSERT INTO consumer_lag AS l (consumer_group, topic, partition, end_offset, committed, lag,
    sampled_at)
SELECT g, t, p, e, c, l, $7
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS s(g, t, p, e, c, l)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET end_offset = EXCLUDED.end_offset, committed = EXCLUDED.committed, lag = EXCLUDED.lag,
    sampled_at = EXCLUDED.sampled_at
"""
# Partitions a sampled consumer no longer has (a topic created again with fewer) go.
_FORGET = """
DELETE FROM consumer_lag WHERE consumer_group = ANY($1::text[]) AND sampled_at < $2
"""
_PROJECTOR_OFFSETS = """
SELECT o.projector, o.topic, o.partition, o.next_offset
FROM projection_offsets o JOIN projector_generations g USING (projector)
WHERE o.projector = ANY($1::text[]) AND g.generation = $2
"""


class LagSampler:
    """Samples every consumer's lag every `interval_s` and keeps the latest sample."""

    def __init__(
        self,
        settings: Settings,
        projectors: Sequence[str] = ("main", RECORDER_NAME, WEBHOOKS_RECORDER_NAME),
        interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.projectors = tuple(projectors)
        self.consumers = consumers(settings, self.projectors)
        # consumers() lists the workers' group first; its offsets are in Kafka.
        self.workers = self.consumers[0]
        self.interval_s = interval_s if interval_s is not None else settings.lag_sample_s
        self.latest: list[LagSample] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop` is set; an outage only delays the next sample."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except (KafkaError, GenerationUnknown, OSError, asyncpg.PostgresError) as exc:
                if stop.is_set():
                    break
                log.warning("lag sampler lost a server (%r); sampling again shortly", exc)
            except asyncpg.InterfaceError as exc:
                log.warning("lag sampler lost the database (%r); sampling again shortly", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RETRY_DELAY_S)

    async def _session(self, stop: asyncio.Event) -> None:
        """One consumer (for the ends), one admin client (for the group's offsets), one
        database connection; a new broker generation starts a new session."""
        kafka = self.settings.require_kafka()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            client_id=f"{self.settings.app_id}-lag-sampler",
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        conn: asyncpg.Connection | None = None
        try:
            await consumer.start()
            await admin.start()
            conn = await asyncpg.connect(
                self.settings.require_database(), command_timeout=_STATEMENT_TIMEOUT_S
            )
            generation = (await broker_state(consumer._client)).generation
            ends = PartitionEnds(consumer)
            while not stop.is_set():
                if (await broker_state(consumer._client)).generation != generation:
                    log.info("lag sampler: the broker started a new log; sampling it afresh")
                    return
                samples = await self._sample(consumer, admin, conn, ends, generation)
                if samples is not None:
                    self.latest = samples
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            if conn is not None:
                await conn.close()
            await admin.close()
            await consumer.stop()

    async def _sample(
        self,
        consumer: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        conn: asyncpg.Connection,
        ends: PartitionEnds,
        generation: str,
    ) -> list[LagSample] | None:
        """One sample of every consumer, written; None while a topic is missing."""
        await consumer.topics()
        partitions: dict[str, list[TopicPartition]] = {}
        for topic in {topic for c in self.consumers for topic in c.topics}:
            found = consumer.partitions_for_topic(topic)
            if not found:
                return None
            partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        end_of = await ends.read([tp for tps in partitions.values() for tp in tps])
        committed = await self._committed(admin, conn, partitions, generation)
        samples: list[LagSample] = []
        for c in self.consumers:
            own = {(tp.topic, tp.partition): end_of[tp] for t in c.topics for tp in partitions[t]}
            samples += lag_samples(c.group, own, committed.get(c.group, {}))
        await _write(conn, samples, [c.group for c in self.consumers])
        return samples

    async def _committed(
        self,
        admin: AIOKafkaAdminClient,
        conn: asyncpg.Connection,
        partitions: Mapping[str, list[TopicPartition]],
        generation: str,
    ) -> dict[str, dict[Partition, int | None]]:
        """Each consumer's next offset per partition: the group's from Kafka, the
        projectors' from PostgreSQL (only when stored in this broker generation)."""
        found: dict[str, dict[Partition, int | None]] = {}
        workers = self.workers
        asked = [tp for topic in workers.topics for tp in partitions[topic]]
        offsets = await admin.list_consumer_group_offsets(workers.group, partitions=asked)
        found[workers.group] = {
            (tp.topic, tp.partition): (at.offset if at.offset >= 0 else None)
            for tp, at in offsets.items()
        }
        rows = await conn.fetch(_PROJECTOR_OFFSETS, list(self.projectors), generation)
        for row in rows:
            group = PROJECTOR_GROUP_PREFIX + row["projector"]
            found.setdefault(group, {})[(row["topic"], row["partition"])] = row["next_offset"]
        return found


class PartitionEnds:
    """Where partitions end, from the high-water marks of fetches at their ends.

    The consumer stays assigned and paused between samples; a sample seeks each partition to
    its last known end, lets one fetch answer for every partition, and pauses again.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._known: dict[TopicPartition, int] = {}

    async def read(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._consumer
        if set(partitions) != consumer.assignment():
            consumer.assign(partitions)
            self._known = {}
        listed = await consumer.end_offsets(partitions)
        asked_ms = int(time.time() * 1000)
        for tp in partitions:
            consumer.seek(tp, max(listed[tp], self._known.get(tp, 0)))
        consumer.resume(*partitions)
        try:
            deadline = time.monotonic() + _FETCH_WAIT_S
            while time.monotonic() < deadline and not all(
                (consumer.last_poll_timestamp(tp) or 0) >= asked_ms for tp in partitions
            ):
                # What a fetch returns is not needed: only its high-water mark.
                await consumer.getmany(timeout_ms=100)
        finally:
            consumer.pause(*partitions)
        for tp in partitions:
            if (consumer.last_poll_timestamp(tp) or 0) >= asked_ms:
                self._known[tp] = max(listed[tp], consumer.highwater(tp) or 0)
            else:
                # No answer in time: the last end known stands, unless ListOffsets says more.
                self._known[tp] = max(listed[tp], self._known.get(tp, 0))
        return dict(self._known)


async def _write(conn: asyncpg.Connection, samples: list[LagSample], groups: list[str]) -> None:
    """The sample replaces the previous one of these groups, in one transaction."""
    sampled_at = datetime.now(UTC)
    columns: list[list[object]] = [[], [], [], [], [], []]
    for s in samples:
        for column, value in zip(
            columns,
            (s.consumer_group, s.topic, s.partition, s.end_offset, s.committed, s.lag),
            strict=True,
        ):
            column.append(value)
    async with conn.transaction():
        await conn.execute(_UPSERT, *columns, sampled_at)
        await conn.execute(_FORGET, groups, sampled_at)
