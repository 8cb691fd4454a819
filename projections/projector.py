"""The projector: consumes requests, events and progress, and keeps the Postgres projections.

It reads without a consumer group and resumes from `projection_offsets`, which it writes in
the same transaction as the rows, so a crash at any point neither loses nor doubles an event.
No agent reads events and progress, so the live projector dead-letters what it cannot store
there, before it commits the batch: a crash may repeat a letter (same event id), never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.batch import Batch, Consumed
from projections.metrics import ProjectorMetrics
from projections.precedence import Precedence
from projections.session import (
    GenerationChanged,
    GenerationWatch,
    hold_name,
    open_session,
    resume_sessions,
)
from projections.writer import NOTIFY_CHANNEL, Applied, ProjectionWriter
from schemas.codec import Codec
from streams.envelope import dead_letter
from streams.fetch_pace import FetchPace
from streams.generation import broker_state
from streams.producer import EventPublisher
from streams.settings import Settings

__all__ = ["NOTIFY_CHANNEL", "Projector", "ProjectorStats"]

# How long an idle fetch waits before looking at the stop event again.
_IDLE_POLL_MS = 200
# Decoding yields to the event loop after this many messages, so a commit in flight goes on.
_FETCH_CHUNK = 50
# Reading every partition up to a consistent cut before a commit is bounded by this.
_CUT_TIMEOUT_S = 2.0
_STATEMENT_TIMEOUT_S = 120.0
# How long a session may take to start, from holding the lock to its first fetch.
_SESSION_START_S = 30.0

log = logging.getLogger(__name__)


class SessionStalled(Exception):
    """A session did not get going in time: it starts over, saying where it was stuck."""


@dataclass
class ProjectorStats:
    """Running totals since the projector started (read by the bench and health checks)."""

    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    undecodable: int = 0
    dead_lettered: int = 0
    batches: int = 0
    last_seq: int | None = None

    def count(self, batch: Batch, applied: Applied) -> None:
        self.messages += len(batch)
        self.applied += applied.fresh
        self.duplicates += applied.duplicates
        self.undecodable += batch.undecodable
        self.batches += 1
        if applied.max_seq is not None:
            self.last_seq = applied.max_seq


class _EarlyRequests:
    """The answers in a batch that lack their request, while a cut reads requests on for them.

    Counted again only once rows other than the requests taken here came in: a long read of
    requests stays linear in its length.
    """

    def __init__(self, batch: Batch, precedence: Precedence) -> None:
        self.batch = batch
        self._precedence = precedence
        self._missing: set[str] = set()
        self._counted = -1

    def lacking(self) -> bool:
        """Whether an answer in the batch still lacks its request."""
        if self._counted != len(self.batch.rows):
            self._missing = self._precedence.unrequested(self.batch.rows)
            self._counted = len(self.batch.rows)
        return bool(self._missing)

    def take(self, consumed: Consumed) -> None:
        """Put a request into the batch; a request follows nothing, so whenever it was made."""
        counted = self._counted == len(self.batch.rows)
        self.batch.take(consumed)
        if consumed.job_id is not None:
            self._missing.discard(consumed.job_id)
        if counted:
            self._counted = len(self.batch.rows)


class Projector:
    """One projector, named so several (live, replay) can keep separate offsets."""

    def __init__(
        self, settings: Settings, codec: Codec, name: str = "main", schema: str | None = None
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.name = name
        # The Postgres schema written (a replay's own); None: the live projections.
        self.schema = schema
        self.stats = ProjectorStats()
        self._pace = FetchPace(settings.fetch_max_wait_ms, settings.fetch_busy_wait_ms)
        self.metrics = ProjectorMetrics(name, self.stats)
        self._step = "connecting"
        self.topics = (settings.topics.requests, settings.topics.events, settings.topics.progress)
        # Only the live projector dead-letters, so a replay does not repeat its letters; and
        # not `requests`, whose bad messages the dispatcher (an Intake) dead-letters already.
        self.publisher = EventPublisher(settings, codec) if name == "main" else None
        self.dead_letter_topics = {settings.topics.events, settings.topics.progress}
        # A batch is read evenly across these in event time, so its cut needs little more
        # reading. Not `requests`: one message a job, waiting on nothing, mostly at its end;
        # balancing on it too made catch-up ten times slower (bench/projector.py).
        self.balanced_topics = {settings.topics.events, settings.topics.progress}

    async def run(self, stop: asyncio.Event) -> None:
        """Project until `stop` is set; lost database connections resume from stored offsets."""
        await resume_sessions(
            f"projector {self.name}", self._session, stop, (GenerationChanged, SessionStalled)
        )

    async def _session(self, stop: asyncio.Event) -> None:
        """One database connection and one consumer, positioned at the stored offsets."""
        self._step = "connecting to the database"
        async with open_session(
            self.settings, f"projector-{self.name}", _STATEMENT_TIMEOUT_S, self.schema
        ) as (conn, consumer):
            await self._consume(conn, consumer, stop)

    async def _consume(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> None:
        if not await hold_name(conn, self.name, stop):
            return
        try:
            # Each step is bounded: a session that cannot start (a broker that answers
            # but not yet sensibly) starts over instead of waiting without a word.
            async with asyncio.timeout(_SESSION_START_S):
                writer = await self._start(conn, consumer, stop)
        except TimeoutError:
            raise SessionStalled(
                f"projector {self.name}: the session did not start within "
                f"{_SESSION_START_S:g} s (stuck at: {self._step})"
            ) from None
        if writer is not None:
            await self._project(consumer, writer, stop)

    async def _start(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> ProjectionWriter | None:
        """The consumer started, assigned and positioned; None when asked to stop first."""
        self._step = "starting the consumer"
        await consumer.start()
        self._step = "waiting for the topics"
        partitions = await self._partitions(consumer, stop)
        if not partitions:
            return None
        # aiokafka has no public handle on the consumer's connections; this one asks the
        # broker that serves the fetches.
        self._step = "asking the broker its generation"
        generation = (await broker_state(consumer._client)).generation
        writer = ProjectionWriter(conn, self.name, generation)
        self._step = "entering the generation"
        await writer.prepare()
        left = await writer.enter_generation()
        if left is not None:
            log.warning(
                "projector %s: the broker started a new log (generation %s, was %s); "
                "every partition is read from its start",
                self.name,
                generation,
                left,
            )
        consumer.assign(partitions)
        self._step = "positioning at the stored offsets"
        stored = await writer.offsets()
        for tp in partitions:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        log.info("projector %s consuming %d partitions", self.name, len(partitions))
        return writer

    async def _project(
        self, consumer: AIOKafkaConsumer, writer: ProjectionWriter, stop: asyncio.Event
    ) -> None:
        """Collect the next batch while the previous one commits, so decoding overlaps SQL."""
        written = Batch(self.codec)
        writing: asyncio.Task[Applied] | None = None
        watch = GenerationWatch(writer.generation)
        # This session's memory of what it read: lone events skip the cut (precedence.py).
        precedence = Precedence()
        try:
            if self.publisher is not None:
                await self.publisher.start()
            while not stop.is_set():
                batch = await self._collect(consumer, stop, precedence, writing)
                # The batch in flight was read and checked before: it commits whatever the
                # check of the next one finds (a new generation, a broker gone).
                if writing is not None:
                    self.stats.count(written, await writing)
                    writing = None
                await self._check_log(consumer, watch, bool(len(batch)))
                if len(batch):
                    precedence.note(batch.rows)
                    written, writing = batch, asyncio.create_task(self._write(writer, batch))
            if writing is not None:
                self.stats.count(written, await writing)
                writing = None
        finally:
            if writing is not None:
                # Only on failure: the batch was not committed and is read again on resume.
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing
            if self.publisher is not None:
                await self.publisher.stop()

    async def _write(self, writer: ProjectionWriter, batch: Batch) -> Applied:
        """The batch's dead letters acknowledged first, then its rows and offsets committed."""
        if self.publisher is not None:
            letters = [
                dead_letter(self.settings, item.origin, item.code, item.reason)
                for item in batch.unstorable
                if item.origin.topic in self.dead_letter_topics
            ]
            await self.publisher.publish(letters)
            self.stats.dead_lettered += len(letters)
        with self.metrics.batch_seconds.time():
            return await writer.apply(batch)

    async def _check_log(
        self, consumer: AIOKafkaConsumer, watch: GenerationWatch, fetched: bool
    ) -> None:
        """Raise GenerationChanged unless the log read is still the one the offsets point into.

        Run after a fetch and before its batch commits, so what came from another generation
        is never committed; and every few seconds while nothing comes, so a restarted broker is
        noticed even when the old positions fetch nothing from its new log. A partition whose
        position is past its end (a topic created again) starts over, said in the log;
        duplicates are dropped by event id.
        """
        await watch.check(consumer._client, fetched)
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None and await consumer.position(tp) > end:
                log.warning(
                    "projector %s: %s[%d] ends at %d, before the stored offset; reading it "
                    "from its start",
                    self.name,
                    tp.topic,
                    tp.partition,
                    end,
                )
                await consumer.seek_to_beginning(tp)

    async def _partitions(
        self, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> list[TopicPartition]:
        """Every partition of the projected topics, once all of them exist."""
        while not stop.is_set():
            await consumer.topics()
            found = {topic: consumer.partitions_for_topic(topic) for topic in self.topics}
            missing = [topic for topic, parts in found.items() if not parts]
            if not missing:
                return [
                    TopicPartition(topic, partition)
                    for topic, parts in found.items()
                    for partition in sorted(parts or ())
                ]
            self._step = f"waiting for the topics {missing}"
            log.info("projector %s waiting for topics %s", self.name, missing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return []

    async def _collect(
        self,
        consumer: AIOKafkaConsumer,
        stop: asyncio.Event,
        precedence: Precedence,
        writing: asyncio.Task[Applied] | None = None,
    ) -> Batch:
        """Messages until the batch is full, or nothing more arrives within the linger.

        The linger gathers what arrives while a commit is in flight into one batch; with no
        commit in flight and every partition read to the end its last fetch reported, there
        is nothing to gather, and waiting would only add the linger to every lone event. A batch
        whose rows all find what they follow in it or in earlier batches needs no cut.
        """
        size = self.settings.projector_batch
        linger = self.settings.projector_linger_ms / 1000
        loop = asyncio.get_running_loop()
        batch = Batch(self.codec)
        deadline: float | None = None
        while len(batch) < size and not stop.is_set():
            if deadline is None:
                timeout_ms = _IDLE_POLL_MS
            else:
                # Past the linger, only take what is already fetched; never wait for more.
                timeout_ms = max(0, int((deadline - loop.time()) * 1000))
            chunk = min(_FETCH_CHUNK, size - len(batch))
            # What is buffered for the partition furthest behind in event time first: a batch
            # read evenly across partitions needs little more reading to reach its cut.
            behind = self._furthest_behind(consumer, batch)
            fetched = await consumer.getmany(*behind, timeout_ms=0, max_records=chunk)
            if not fetched:
                fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=chunk)
            if not fetched and timeout_ms == 0 and await self._behind(consumer):
                # A backlog (catching up, or after a cut moved back): the linger bounds how
                # long a batch waits for news, but what the broker holds already is worth one
                # fetch round trip; without it a batch ends with whatever was buffered.
                fetched = await consumer.getmany(timeout_ms=_IDLE_POLL_MS, max_records=chunk)
            # Short fetches while events trickle in, long ones through a backlog.
            self._pace.pace(consumer, bool(fetched), behind=not self._caught_up(consumer))
            if not fetched:
                # Also when idle: the empty batch lets the commit in flight be accounted for.
                break
            for tp, messages in fetched.items():
                for message in messages:
                    batch.add(tp.topic, tp.partition, message.offset, message.value, message.key)
            # getmany returns without suspending when data is buffered: let the commit progress.
            await asyncio.sleep(0)
            if deadline is None:
                deadline = loop.time() + linger
            if (writing is None or writing.done()) and self._caught_up(consumer):
                break
        if batch.needs_cut and not precedence.settled(batch.rows):
            return await self._read_to_cut(consumer, batch, stop, precedence)
        return batch

    def _furthest_behind(self, consumer: AIOKafkaConsumer, batch: Batch) -> list[TopicPartition]:
        """The balanced partitions the batch has read nothing from, or else the one it has read
        least far in event time."""
        partitions = [tp for tp in consumer.assignment() if tp.topic in self.balanced_topics]
        unread = [tp for tp in partitions if (tp.topic, tp.partition) not in batch.reached]
        if unread or not partitions:
            return unread
        return [min(partitions, key=lambda tp: batch.reached[(tp.topic, tp.partition)])]

    @staticmethod
    def _caught_up(consumer: AIOKafkaConsumer) -> bool:
        """Whether every partition is read to the end its last fetch reported.

        Without asking the broker: `position()` waits for a partition whose position is being
        reset, which with the broker away is the request timeout, every batch.
        """
        subscription = consumer._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        if assignment is None:
            return False
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            state = assignment.state_value(tp)
            if end is None or state is None or not state.has_valid_position:
                return False
            if state.position < end:
                return False
        return True

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer) -> bool:
        """Whether some partition holds messages past the consumer's position."""
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None and await consumer.position(tp) < end:
                return True
        return False

    async def _read_to_cut(
        self,
        consumer: AIOKafkaConsumer,
        batch: Batch,
        stop: asyncio.Event,
        precedence: Precedence,
    ) -> Batch:
        """Read the other partitions up to the batch's latest event time: a consistent cut.

        Whatever was published before an event in the batch is then in the batch too (a
        stage's progress before its outcome, its STARTED before its progress), whichever
        topic it went to; `Batch.in_feed_order` then puts them in order. A partition is
        read until it ends (as it ends now) or reaches a later event, which is left for the
        next batch; the cut adds at most one batch size, so a backlog is not swallowed whole.
        When that is not enough (a backlog, a rebuild), the cut moves back to where the slowest
        partition got and what lies at or past it waits for the next batch.

        Then, while an answer in the batch lacks its request, the requests partitions are read
        on past the cut (`_read_requests_on`); requests are never trimmed off again.
        """
        cut = batch.latest
        if cut is None:
            return batch
        requests = self.settings.topics.requests
        # The requests topic too: a JobRequested is its job's first archived event, and the
        # dispatcher's answer to it on the events topic can be read first.
        partitions = list(consumer.assignment())
        # Tansu's ListOffsets can under-report an end: the fetches' high-water marks count too.
        listed = await consumer.end_offsets(partitions)
        ends = {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in partitions}
        open_ = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _CUT_TIMEOUT_S
        # A backlog written within one instant must not turn one batch into all of it.
        room = len(batch) + self.settings.projector_batch
        while open_ and not stop.is_set() and loop.time() < give_up:
            # Partitions not read at all in this batch first, past the room too: the cut can
            # only move back to where a partition got once it gave something.
            unread = [tp for tp in open_ if (tp.topic, tp.partition) not in batch.reached]
            targets = unread or list(open_)
            if len(batch) >= room and not unread:
                # Out of room: the cut moves back to the partition furthest behind, unless
                # that leaves nothing to commit; then only that partition is read on.
                lagging = min(targets, key=lambda tp: batch.reached[(tp.topic, tp.partition)])
                if batch.starts_before(batch.reached[(lagging.topic, lagging.partition)]):
                    break
                targets = [lagging]
            fetched = await consumer.getmany(*targets, timeout_ms=50, max_records=_FETCH_CHUNK)
            for tp, messages in fetched.items():
                for message in messages:
                    consumed = batch.stage(
                        tp.topic, tp.partition, message.offset, message.value, message.key
                    )
                    occurred_at = consumed.occurred_at
                    if occurred_at is not None and occurred_at > cut:
                        # Past the cut: it opens the next batch, with what came before it.
                        consumer.seek(tp, message.offset)
                        open_.discard(tp)
                        break
                    batch.take(consumed)
                else:
                    if await consumer.position(tp) >= ends[tp]:
                        open_.discard(tp)
        early = _EarlyRequests(batch, precedence)
        if early.lacking() and not stop.is_set():
            await self._read_requests_on(consumer, early, ends, give_up)
        if not open_ or stop.is_set():
            return batch
        reached = [batch.reached.get((tp.topic, tp.partition)) for tp in open_]
        if None not in reached:
            earliest = min(r for r in reached if r is not None)
            trimmed, resume = batch.trimmed(earliest, whole={requests})
            if len(trimmed):
                for (topic, partition), offset in resume.items():
                    consumer.seek(TopicPartition(topic, partition), offset)
                return trimmed
        log.warning("projector %s: partitions not read to the cut in time", self.name)
        return batch

    async def _read_requests_on(
        self,
        consumer: AIOKafkaConsumer,
        early: _EarlyRequests,
        ends: dict[TopicPartition, int],
        give_up: float,
    ) -> None:
        """Read the requests partitions past the cut while an answer in the batch lacks its
        request: the API or another producer stamps a request by a clock that may run ahead of
        the dispatcher's, and a request follows nothing, so it may be numbered early."""
        loop = asyncio.get_running_loop()
        requests = self.settings.topics.requests
        wanted = {
            tp
            for tp in consumer.assignment()
            if tp.topic == requests and await consumer.position(tp) < ends[tp]
        }
        while wanted and early.lacking() and loop.time() < give_up:
            fetched = await consumer.getmany(*wanted, timeout_ms=50, max_records=_FETCH_CHUNK)
            for tp, messages in fetched.items():
                for message in messages:
                    early.take(
                        early.batch.stage(
                            tp.topic, tp.partition, message.offset, message.value, message.key
                        )
                    )
                if await consumer.position(tp) >= ends[tp]:
                    wanted.discard(tp)
