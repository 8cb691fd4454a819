"""The control plane as one worker sees it: every CancelRequested, whichever worker runs the job.

A consumer group would hand each control message to one worker only, while the job it names
may run on any of them; so every worker reads the control topic outside any group, from the
moment it starts (a cancel sent before then is about work this worker never started).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.envelope import Origin
from streams.intake import Intake
from streams.settings import Settings

log = logging.getLogger(__name__)

# How long to wait for the control topic to appear, and to pause after a failed fetch.
_RETRY_S = 1.0


class ControlListener:
    """What this worker has been asked to cancel; stages ask `cancelled(job_id)`."""

    def __init__(self) -> None:
        self._cancelled: set[str] = set()

    async def handle(self, record: Mapping[str, Any]) -> None:
        job_id = str(record["job_id"])
        self._cancelled.add(job_id)
        # No stage that runs today can be stopped half-way; the execute stage will ask.
        log.warning(
            "cancel requested for job %s (%s); cancellation is not available until the "
            "execute stage lands",
            job_id,
            record.get("reason") or "no reason given",
        )

    def cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled


def consumer_options(settings: Settings) -> dict[str, Any]:
    """A consumer in no group, committing nothing, starting at the end of the topic."""
    return {
        "bootstrap_servers": settings.require_kafka(),
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
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
        """Positioned at the end of the topic when this returns: later messages all arrive."""
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
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)
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
