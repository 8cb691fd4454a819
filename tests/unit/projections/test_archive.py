"""The archive's hash chain and a job's invariants, without a database."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from projections.archive import GENESIS, ArchivedEvent, Link, digest, first_break
from projections.audit import job_problems

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def event(n: int) -> ArchivedEvent:
    return ArchivedEvent(
        event_id=uuid.UUID(int=n),
        seq=n,
        topic="stagecast.events",
        partition=n % 4,
        offset=n,
        type="StageChanged",
        job_id=uuid.UUID(int=1000),
        occurred_at=T0 + timedelta(milliseconds=n),
        key=b"job",
        value=f"bytes of event {n}".encode(),
    )


def chain(count: int) -> list[Link]:
    links, previous = [], GENESIS
    for position in range(1, count + 1):
        link = Link(
            position, event(position), previous, digest(previous, position, event(position))
        )
        links.append(link)
        previous = link.hash
    return links


def test_an_untouched_chain_holds_and_its_hashes_are_reproducible() -> None:
    links = chain(5)
    assert first_break(links) is None
    assert first_break(chain(5)) is None
    assert [link.hash for link in chain(5)] == [link.hash for link in links]
    assert len({link.hash for link in links}) == 5


def test_every_field_of_a_row_is_covered_by_its_hash() -> None:
    original = event(3)
    changes: dict[str, Any] = {
        "event_id": uuid.UUID(int=99),
        "seq": None,
        "topic": "stagecast.progress",
        "partition": 9,
        "offset": 4,
        "type": "JobFinished",
        "job_id": None,
        "occurred_at": original.occurred_at + timedelta(microseconds=1),
        "key": None,
        "value": original.value + b"!",
    }
    base = digest(GENESIS, 3, original)
    assert digest(GENESIS, 4, original) != base
    for name, value in changes.items():
        assert digest(GENESIS, 3, dataclasses.replace(original, **{name: value})) != base, name


def test_a_changed_row_is_named() -> None:
    links = chain(6)
    links[3] = dataclasses.replace(links[3], event=dataclasses.replace(event(4), value=b"forged"))
    broken = first_break(links)
    assert broken is not None and broken.position == 4
    assert "changed after archiving" in broken.reason


def test_a_deleted_row_is_named_at_the_row_after_it() -> None:
    links = chain(6)
    del links[2]  # position 3
    broken = first_break(links)
    assert broken is not None and broken.position == 4
    assert "deleted or changed" in broken.reason


def test_a_row_rehashed_in_place_still_breaks_the_next_link() -> None:
    links = chain(6)
    forged = dataclasses.replace(event(2), value=b"forged")
    links[1] = Link(2, forged, links[1].prev_hash, digest(links[1].prev_hash, 2, forged))
    broken = first_break(links)
    assert broken is not None and broken.position == 3


def lifecycle(*steps: tuple[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return list(steps)


PLAN = ["parse", "compile"]


def changed(stage: str, status: str, attempt: int = 1) -> tuple[str, dict[str, Any]]:
    return "StageChanged", {"stage": stage, "attempt": attempt, "status": status}


GOOD = lifecycle(
    ("JobRequested", {}),
    ("JobAccepted", {"stages": PLAN}),
    changed("parse", "STARTED"),
    ("ProgressReported", {"stage": "parse", "attempt": 1}),
    changed("parse", "SUCCEEDED"),
    changed("compile", "STARTED"),
    changed("compile", "FAILED"),
    changed("compile", "STARTED", 2),
    changed("compile", "SUCCEEDED", 2),
    ("JobFinished", {"status": "SUCCEEDED"}),
)


def test_a_job_that_kept_every_rule_has_no_problems() -> None:
    assert job_problems(GOOD) == []
    rejected = [("JobRequested", {}), ("JobRejected", {"error": {"code": "X"}})]
    assert job_problems(rejected) == []


def test_each_broken_rule_is_named() -> None:
    cases = {
        "2 JobAccepted/JobRejected": [GOOD[1], *GOOD],
        "0 JobFinished": GOOD[:-1],
        "events after JobFinished": [*GOOD, ("LogEmitted", {"stage": "compile", "attempt": 2})],
        "not in the plan": [*GOOD[:2], changed("train", "STARTED"), *GOOD[2:]],
        "STARTED before parse succeeded": [*GOOD[:3], changed("compile", "STARTED"), *GOOD[3:]],
        "SUCCEEDED without STARTED": [*GOOD[:2], changed("parse", "SUCCEEDED"), *GOOD[2:]],
        "ProgressReported before its STARTED": [*GOOD[:2], GOOD[3], *GOOD[2:]],
        "FAILED after SUCCEEDED": [*GOOD[:5], changed("parse", "FAILED"), *GOOD[5:]],
        "compile did not succeed": [*GOOD[:7], GOOD[-1]],
        "a rejected job has": [("JobRejected", {}), changed("parse", "STARTED")],
    }
    for expected, history in cases.items():
        problems = job_problems(history)
        assert any(expected in problem for problem in problems), (expected, problems)
