"""The control plane as one worker sees it: every CancelRequested, whichever worker runs the job.

A consumer group would hand each control message to one worker only, while the job it names
may run on any of them; so every worker reads the whole control topic outside any group. It
reads what is already there before it starts serving, so a job cancelled before a worker
joined is still never started by it, and then follows the topic live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.envelope import Origin
from streams.intake import Intake
from streams.settings import Settings

log = logging.getLogger(__name__)

# The source suffix of the stage watchdog's cancels (api/watchdog.py).
WATCHDOG_SUFFIX = ".watchdog"
# How long to wait for the control topic to appear, and to pause after a failed fetch.
_RETRY_S = 1.0


class ControlListener:
    """What this worker has been asked to cancel; stages ask `cancelled` or `watch` a job."""

    def __init__(self) -> None:
        self._cancelled: dict[str, str] = {}
        self._ended_elsewhere: set[str] = set()
        self._watchers: dict[str, set[asyncio.Event]] = {}

    async def handle(self, record: Mapping[str, Any]) -> None:
        job_id = str(record["job_id"])
        reason = str(record.get("reason") or "")
        self._cancelled.setdefault(job_id, reason)
        if str(record.get("source", "")).endswith(WATCHDOG_SUFFIX):
            # The watchdog has ended the job itself: stop, and publish nothing more for it.
            self._ended_elsewhere.add(job_id)
        watchers = self._watchers.get(job_id, ())
        log.info(
            "cancel requested for job %s (%s); %d running stage(s) stop",
            job_id,
            reason or "no reason given",
            len(watchers),
        )
        for event in watchers:
            event.set()

    def cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled

    def ended_elsewhere(self, job_id: str) -> bool:
        """True when the job's end was published by the watchdog, not by a stage."""
        return job_id in self._ended_elsewhere

    def reason(self, job_id: str) -> str:
        return self._cancelled.get(job_id, "")

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` is cancelled (already set if it was)."""
        event = asyncio.Event()
        if job_id in self._cancelled:
            event.set()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers[job_id]
            watchers.discard(event)
            if not watchers:
                del self._watchers[job_id]


def consumer_options(settings: Settings) -> dict[str, Any]:
    """A consumer in no group, committing nothing, reading the topic from its start."""
    return {
        "bootstrap_servers": settings.require_kafka(),
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # A cancel is not a job's hop: it may wait a little for its fetch.
        "fetch_max_wait_ms": settings.fetch_background_wait_ms,
        "client_id": f"{settings.app_id}-control",
    }


class ControlFeed:
    """Reads every partition of the control topic and hands each message to its Intake."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self._consumer: AIOKafkaConsumer | None = None
        self._listening: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Every cancel already on the topic is handled when this returns; later ones follow."""
        consumer = AIOKafkaConsumer(**consumer_options(self.settings))
        self._consumer = consumer
        await consumer.start()
        topic = self.settings.topics.control
        await consumer.topics()
        while not (partitions := consumer.partitions_for_topic(topic)):
            log.info("waiting for topic %s", topic)
            await asyncio.sleep(_RETRY_S)
            await consumer.topics()
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        listed = await consumer.end_offsets(assigned)
        while True:
            behind = [tp for tp in assigned if await consumer.position(tp) < listed[tp]]
            if not behind:
                break
            for messages in (await consumer.getmany(*behind, timeout_ms=100)).values():
                for message in messages:
                    await self.intake.receive(Origin.of(message))
        self._listening = asyncio.create_task(self._listen(consumer))

    async def stop(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _listen(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                async for message in consumer:
                    await self.intake.receive(Origin.of(message))
            except Exception:  # a broker hiccup must not end this worker's control plane
                log.exception("reading %s failed; reading on", self.settings.topics.control)
                await asyncio.sleep(_RETRY_S)
