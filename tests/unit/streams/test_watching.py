"""What `stagecast watch` shows: lines for pipes and scripts, live bars on a terminal."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

from rich.console import Console

from api.client import FeedEvent
from streams.watching import (
    LineView,
    LiveView,
    failure,
    json_line,
    plain_line,
    succeeded,
    training_state,
)

# What rich writes to a terminal: styles, a cursor that moves up and line erasures.
CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")
# What depends on the clock: the spinner's frame (shown as "*" here) and the time elapsed.
SPINNER = re.compile("[\u2800-\u28ff]")
ELAPSED = re.compile(r"\b\d+:\d\d:\d\d\b")
TIME_LIMIT = {"code": "TIME_LIMIT", "message": "the program ran longer than its 180 s limit"}


def event(seq: int, type_: str, **data: Any) -> FeedEvent:
    return FeedEvent(seq, type_, data)


def stage(seq: int, name: str, status: str, attempt: int = 1, **data: Any) -> FeedEvent:
    return event(seq, "StageChanged", stage=name, attempt=attempt, status=status, **data)


def metric(seq: int, name: str, value: float, step: int) -> FeedEvent:
    return event(seq, "MetricRecorded", stage="train", attempt=1, name=name, value=value, step=step)


def training_that_fails() -> list[FeedEvent]:
    return [
        event(1, "JobAccepted", job_id="j-1", kind="MODEL", stages=["parse", "train"]),
        stage(2, "parse", "STARTED"),
        stage(3, "parse", "SUCCEEDED", duration_ms=12),
        stage(4, "train", "STARTED"),
        event(5, "LogEmitted", stage="train", attempt=1, stream="stdout", message="[data] ready"),
        metric(6, "loss", 0.5, 1),
        metric(7, "val_accuracy", 0.8, 1),
        event(8, "ProgressReported", stage="train", attempt=1, percent=33.3, message="epoch 1/3"),
        metric(9, "loss", 0.1234, 3),
        metric(10, "val_accuracy", 0.96, 3),
        event(11, "ArtifactStored", stage="train", attempt=1, name="model.onnx",
              media_type="application/onnx", size_bytes=56350, sha256="ab" * 32),
        stage(12, "train", "FAILED", error=TIME_LIMIT),
        event(13, "JobFinished", status="FAILED", duration_ms=4567, error=TIME_LIMIT),
    ]  # fmt: skip


def rendered(events: list[FeedEvent], *, closed: bool = True) -> list[str]:
    """The screen of a 100-column terminal after the view was fed `events`, without styles:
    once the view is closed, or (`closed=False`) while it is still live."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with LiveView(console, auto_refresh=False) as view:
        for item in events:
            view.feed(item)
        live = out.getvalue()
    return screen(out.getvalue() if closed else live)


def screen(written: str) -> list[str]:
    """The lines a terminal shows after `written`, for the controls rich uses."""
    lines, row, column = [""], 0, 0
    for match in CONTROL.finditer(written):
        text, (argument, command) = match.group(0), match.groups()
        if text == "\n":
            row, column = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif text == "\r":
            column = 0
        elif command == "A":
            row = max(0, row - int(argument or 1))
        elif command == "K":
            lines[row] = ""
        elif command is None:
            line = lines[row].ljust(column)
            lines[row] = line[:column] + text + line[column + len(text) :]
            column += len(text)
    shown = (ELAPSED.sub("H:MM:SS", SPINNER.sub("*", line)) for line in lines)
    return [line.rstrip() for line in shown if line.strip()]


def test_a_plain_line_is_the_seq_the_type_and_a_brief_json() -> None:
    assert plain_line(stage(42, "compile", "FAILED", summary="{}", error=TIME_LIMIT)) == (
        '      42  StageChanged     {"stage": "compile", "status": "FAILED", '
        '"error": {"code": "TIME_LIMIT", "message": "the program ran longer than its 180 s '
        'limit"}}'
    )
    assert plain_line(metric(7, "loss", 0.25, 0)) == (
        '       7  MetricRecorded   {"stage": "train", "name": "loss", "value": 0.25, "step": 0}'
    )


