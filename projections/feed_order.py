"""The order in which a batch's rows get their seq numbers: causal within every job.

A job's events travel on two topics. The runner sends a stage's progress (ArtifactStored,
LogEmitted, ...) only once its STARTED is acknowledged, and the outcome only once the progress
is; so whatever the partitions and the consumer's interleaving, these hold in the log:

- a stage attempt's progress follows its STARTED;
- the attempt's outcome (SUCCEEDED / FAILED / CANCELLED) follows its progress;
- a job's terminal event (JobFinished / JobRejected) follows all of its progress;
- the dispatcher's answer (JobAccepted / JobRejected) follows its JobRequested, which is on
  the requests topic.

The merge takes partitions head by head (each partition's order stands), never takes a head
whose predecessor above is still waiting in the batch, and among the heads it may take picks
the earliest by event time (openings before outcomes within a millisecond). Event times only
break ties between unrelated rows, so skewed clocks or a delayed send cannot break the order.
Rows whose predecessor is in no batch yet are the projector's concern: its consistent cut
reads every partition up to the batch's latest event time before the batch is numbered.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

StagedRow = tuple[Any, ...]
# What a row waits for: ("started" | "progress", job, stage, attempt), or ("job" | "requested",
# job).
Blocker = tuple[Any, ...]

PROGRESS_EVENTS = frozenset({"ProgressReported", "LogEmitted", "MetricRecorded", "ArtifactStored"})
# The dispatcher's answers to a JobRequested, which is on another topic (requests).
DISPATCHED_EVENTS = frozenset({"JobAccepted", "JobRejected"})
OPENINGS = frozenset({"JobRequested", "JobAccepted"})
OUTCOMES = frozenset({"JobFinished", "JobRejected"})


class FeedMerge:
    """One merge over the rows of one batch; `columns` names the positions of a row's fields."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._job = columns.index("job_id")
        self._type = columns.index("type")
        self._stage = columns.index("stage")
        self._attempt = columns.index("attempt")
        self._status = columns.index("status")
        self._time = columns.index("occurred_at")
        self._ord = columns.index("ord")

    def _attempt_of(self, row: StagedRow) -> tuple[Any, ...]:
        return row[self._job], row[self._stage], row[self._attempt]

    def _is_started(self, row: StagedRow) -> bool:
        return bool(row[self._type] == "StageChanged" and row[self._status] == "STARTED")

    def position(self, row: StagedRow) -> tuple[datetime, int, int]:
        """Where a row goes among rows it does not depend on: time, then phase, then arrival."""
        event_type = row[self._type]
        if event_type in OPENINGS or self._is_started(row):
            phase = 0
        elif event_type in OUTCOMES or event_type == "StageChanged":
            phase = 2
        else:
            phase = 1
        return row[self._time], phase, row[self._ord]

    def order(self, partitions: Iterable[Sequence[StagedRow]]) -> list[StagedRow]:
        """Every row once: each partition's order kept, and no row before what it follows."""
        queues = [queue for queue in partitions if queue]
        rows = [row for queue in queues for row in queue]
        unstarted = {self._attempt_of(row) for row in rows if self._is_started(row)}
        unrequested = {row[self._job] for row in rows if row[self._type] == "JobRequested"}
        progress_left: Counter[Blocker] = Counter()
        for row in rows:
            if row[self._type] in PROGRESS_EVENTS:
                progress_left[("progress", *self._attempt_of(row))] += 1
                progress_left[("job", row[self._job])] += 1

        def blocker(row: StagedRow) -> Blocker | None:
            event_type = row[self._type]
            if event_type in DISPATCHED_EVENTS and row[self._job] in unrequested:
                return ("requested", row[self._job])
            if event_type in PROGRESS_EVENTS:
                attempt = self._attempt_of(row)
                return ("started", *attempt) if attempt in unstarted else None
            if event_type == "StageChanged" and not self._is_started(row):
                key = ("progress", *self._attempt_of(row))
            elif event_type in OUTCOMES:
                key = ("job", row[self._job])
            else:
                return None
            return key if progress_left[key] else None

        heads = [0] * len(queues)
        ready: list[tuple[tuple[datetime, int, int], int]] = []
        waiting: dict[Blocker, list[int]] = {}

        def offer(index: int) -> None:
            if heads[index] < len(queues[index]):
                head = queues[index][heads[index]]
                waits_for = blocker(head)
                if waits_for is None:
                    heapq.heappush(ready, (self.position(head), index))
                else:
                    waiting.setdefault(waits_for, []).append(index)

        def release(key: Blocker) -> None:
            for index in waiting.pop(key, ()):
                offer(index)

        for index in range(len(queues)):
            offer(index)
        merged: list[StagedRow] = []
        while ready or waiting:
            if ready:
                _, index = heapq.heappop(ready)
            else:
                index = self._unblock(queues, heads, waiting)
            row = queues[index][heads[index]]
            heads[index] += 1
            merged.append(row)
            if row[self._type] == "JobRequested" and row[self._job] in unrequested:
                unrequested.discard(row[self._job])
                release(("requested", row[self._job]))
            elif self._is_started(row):
                attempt = self._attempt_of(row)
                if attempt in unstarted:
                    unstarted.discard(attempt)
                    release(("started", *attempt))
            elif row[self._type] in PROGRESS_EVENTS:
                for key in (("progress", *self._attempt_of(row)), ("job", row[self._job])):
                    progress_left[key] -= 1
                    if not progress_left[key]:
                        release(key)
            offer(index)
        return merged

    def _unblock(
        self,
        queues: Sequence[Sequence[StagedRow]],
        heads: list[int],
        waiting: dict[Blocker, list[int]],
    ) -> int:
        """Every head waits: events no runner sends (written by hand). Take the earliest."""
        key, index = min(
            ((key, index) for key, indexes in waiting.items() for index in indexes),
            key=lambda item: self.position(queues[item[1]][heads[item[1]]]),
        )
        waiting[key].remove(index)
        if not waiting[key]:
            del waiting[key]
        log.warning("feed order: %s has no order that meets its dependencies", key)
        return index


