"""When a batch needs no consistent cut: what its rows follow was read in it or before it."""

from __future__ import annotations

import uuid
from typing import Any

from projections.batch import StagedRow, staged_row
from projections.precedence import NOTED_BATCH_ROWS, Precedence

JOB = str(uuid.uuid4())


def row(event_type: str, stage: str = "codegen", attempt: int = 1, **fields: Any) -> StagedRow:
    topic = "progress" if event_type == "ArtifactStored" else "events"
    record = {
        "event_id": fields.pop("event_id", str(uuid.uuid4())),
        "job_id": JOB,
        "tenant": "acme",
        "occurred_at": 1_700_000_000_000,
        "source": "test",
        "stage": stage,
        "attempt": attempt,
        **fields,
    }
    return staged_row(0, topic, 0, 0, event_type, record)


def started(stage: str = "codegen", attempt: int = 1) -> StagedRow:
    return row("StageChanged", stage, attempt, status="STARTED", reported=0)


def outcome(status: str, reported: int, stage: str = "codegen", attempt: int = 1) -> StagedRow:
    return row("StageChanged", stage, attempt, status=status, reported=reported)


def artifact(stage: str = "codegen", attempt: int = 1, event_id: str | None = None) -> StagedRow:
    return row(
        "ArtifactStored",
        stage,
        attempt,
        event_id=event_id or str(uuid.uuid4()),
        name="model.py",
        media_type="text/x-python",
        size_bytes=1,
        sha256="0" * 64,
    )


def test_an_outcome_whose_progress_was_read_in_an_earlier_batch_needs_no_cut() -> None:
    precedence = Precedence()
    precedence.note([started(), artifact()])
    assert precedence.settled([outcome("SUCCEEDED", 1)])


def test_an_outcome_with_progress_unread_needs_the_cut() -> None:
    precedence = Precedence()
    precedence.note([started(), artifact()])
    assert not precedence.settled([outcome("SUCCEEDED", 2)])
    assert not Precedence().settled([outcome("SUCCEEDED", 1)])


def test_progress_in_the_same_batch_counts() -> None:
    assert Precedence().settled([started(), artifact(), artifact(), outcome("SUCCEEDED", 2)])


def test_a_repeated_progress_event_is_counted_once() -> None:
    precedence = Precedence()
    again = str(uuid.uuid4())
    precedence.note([started(), artifact(event_id=again)])
    precedence.note([artifact(event_id=again)])
    # Two sent, one of them read twice: the other may still be on its way.
    assert not precedence.settled([outcome("SUCCEEDED", 2)])


def test_more_progress_than_reported_is_not_trusted() -> None:
    precedence = Precedence()
    precedence.note([started(), artifact(), artifact()])
    assert not precedence.settled([outcome("SUCCEEDED", 1)])


def test_an_outcome_other_than_succeeded_is_always_cut() -> None:
    # A FAILED outcome may be written for a lost attempt by someone who cannot count its progress.
    precedence = Precedence()
    precedence.note([started(), artifact()])
    assert not precedence.settled([outcome("FAILED", 1)])
    assert not precedence.settled([outcome("CANCELLED", 1)])


def test_progress_needs_its_started_read() -> None:
    assert not Precedence().settled([artifact()])
    assert Precedence().settled([started(), artifact()])
    precedence = Precedence()
    precedence.note([started()])
    assert precedence.settled([artifact()])
    assert not precedence.settled([artifact(attempt=2)])


def test_rows_that_follow_nothing_elsewhere_are_settled() -> None:
    assert Precedence().settled([started("parse"), outcome("SUCCEEDED", 0, "parse")])


def test_forgotten_attempts_and_big_batches_mean_a_cut() -> None:
    precedence = Precedence(attempts_kept=1)
    precedence.note([started("parse"), artifact("parse")])
    precedence.note([started("compile"), artifact("compile")])
    assert not precedence.settled([outcome("SUCCEEDED", 1, "parse")])
    assert precedence.settled([outcome("SUCCEEDED", 1, "compile")])
    big = Precedence()
    big.note([started(), artifact(), *(started("parse", n) for n in range(NOTED_BATCH_ROWS))])
    assert not big.settled([outcome("SUCCEEDED", 1)])


def test_an_attempt_that_keeps_reporting_outlives_those_noted_after_its_start() -> None:
    precedence = Precedence(attempts_kept=2)
    precedence.note([started("train")])
    precedence.note([started("parse")])
    # The train attempt reports: its STARTED is the most recently noted again.
    precedence.note([artifact("train")])
    precedence.note([started("compile")])
    assert precedence.settled([artifact("train")])
    assert not precedence.settled([artifact("parse")])
    # Without reports it is the first forgotten.
    quiet = Precedence(attempts_kept=2)
    quiet.note([started("train")])
    quiet.note([started("parse")])
    quiet.note([started("compile")])
    assert not quiet.settled([artifact("train")])
    assert quiet.settled([artifact("parse")])


def test_the_dispatchers_answer_needs_its_request_read() -> None:
    accepted = row("JobAccepted", kind="MODEL", target="pytorch", stages=["parse"])
    requested = row("JobRequested", kind="MODEL", dsl="network X {}", target="pytorch")
    precedence = Precedence()
    # Its JobRequested went to the requests topic and may not be read yet: cut.
    assert not precedence.settled([accepted, started("parse")])
    assert precedence.settled([requested, accepted])
    precedence.note([requested])
    assert precedence.settled([accepted, started("parse")])


def test_unrequested_names_the_answers_whose_request_is_not_read() -> None:
    accepted = row("JobAccepted", kind="MODEL", target="pytorch", stages=["parse"])
    requested = row("JobRequested", kind="MODEL", dsl="network X {}", target="pytorch")
    precedence = Precedence()
    assert precedence.unrequested([accepted, started("parse")]) == {JOB}
    assert precedence.unrequested([accepted, requested]) == set()
    precedence.note([requested])
    assert precedence.unrequested([accepted]) == set()
