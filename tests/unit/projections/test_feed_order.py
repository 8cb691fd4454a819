"""Feed order as a property: whatever the interleaving of sends, clocks and batches, each job's
feed is its causal chain (JobRequested, JobAccepted, each attempt's STARTED, progress, outcome,
JobFinished)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.batch import STAGED_COLUMNS, Batch
from projections.feed_order import FeedMerge, WindowedMerge
from schemas.codec import default_codec
from tests.unit.schemas.sample_events import sample

CODEC = default_codec()
ENVELOPE = ("event_id", "job_id", "tenant", "occurred_at", "source")
REQUESTS, EVENTS, PROGRESS = "requests", "events", "progress"
START_MS = 1_700_000_000_000


def base(job_id: str, at: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "job_id": job_id,
        "tenant": "acme",
        "occurred_at": at,
        "source": "test",
    }


@dataclass
class Step:
    """One event of a job's causal chain, not yet created."""

    topic: str
    event_type: str
    fields: dict[str, Any]


def chain(stages: list[tuple[int, bool]]) -> list[Step]:
    """A job's events in causal order; `stages` is (progress count, failed first) per stage."""
    # The request's own fields; base() gives each event its envelope.
    request = {k: v for k, v in sample("JobRequested").items() if k not in ENVELOPE}
    steps = [
        Step(REQUESTS, "JobRequested", request),
        Step(
            EVENTS,
            "JobAccepted",
            {"kind": "MODEL", "target": "pytorch", "stages": [], "idempotency_key": None},
        ),
    ]
    for number, (progress, retried) in enumerate(stages):
        for attempt in (1, 2) if retried else (1,):
            stage = {"stage": f"s{number}", "attempt": attempt}
            outcome = "FAILED" if retried and attempt == 1 else "SUCCEEDED"
            changed = {"summary": "{}", "error": None, "duration_ms": None}
            steps.append(Step(EVENTS, "StageChanged", stage | changed | {"status": "STARTED"}))
            for n in range(progress):
                message = {"percent": float(n), "message": ""}
                steps.append(Step(PROGRESS, "ProgressReported", stage | message))
            steps.append(
                Step(
                    EVENTS,
                    "StageChanged",
                    stage | changed | {"status": outcome, "reported": progress},
                )
            )
    steps.append(
        Step(
            EVENTS,
            "JobFinished",
            {"status": "SUCCEEDED", "error": None, "stages_completed": [], "duration_ms": None},
        )
    )
    return steps


@dataclass
class Log:
    """Partitions as the broker holds them: (event id, event time, bytes) in append order."""

    partitions: dict[tuple[str, int], list[tuple[str, bytes]]] = field(default_factory=dict)
    appended: list[tuple[str, int]] = field(default_factory=list)  # partition of each append

    def append(self, topic: str, partition: int, value: bytes, event_id: str) -> None:
        self.partitions.setdefault((topic, partition), []).append((event_id, value))
        self.appended.append((topic, partition))


@st.composite
def histories(draw: st.DrawFn) -> tuple[Log, dict[str, list[str]]]:
    """Jobs run side by side; an event is created any time after its predecessor was
    acknowledged and appended later (a delayed send), on a clock with many equal milliseconds."""
    job_count = draw(st.integers(1, 5))
    plans = [
        draw(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=3))
        for _ in range(job_count)
    ]
    jobs = [str(uuid.uuid4()) for _ in plans]
    chains = {job: chain(plan) for job, plan in zip(jobs, plans, strict=True)}
    homes = {
        job: {topic: draw(st.integers(0, 1)) for topic in (REQUESTS, EVENTS, PROGRESS)}
        for job in jobs
    }
    acked = dict.fromkeys(jobs, START_MS)  # when each job's last event was acknowledged
    sent: dict[str, list[str]] = {job: [] for job in jobs}
    log = Log()
    now = START_MS
    while unfinished := [job for job in jobs if len(sent[job]) < len(chains[job])]:
        job = draw(st.sampled_from(unfinished))
        now += draw(st.integers(0, 1))
        created = draw(st.integers(acked[job], now))
        step = chains[job][len(sent[job])]
        record = base(job, created) | step.fields
        log.append(
            step.topic,
            homes[job][step.topic],
            CODEC.encode(step.event_type, record),
            record["event_id"],
        )
        sent[job].append(record["event_id"])
        acked[job] = now
    return log, sent


