"""Running a job's next short stage where its command was just published.

A stage's command reaches the next stage through the broker: published, acknowledged, then
fetched by whichever worker reads that partition. When that worker is this process, the fetch
is a wait for something already in hand (on the embedded broker, most of a hop's 8-9 ms). So
once the broker has acknowledged the command (it is durable, exactly as before), the worker
that reads its partition runs it at once, in the same task, and remembers that it did. When
the delivery arrives it waits for that run if it is still going, then is acknowledged without
running the stage again. The delivery's offset is therefore committed only after the run has
ended, as if the run had come from it; a crash in between leaves the command in the log to be
read again, which is the at-least-once delivery every stage already handles (every event it
publishes has a deterministic id).

Only the short stages are handed off. Execute and train keep their own slots, attempt history
and watchdog; a command for a partition another worker reads goes the usual way.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from streams.producer import EventPublisher, Outgoing

# Stages that take milliseconds and keep no attempt history: safe to run in the caller's task.
SHORT_STAGES = ("parse", "compile", "codegen")
# How many handed-off runs a stage remembers until their deliveries arrive. A delivery that
# never comes (its partition moved to another worker) is forgotten after this many more.
REMEMBERED = 10_000

# Takes a published StageCommand record and runs it here.
Taker = Callable[[Mapping[str, Any]], Awaitable[None]]


class HandedOff:
    """The runs of one stage that started from a hand-off, until their deliveries arrive.

    Each run is a future that ends True when the run reached its outcome, False when it
    stopped without one (an outage, a shutdown): then its delivery runs the stage itself.
    """

    def __init__(self, capacity: int = REMEMBERED) -> None:
        self.capacity = capacity
        self._runs: OrderedDict[tuple[str, int], asyncio.Future[bool]] = OrderedDict()

    def started(self, job_id: str, attempt: int) -> asyncio.Future[bool]:
        run: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._runs[(job_id, attempt)] = run
        while len(self._runs) > self.capacity:
            self._runs.popitem(last=False)
        return run

    def arrived(self, job_id: str, attempt: int) -> asyncio.Future[bool] | None:
        """The handed-off run of this delivery's command, once; None when there was none."""
        return self._runs.pop((job_id, attempt), None)

    def __len__(self) -> int:
        return len(self._runs)


class Ownership:
    """Which partitions this worker reads now: a hand-off needs the delivery to come here."""

    def __init__(self) -> None:
        self._by_topic: dict[str, frozenset[int]] = {}

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The group's latest assignment to this worker replaces the one before."""
        by_topic: dict[str, set[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, set()).add(partition)
        # One assignment, swapped in whole: a reader never sees half of it.
        self._by_topic = {topic: frozenset(found) for topic, found in by_topic.items()}

    def revoked(self) -> None:
        """During a rebalance nothing is owned: every command goes through the broker."""
        self._by_topic = {}

    def owns(self, topic: str, partition: int) -> bool:
        return partition in self.partitions(topic)

    def partitions(self, topic: str) -> frozenset[int]:
        """The partitions of `topic` this worker reads now."""
        return self._by_topic.get(topic, frozenset())


class Handoff:
    """Who in this process takes a command published to a topic's partition, if anyone."""

    def __init__(self) -> None:
        self.ownership = Ownership()
        self._takers: dict[str, Taker] = {}

    def accept(self, topic: str, taker: Taker) -> None:
        self._takers[topic] = taker

    def accepts(self, topic: str) -> bool:
        return topic in self._takers

    def taker(self, topic: str, partition: int | None) -> Taker | None:
        if partition is None or not self.ownership.owns(topic, partition):
            return None
        return self._takers.get(topic)


async def hand_off(
    handoff: Handoff | None, publisher: EventPublisher, commands: Sequence[Outgoing]
) -> None:
    """Publish the commands; run here, now, each one whose partition this process reads.

    A handed-off stage starts before its command is acknowledged: the events it publishes
    follow, on their partition, everything the stage before it published (all acknowledged
    already), and the command only has to be durable before the message that led to it is
    acknowledged, which is when this returns. If it is not, that message is handled again
    and publishes the same command, with the same ids, again.
    """
    if handoff is None:
        await publisher.publish(commands)
        return
    # On a partition this worker reads, when it reads any of that topic's: with several
    # workers the chain then stays here instead of going to whoever reads the job's partition.
    placed = [
        await publisher.placed(item, handoff.ownership.partitions(item.topic))
        if handoff.accepts(item.topic)
        else item
        for item in commands
    ]
    acknowledged = await publisher.send(placed)
    for item in placed:
        taker = handoff.taker(item.topic, item.partition)
        if item.event_type == "StageCommand" and taker is not None:
            await taker(item.record)
    await asyncio.gather(*acknowledged)
