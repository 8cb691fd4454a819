"""Which attempt a delivered long-stage command runs as (pure decision logic)."""

from __future__ import annotations

import dataclasses

import pytest

from streams.attempts import ATTEMPT_LOST, Recorded, Resumption, resumption
from streams.runner import StageCommand

COMMAND = StageCommand(
    job_id="0b7f0c52-4a51-4a0e-9d0e-9a1c1d2e3f40",
    tenant="acme",
    stage="execute",
    attempt=1,
    plan=("parse", "execute", "train"),
    spec={},
    input={},
    spec_text="{}",
)


def attempt(n: int) -> StageCommand:
    return dataclasses.replace(COMMAND, attempt=n)


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        # First delivery: nothing recorded yet.
        (None, Resumption(COMMAND)),
        # The attempt a dead worker left open ends, the next one runs.
        (Recorded(1, "STARTED"), Resumption(attempt(2), lost=1)),
        (Recorded(2, "STARTED"), Resumption(attempt(3), lost=2)),
        # The third open attempt is the last: the job fails instead.
        (Recorded(3, "STARTED"), Resumption(COMMAND, lost=3, give_up=True)),
        # A retry announced but not recorded as started yet runs now.
        (Recorded(1, "FAILED", ATTEMPT_LOST), Resumption(attempt(2))),
        # It ran and the job went on: nothing to do.
        (Recorded(1, "SUCCEEDED", next_started=True), Resumption(COMMAND, done=True)),
        (Recorded(2, "SUCCEEDED", job_ended=True), Resumption(COMMAND, done=True)),
        (Recorded(1, "STARTED", job_ended=True), Resumption(COMMAND, done=True)),
        # It ended but what follows may be missing: the same attempt again (same event ids).
        (Recorded(1, "SUCCEEDED"), Resumption(COMMAND)),
        (Recorded(2, "FAILED", "PROGRAM_FAILED"), Resumption(attempt(2))),
    ],
)
def test_a_delivery_runs_as_the_attempt_the_record_calls_for(
    latest: Recorded | None, expected: Resumption
) -> None:
    assert resumption(COMMAND, latest, max_attempts=3) == expected


def test_a_command_naming_a_later_attempt_than_recorded_runs_as_it_says() -> None:
    assert resumption(attempt(4), Recorded(2, "STARTED"), 3) == Resumption(attempt(4))


def test_one_attempt_at_most_means_a_lost_attempt_fails_the_job() -> None:
    decided = resumption(COMMAND, Recorded(1, "STARTED"), max_attempts=1)
    assert decided.give_up and decided.lost == 1
