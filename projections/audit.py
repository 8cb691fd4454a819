"""Audits of what the projector recorded: the archive's hash chain, and one job's history.

`verify_archive` walks `event_archive` in position order with a server-side cursor and names
the first row at which the chain breaks (projections/archive.py); it also checks that the
archive reaches the feed's last seq, since the chain alone cannot tell that its newest rows
were cut off. `audit_job` checks a job's invariants on its archived events and returns its
timeline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.archive import ArchivedEvent, Break, ChainCheck, Link
from schemas.codec import Codec, DecodeError

_BATCH = 1_000
_ROWS = """
SELECT position, seq, event_id, topic, partition, "offset", type, job_id, occurred_at, key,
       value, prev_hash, hash
FROM event_archive ORDER BY position
"""


def _link(row: asyncpg.Record) -> Link:
    event = ArchivedEvent(
        event_id=row["event_id"],
        seq=row["seq"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        type=row["type"],
        job_id=row["job_id"],
        occurred_at=row["occurred_at"],
        key=None if row["key"] is None else bytes(row["key"]),
        value=bytes(row["value"]),
    )
    return Link(row["position"], event, bytes(row["prev_hash"]), bytes(row["hash"]))


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """What a walk of the archive found."""

    rows: int
    head: str | None
    broken: Break | None
    # The feed's last seq when the archive holds no row for it (its newest rows were removed).
    missing_tail: int | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None and self.missing_tail is None


async def verify_archive(conn: asyncpg.Connection) -> ArchiveReport:
    """Walk the whole chain in one snapshot; the first break, if any."""
    check = ChainCheck()
    broken = None
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(_ROWS, prefetch=_BATCH):
            broken = check.check(_link(row))
            if broken is not None:
                break
        newest_fed = await conn.fetchval("SELECT max(seq) FROM job_events")
        archived = await conn.fetchval("SELECT 1 FROM event_archive WHERE seq = $1", newest_fed)
    missing_tail = int(newest_fed) if newest_fed is not None and archived is None else None
    head = check.previous.hex() if check.rows and broken is None else None
    return ArchiveReport(check.rows, head, broken, None if broken else missing_tail)


_JOB_ROWS = """
SELECT position, seq, event_id, topic, partition, "offset", type, job_id, occurred_at, key,
       value, prev_hash, hash
FROM event_archive WHERE job_id = $1 ORDER BY position
"""
# The events that belong to one stage attempt and so must lie between its STARTED and its end.
_ATTEMPT_EVENTS = ("ProgressReported", "LogEmitted", "MetricRecorded", "ArtifactStored")
_OUTCOMES = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class JobAudit:
    """A job's archived history: one line per event, and every invariant it breaks."""

    job_id: str
    timeline: list[str]
    problems: list[str]


def job_problems(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The invariants a job's history (in feed order, JobRequested included) breaks.

    One JobAccepted or one JobRejected; for an accepted job, stages only of its plan, in plan
    order, each after the one before it succeeded; each attempt's events after its STARTED
    and before its outcome, one outcome at most; exactly one JobFinished, last; a job that
    SUCCEEDED has every stage of its plan succeeded.
    """
    problems: list[str] = []
    types = [event_type for event_type, _ in events]
    verdicts = types.count("JobAccepted") + types.count("JobRejected")
    if verdicts != 1:
        problems.append(f"{verdicts} JobAccepted/JobRejected events, not exactly one")
    if "JobRejected" in types:
        if {"StageChanged", "JobFinished"} & set(types):
            problems.append("a rejected job has stage or finish events")
        return problems
    finished = [i for i, kind in enumerate(types) if kind == "JobFinished"]
    if len(finished) != 1:
        problems.append(f"{len(finished)} JobFinished events, not exactly one")
    elif finished[0] != len(types) - 1:
        after = ", ".join(sorted(set(types[finished[0] + 1 :])))
        problems.append(f"events after JobFinished: {after}")
    plan = next((list(r.get("stages") or []) for t, r in events if t == "JobAccepted"), [])
    states: dict[tuple[Any, Any], str] = {}
    succeeded: set[str] = set()
    for event_type, record in events:
        stage, attempt = record.get("stage"), record.get("attempt")
        where = f"{stage} attempt {attempt}"
        if event_type == "StageChanged":
            status = record.get("status")
            if stage not in plan:
                problems.append(f"{where}: stage is not in the plan {plan}")
                continue
            previous = plan[: plan.index(stage)]
            if status == "STARTED":
                if (stage, attempt) in states:
                    problems.append(f"{where}: STARTED twice")
                missing = [name for name in previous if name not in succeeded]
                if missing:
                    problems.append(f"{where}: STARTED before {', '.join(missing)} succeeded")
                states[(stage, attempt)] = "STARTED"
            elif status in _OUTCOMES:
                state = states.get((stage, attempt))
                if state is None:
                    problems.append(f"{where}: {status} without STARTED")
                elif state != "STARTED":
                    problems.append(f"{where}: {status} after {state}")
                states[(stage, attempt)] = str(status)
                if status == "SUCCEEDED":
                    succeeded.add(str(stage))
        elif event_type in _ATTEMPT_EVENTS:
            state = states.get((stage, attempt))
            if state != "STARTED":
                when = "before its STARTED" if state is None else f"after its {state}"
                problems.append(f"{where}: {event_type} {when}")
        elif event_type == "JobFinished" and record.get("status") == "SUCCEEDED":
            missing = [name for name in plan if name not in succeeded]
            if missing:
                problems.append(f"JobFinished SUCCEEDED but {', '.join(missing)} did not succeed")
    return problems


def _line(position: int, event_type: str, record: dict[str, Any]) -> str:
    moment = record.get("occurred_at")
    parts = [f"{position:>8}", str(moment), event_type]
    for key in ("stage", "attempt", "status", "percent", "name"):
        if record.get(key) is not None:
            parts.append(f"{key}={record[key]}")
    error = record.get("error")
    if isinstance(error, dict) and error.get("code"):
        parts.append(f"error={error['code']}")
    return " ".join(parts)


async def audit_job(conn: asyncpg.Connection, codec: Codec, job_id: uuid.UUID) -> JobAudit | None:
    """The job's archived events decoded, its timeline and problems; None if none archived."""
    rows = await conn.fetch(_JOB_ROWS, job_id)
    if not rows:
        return None
    events = []
    timeline = []
    problems = []
    for row in rows:
        link = _link(row)
        try:
            event_type, record = codec.decode(link.event.value)
        except DecodeError as error:
            problems.append(f"position {link.position}: the archived bytes do not decode: {error}")
            continue
        events.append((event_type, record))
        timeline.append(_line(link.position, event_type, record))
    return JobAudit(str(job_id), timeline, problems + job_problems(events))