def test_a_json_line_is_the_whole_event() -> None:
    item = event(9, "ProgressReported", stage="train", attempt=1, percent=50.0, message="")
    assert json.loads(json_line(item)) == {
        "seq": 9,
        "type": "ProgressReported",
        "data": {"stage": "train", "attempt": 1, "percent": 50.0, "message": ""},
    }


def test_a_line_view_writes_one_line_per_event() -> None:
    for as_json, line in ((False, plain_line), (True, json_line)):
        out = StringIO()
        with LineView(out, as_json=as_json) as view:
            for item in training_that_fails():
                view.feed(item)
        assert out.getvalue() == "".join(line(e) + "\n" for e in training_that_fails())


def test_only_a_job_that_finished_succeeded_counts_as_success() -> None:
    assert succeeded(event(9, "JobFinished", status="SUCCEEDED"))
    assert not succeeded(event(9, "JobFinished", status="FAILED"))
    assert not succeeded(stage(9, "parse", "SUCCEEDED"))
    assert not succeeded(event(9, "JobRejected", error=TIME_LIMIT))


def test_the_live_view_draws_a_bar_per_stage_and_prints_the_feed_above_them() -> None:
    lines = rendered(training_that_fails())

    # Once the job has ended: the printed lines in feed order, the bars, the outcome.
    final = lines[-9:]
    assert final[:6] == [
        "job j-1 accepted: MODEL, stages parse → train",
        "train    [data] ready",
        "epoch 1  loss 0.5000  val_accuracy 0.8000",
        "epoch 3  loss 0.1234  val_accuracy 0.9600",
        "train    artifact model.onnx (application/onnx, 55.0 KiB, sha256 abababababab)",
        "train    FAILED TIME_LIMIT: the program ran longer than its 180 s limit",
    ]
    parse, train, outcome = final[6:]
    assert parse.startswith("✓ parse ") and parse.endswith(" 100% H:MM:SS SUCCEEDED")
    assert train.startswith("✗ train ") and train.endswith("  33% H:MM:SS FAILED TIME_LIMIT")
    assert "━" in parse and "━" in train
    assert (
        outcome == "✗ job FAILED in 4.6 s: TIME_LIMIT: the program ran longer than its 180 s limit"
    )


def test_a_running_bar_shows_its_progress_message_and_the_epoch_so_far() -> None:
    running = rendered(training_that_fails()[:10], closed=False)
    assert running[-4:] == [
        "epoch 1  loss 0.5000  val_accuracy 0.8000",
        "✓ parse            ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 100% H:MM:SS SUCCEEDED",
        "* train            ━━━━━━━━━╸━━━━━━━━━━━━━━━━━━━━  33% H:MM:SS epoch 1/3",
        # The step still under way is shown under the bars...
        "epoch 3  loss 0.1234  val_accuracy 0.9600",
    ]
    # ...and printed above them once it is over (here: the watch ends).
    closed = rendered(training_that_fails()[:10])
    assert closed[-3] == "epoch 3  loss 0.1234  val_accuracy 0.9600"
    assert closed[-1].startswith("* train ")


def test_a_retry_gets_its_own_bar_and_a_resumed_watch_draws_bars_it_did_not_see_start() -> None:
    lines = rendered(
        [
            event(5, "ProgressReported", stage="execute", attempt=1, percent=60.0, message=""),
            stage(6, "execute", "CANCELLED"),
            stage(7, "execute", "STARTED", attempt=2),
            stage(8, "execute", "SUCCEEDED", attempt=2),
            event(9, "JobFinished", status="SUCCEEDED", duration_ms=1234),
        ]
    )
    assert lines[-3].startswith("■ execute ") and lines[-3].endswith("  60% H:MM:SS CANCELLED")
    assert lines[-2].startswith("✓ execute (attempt 2) ") and lines[-2].endswith("SUCCEEDED")
    assert lines[-1] == "✓ job SUCCEEDED in 1.2 s"


