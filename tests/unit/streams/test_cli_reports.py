"""What the `stagecast` commands print for scripts (--json) and how a failure reads."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from api.client import ApiRequestError
from projections.replay import ReplayResult, Republished, TableDiff
from streams.cli import (
    COMMANDS,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    CliError,
    _described,
    _refusal,
    _replay_report,
    _republish_report,
    main,
)


def test_a_failure_is_one_line_with_its_code_and_hint() -> None:
    error = CliError("JOB_NOT_FOUND", "no such\njob  (yet)", EXIT_NOT_FOUND, "check the id")
    assert error.line() == "error: JOB_NOT_FOUND: no such job (yet) — check the id"
    assert CliError("X", "plain").line() == "error: X: plain"


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [(404, "JOB_NOT_FOUND", 5), (404, "NOT_FOUND", 4), (409, "JOB_FINISHED", 4),
     (422, "VALIDATION_FAILED", 4), (503, "DATABASE_UNAVAILABLE", 6), (502, "HTTP_502", 6)],
)  # fmt: skip
def test_an_api_refusal_exits_by_its_kind(status: int, code: str, exit_code: int) -> None:
    refused = _refusal(ApiRequestError(status, {"error_code": code, "error": "why"}))
    assert (refused.code, refused.exit_code) == (code, exit_code)
    assert refused.message == f"the API answered {status}: why"


def test_the_job_finished_refusal_says_what_to_do() -> None:
    refused = _refusal(ApiRequestError(409, {"error_code": "JOB_FINISHED", "error": "ended"}))
    assert refused.exit_code == EXIT_REFUSED
    assert refused.line() == (
        "error: JOB_FINISHED: the API answered 409: ended — nothing to cancel ('stagecast watch' "
        "shows how it ended)"
    )


def test_the_replay_report_holds_every_table_with_its_differences() -> None:
    done = ReplayResult("audit_1", events=120, skipped=2, seconds=0.123456)
    diffs = [
        TableDiff("jobs", 3, 3, 0),
        TableDiff("job_events", 120, 119, 1, [("(j-1, 7)", "live only")]),
    ]
    report = _replay_report(done, "archive", diffs)
    assert json.loads(json.dumps(report)) == {
        "schema": "audit_1",
        "source": "archive",
        "events": 120,
        "skipped": 2,
        "seconds": 0.123,
        "same": False,
        "tables": [
            {"table": "jobs", "live_rows": 3, "replay_rows": 3, "mismatched": 0, "same": True,
             "examples": []},
            {"table": "job_events", "live_rows": 120, "replay_rows": 119, "mismatched": 1,
             "same": False, "examples": [{"key": "(j-1, 7)", "where": "live only"}]},
        ],
    }  # fmt: skip
    assert "tables" not in _replay_report(done, "kafka", None)


def test_the_republish_report_has_each_topic() -> None:
    done = Republished(events=5, seconds=1.0, topics={"s.events": (0, 3), "s.progress": (1, 2)})
    assert _republish_report(done) == {
        "events": 5,
        "seconds": 1.0,
        "topics": {
            "s.events": {"held_before": 0, "sent": 3},
            "s.progress": {"held_before": 1, "sent": 2},
        },
    }


def test_an_error_is_described_by_its_type_once() -> None:
    assert _described(KeyError("x")) == "KeyError: 'x'"
    assert _described(RuntimeError("RuntimeError: twice")) == "RuntimeError: twice"


@pytest.fixture
def aiokafka_log() -> Iterator[None]:
    """main() quietens aiokafka's log for one-shot commands: not for the rest of this process."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    yield
    logger.setLevel(level)


def _failing(error: Exception) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        raise error

    return command


@pytest.mark.parametrize(
    ("error", "exit_code", "line"),
    [
        (
            ValueError("unexpected"),
            70,
            "error: INTERNAL: ValueError: unexpected — a bug: run the command again with --debug "
            "and report the traceback",
        ),
        (
            ConnectionRefusedError(111, "Connect call failed"),
            3,
            "error: SERVERS_UNREACHABLE: ConnectionRefusedError: [Errno 111] Connect call failed "
            "— check "
            "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, or start the stack with 'stagecast up'",
        ),
    ],
    ids=["bug", "unreachable"],
)
def test_what_no_command_expected_is_still_one_line(
    aiokafka_log: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    exit_code: int,
    line: str,
) -> None:
    monkeypatch.setitem(COMMANDS, "cancel", _failing(error))
    assert main(["cancel", "some-job"]) == exit_code
    assert capsys.readouterr().err == line + "\n"
    with pytest.raises(type(error)):
        main(["--debug", "cancel", "some-job"])
