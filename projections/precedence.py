"""What a projector session has already read of each stage attempt, so that a batch whose rows
have nothing left to wait for is numbered without a consistent cut.

A batch asks for a cut when it holds an event whose causal predecessors went to another topic
(`Batch.needs_cut`): a progress event follows its attempt's STARTED (events topic), and an
outcome follows its attempt's progress (progress topic). The runner sends progress only after
STARTED is acknowledged and the outcome only after every progress event is, and it counts them
in the outcome's `reported`. So when this session has read the attempt's STARTED, or every one
of its `reported` progress events (by event id), nothing of it can still be unread, and the cut
would read the other partitions for nothing: one ListOffsets round trip and a fetch for every
lone event, which is most of a quiet stack's feed latency.

Only what is certain counts: a SUCCEEDED outcome (a FAILED one may be written for an attempt
whose worker died, by someone who cannot count its progress), progress events told apart by
their event ids (a repeated one is not counted twice), and only rows of batches handed to the
writer in this session (a session starts empty; a batch that fails to commit ends the session).
What is forgotten (an attempt beyond the limit, a batch too big to note) only means a cut.

The dispatcher's answer to a request (JobAccepted, JobRejected) follows its JobRequested, which
is on the requests topic: it is settled once this session has taken that request.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence

from projections.batch import STAGED_COLUMNS, StagedRow
from projections.feed_order import DISPATCHED_EVENTS, PROGRESS_EVENTS

Attempt = tuple[str, str, int]

_JOB = STAGED_COLUMNS.index("job_id")
_TYPE = STAGED_COLUMNS.index("type")
_STAGE = STAGED_COLUMNS.index("stage")
_ATTEMPT = STAGED_COLUMNS.index("attempt")
_STATUS = STAGED_COLUMNS.index("status")
_EVENT_ID = STAGED_COLUMNS.index("event_id")
_PAYLOAD = STAGED_COLUMNS.index("payload")

# Attempts (and requested jobs) remembered; the least recently noted are forgotten first. What
# one job's events need of each other arrives milliseconds apart, and 2,000 is seconds of
# history at 200 jobs/s; an attempt whose progress keeps coming stays (note). A forgotten one
# costs a cut, not correctness. At this size the memory is full after ~2,000 jobs, not 20,000.
ATTEMPTS_KEPT = 2_000
# Batches bigger than this are not noted: a backlog is cut anyway, and noting costs CPU per row.
NOTED_BATCH_ROWS = 256


class Precedence:
    """The STARTED and progress events of each stage attempt taken into batches so far."""

    def __init__(self, attempts_kept: int = ATTEMPTS_KEPT) -> None:
        self._kept = attempts_kept
        self._started: OrderedDict[Attempt, None] = OrderedDict()
        self._progress: OrderedDict[Attempt, set[str]] = OrderedDict()
        # Jobs whose JobRequested was taken: the dispatcher's answer to it needs no cut.
        self._requested: OrderedDict[str, None] = OrderedDict()

    def settled(self, rows: Sequence[StagedRow]) -> bool:
        """Whether every row of a batch that follows something on another topic finds it in
        the batch itself or in a batch noted before: then no cut is needed."""
        if self.unrequested(rows):
            return False
        started, progress = self._read(rows)
        for row in rows:
            event_type = row[_TYPE]
            attempt = _attempt_of(row)
            if event_type in PROGRESS_EVENTS:
                if attempt not in started and attempt not in self._started:
                    return False
            elif event_type == "StageChanged" and row[_STATUS] != "STARTED":
                reported = _reported(row)
                if reported == 0:
                    continue
                if row[_STATUS] != "SUCCEEDED":
                    return False
                seen = progress.get(attempt, set()) | self._progress.get(attempt, set())
                if len(seen) != reported:
                    return False
        return True

    def unrequested(self, rows: Sequence[StagedRow]) -> set[str]:
        """The jobs the dispatcher answers in `rows` whose JobRequested is neither in `rows` nor
        in a batch noted before."""
        requested = {row[_JOB] for row in rows if row[_TYPE] == "JobRequested"}
        return {
            row[_JOB]
            for row in rows
            if row[_TYPE] in DISPATCHED_EVENTS
            and row[_JOB] not in requested
            and row[_JOB] not in self._requested
        }

    def note(self, rows: Sequence[StagedRow]) -> None:
        """Remember a batch handed to the writer (a batch that fails to commit ends the session,
        and this memory with it)."""
        if len(rows) > NOTED_BATCH_ROWS:
            return
        started, progress = self._read(rows)
        for attempt in started:
            self._started[attempt] = None
            self._started.move_to_end(attempt)
        for attempt, event_ids in progress.items():
            self._progress.setdefault(attempt, set()).update(event_ids)
            self._progress.move_to_end(attempt)
            # A long stage's STARTED stays remembered while it reports.
            if attempt in self._started:
                self._started.move_to_end(attempt)
        for row in rows:
            if row[_TYPE] == "JobRequested":
                self._requested[row[_JOB]] = None
                self._requested.move_to_end(row[_JOB])
        for kept in (self._started, self._progress, self._requested):
            while len(kept) > self._kept:
                kept.popitem(last=False)

    @staticmethod
    def _read(rows: Sequence[StagedRow]) -> tuple[set[Attempt], dict[Attempt, set[str]]]:
        started: set[Attempt] = set()
        progress: dict[Attempt, set[str]] = {}
        for row in rows:
            event_type = row[_TYPE]
            if event_type in PROGRESS_EVENTS:
                progress.setdefault(_attempt_of(row), set()).add(row[_EVENT_ID])
            elif event_type == "StageChanged" and row[_STATUS] == "STARTED":
                started.add(_attempt_of(row))
        return started, progress


def _attempt_of(row: StagedRow) -> Attempt:
    return row[_JOB], row[_STAGE], row[_ATTEMPT]


def _reported(row: StagedRow) -> int:
    """An outcome's count of the progress events its attempt sent before it."""
    reported = json.loads(row[_PAYLOAD]).get("reported") or 0
    return int(reported)