def project(log: Log, cuts: list[int], order: list[int]) -> list[tuple[str, str]]:
    """Batches at consistent cuts of the log, each consumed partition by partition in `order`.

    Returns (job id, event id) in seq order.
    """
    names = sorted(log.partitions)
    taken = dict.fromkeys(names, 0)
    feed: list[tuple[str, str]] = []
    for cut in [*sorted(set(cuts)), len(log.appended)]:
        upto = {name: log.appended[:cut].count(name) for name in names}
        batch = Batch(CODEC)
        for index in order:
            name = names[index % len(names)]
            for offset in range(taken[name], upto[name]):
                batch.add(*name, offset, log.partitions[name][offset][1])
            taken[name] = max(taken[name], upto[name])
        job_column, id_column = STAGED_COLUMNS.index("job_id"), STAGED_COLUMNS.index("event_id")
        feed += [(row[job_column], row[id_column]) for row in batch.in_feed_order()]
    return feed


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    order=st.permutations(range(6)),
)
def test_every_job_feed_is_its_causal_chain(
    history: tuple[Log, dict[str, list[str]]], cuts: list[int], order: list[int]
) -> None:
    log, sent = history
    feed = project(log, [cut for cut in cuts if cut < len(log.appended)], order)
    assert len(feed) == sum(len(ids) for ids in sent.values())
    for job, ids in sent.items():
        assert [event for owner, event in feed if owner == job] == ids


def row(job: str, ord_: int, event_type: str, status: str | None, at: int) -> tuple[Any, ...]:
    fields = dict.fromkeys(STAGED_COLUMNS) | {
        "ord": ord_,
        "job_id": job,
        "type": event_type,
        "status": status,
        "stage": "a",
        "attempt": 1,
        "occurred_at": at,
    }
    return tuple(fields[name] for name in STAGED_COLUMNS)


def test_rows_that_wait_on_each_other_in_a_cycle_are_still_all_numbered_once() -> None:
    # Hand-written events no runner sends: an outcome above the STARTED its progress needs.
    job = str(uuid.uuid4())
    outcome = row(job, 0, "StageChanged", "SUCCEEDED", 2)
    started = row(job, 1, "StageChanged", "STARTED", 1)
    progress = row(job, 2, "ProgressReported", None, 1)
    merged = FeedMerge(STAGED_COLUMNS).order([[outcome, started], [progress]])
    assert sorted(merged) == sorted([outcome, started, progress])
    assert merged.index(outcome) < merged.index(started)


def windowed(log: Log, reads: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """The log read as a replay reads it: `reads` says which partition gives how many rows
    next; a window is taken after every read. Returns (job id, event id) in feed order."""
    names = sorted(log.partitions)
    merge = WindowedMerge(STAGED_COLUMNS, names)
    read = dict.fromkeys(names, 0)
    feed: list[tuple[str, str]] = []

    def take() -> None:
        job_column, id_column = STAGED_COLUMNS.index("job_id"), STAGED_COLUMNS.index("event_id")
        feed.extend((row[job_column], row[id_column]) for row in merge.window())

    for pick, size in [*reads, *((n, 10**6) for n in range(len(names)))]:
        name = names[pick % len(names)]
        messages = log.partitions[name][read[name] : read[name] + size]
        batch = Batch(CODEC)
        for offset, (_, value) in enumerate(messages, start=read[name]):
            batch.add(*name, offset, value)
        merge.add(name, batch.rows)
        read[name] += len(messages)
        if read[name] == len(log.partitions[name]):
            merge.end(name)
        take()
    return feed


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    reads=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6)), max_size=12),
)
def test_a_replay_read_window_by_window_gives_every_job_its_causal_chain(
    history: tuple[Log, dict[str, list[str]]], reads: list[tuple[int, int]]
) -> None:
    log, sent = history
    feed = windowed(log, reads)
    assert len(feed) == sum(len(ids) for ids in sent.values())
    for job, ids in sent.items():
        assert [event for owner, event in feed if owner == job] == ids


def test_no_window_while_an_open_partition_has_given_nothing() -> None:
    job = str(uuid.uuid4())
    merge = WindowedMerge(STAGED_COLUMNS, ["a", "b"])
    merge.add("a", [row(job, 0, "StageChanged", "STARTED", 1), row(job, 1, "JobFinished", None, 5)])
    assert merge.window() == []
    merge.add("b", [row(job, 0, "ProgressReported", None, 3)])
    # The cut is b's latest time (3): a's outcome at 5 waits, b's own row at the cut too.
    assert [r[STAGED_COLUMNS.index("type")] for r in merge.window()] == ["StageChanged"]
    merge.end("a")
    merge.end("b")
    assert [r[STAGED_COLUMNS.index("type")] for r in merge.window()] == [
        "ProgressReported",
        "JobFinished",
    ]