def test_what_the_feed_says_is_printed_as_text_not_as_markup() -> None:
    log = "[bold]not bold[/bold] [link=x]y[/link]"
    lines = rendered(
        [event(3, "LogEmitted", stage="execute", attempt=1, stream="stderr", message=log)]
    )
    assert lines == [f"execute  {log}"]


def test_a_rejected_job_and_an_event_the_view_does_not_know() -> None:
    error = {"code": "IDEMPOTENCY_CONFLICT", "message": "another body"}
    lines = rendered([event(4, "Unheard", stage="x"), event(5, "JobRejected", error=error)])
    assert lines == [
        '       4  Unheard          {"stage": "x"}',
        "✗ job REJECTED: IDEMPOTENCY_CONFLICT: another body",
    ]


def training_progress(seq: int, epoch: int, step: int, **data: Any) -> FeedEvent:
    """A train attempt's ProgressReported as the train stage sends it (3 epochs of 40 steps)."""
    done = (epoch - 1) * 40 + step
    return event(
        seq,
        "ProgressReported",
        stage="train",
        attempt=1,
        percent=round(100 * done / 120, 2),
        message=f"epoch {epoch}/3, step {step}/40",
        epoch=epoch,
        epochs=3,
        step=step,
        steps=40,
        **data,
    )


def test_a_training_attempt_gets_a_bar_for_its_current_epoch() -> None:
    events = [
        stage(1, "train", "STARTED"),
        training_progress(2, 1, 40, loss=0.9, eta_s=80.4, samples_per_s=512.3),
        training_progress(3, 2, 10, loss=0.4567, eta_s=75.0, samples_per_s=530.0),
    ]
    running = rendered(events, closed=False)
    assert running[-2].startswith("* train ")
    assert running[-2].endswith("  42% H:MM:SS epoch 2/3, step 10/40")
    # One epoch bar, moved on to the epoch under way: its steps, loss, ETA and speed.
    assert running[-1].startswith("*   epoch 2/3 ")
    assert running[-1].endswith("  25% H:MM:SS loss 0.4567  ETA 1 min 15 s  530 samples/s")
    ended = rendered([*events, stage(4, "train", "SUCCEEDED", duration_ms=9000)])
    assert ended[-2].startswith("✓ train ") and ended[-2].endswith(" 100% H:MM:SS SUCCEEDED")
    assert ended[-1].startswith("✓   epoch 2/3 ")


def test_progress_without_epochs_draws_no_epoch_bar() -> None:
    lines = rendered(
        [event(2, "ProgressReported", stage="execute", attempt=1, percent=50.0, message="")]
    )
    assert len(lines) == 1 and lines[0].startswith("* execute ")


def test_a_training_state_shows_only_what_the_progress_carries() -> None:
    assert training_state({"loss": 0.1, "eta_s": 3725.0, "samples_per_s": 99.6}) == (
        "loss 0.1000  ETA 1 h 02 min  100 samples/s"
    )
    assert training_state({"loss": None, "eta_s": 4.4}) == "ETA 4 s"
    assert training_state({}) == ""


def test_a_job_that_did_not_succeed_ends_with_its_error_code() -> None:
    assert failure(event(9, "JobFinished", job_id="j-1", status="SUCCEEDED")) is None
    assert failure(stage(3, "parse", "FAILED", error=TIME_LIMIT)) is None
    assert failure(event(9, "JobFinished", job_id="j-1", status="FAILED", error=TIME_LIMIT)) == (
        "TIME_LIMIT",
        "job j-1 FAILED: the program ran longer than its 180 s limit",
    )
    assert failure(event(9, "JobFinished", job_id="j-1", status="CANCELLED", error=None)) == (
        "JOB_CANCELLED",
        "job j-1 CANCELLED",
    )
    rejected = event(5, "JobRejected", job_id="j-2", error={"code": "X", "message": "a\nb"})
    assert failure(rejected) == ("X", "job j-2 REJECTED: a b")