class WindowedMerge:
    """Partitions read to their ends a fetch at a time, merged in windows: a rebuild's feed
    order without holding every row at once (projections/rebuild.py).

    A window is every row, in each partition, before the first one at or past the cut: the
    earliest of the latest event times read in the partitions still open. What was appended
    to a partition before a row read from it happened before that row, so a row before the cut
    has all of its predecessors read (the live projector's consistent cut, where a partition
    that ends counts as read to its end). `FeedMerge` then orders the window.
    """

    def __init__(self, columns: Sequence[str], partitions: Iterable[Any]) -> None:
        self._merge = FeedMerge(columns)
        self._time = columns.index("occurred_at")
        self._queues: dict[Any, deque[StagedRow]] = {tp: deque() for tp in partitions}
        self._reached: dict[Any, datetime] = {}
        self._open = set(self._queues)

    def add(self, partition: Any, rows: Iterable[StagedRow]) -> None:
        """Rows read from `partition`, in its order."""
        queue = self._queues[partition]
        for row in rows:
            queue.append(row)
            reached = self._reached.get(partition)
            if reached is None or row[self._time] > reached:
                self._reached[partition] = row[self._time]

    def end(self, partition: Any) -> None:
        """`partition` has been read to its end."""
        self._open.discard(partition)

    def window(self) -> list[StagedRow]:
        """The rows before the cut, in feed order, taken out; all of them once every partition
        ended. Empty while an open partition has given nothing yet."""
        if any(partition not in self._reached for partition in self._open):
            return []
        cut = min((self._reached[partition] for partition in self._open), default=None)
        taken = []
        for queue in self._queues.values():
            prefix = []
            while queue and (cut is None or queue[0][self._time] < cut):
                prefix.append(queue.popleft())
            taken.append(prefix)
        return self._merge.order(taken)
