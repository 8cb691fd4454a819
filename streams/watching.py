"""How `stagecast watch` shows a job's feed: live progress bars on a terminal, lines otherwise.

A view is fed the feed's events one by one (anything with `seq`, `type` and `data`, as
`api.client.FeedEvent`) and writes them; it does no I/O of its own besides its output.

- `LineView`: one line per event, stable for pipes and scripts: the seq, the type and a
  brief JSON of what matters (`plain_line`), or with `as_json` the whole event as one JSON
  object (`json_line`).
- `LiveView`: rich progress bars on a terminal, one per stage attempt, created when it
  starts, advanced by its progress and marked with how it ended; under a training attempt's
  bar, a bar of its current epoch (steps, loss, ETA, samples/s); log lines, artifacts and
  epoch metrics are printed above the bars as they arrive, the outcome below them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

BRIEF_KEYS = ("stage", "status", "percent", "message", "name", "value", "step")
TERMINAL_TYPES = frozenset({"JobFinished", "JobRejected"})
STATUS_STYLES = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "REJECTED": "red"}
STATUS_MARKS = {"SUCCEEDED": "✓", "FAILED": "✗", "CANCELLED": "■", "REJECTED": "✗"}


class FeedItem(Protocol):
    """One event of a job's feed."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


class FeedView(Protocol):
    def __enter__(self) -> FeedView: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def feed(self, event: FeedItem) -> None: ...


def succeeded(event: FeedItem) -> bool:
    """Whether `event` is the end of a job that succeeded."""
    return event.type == "JobFinished" and event.data.get("status") == "SUCCEEDED"


def failure(event: FeedItem) -> tuple[str, str] | None:
    """The error code and message of a job's end that is no success; None for a success or
    an event that does not end a job."""
    if event.type not in TERMINAL_TYPES or succeeded(event):
        return None
    status = "REJECTED" if event.type == "JobRejected" else str(event.data.get("status"))
    error = event.data.get("error") or {}
    code = str(error.get("code") or f"JOB_{status}")
    message = " ".join(str(error.get("message") or "").split())
    return code, f"job {event.data.get('job_id')} {status}" + (f": {message}" if message else "")


def brief(event: FeedItem) -> dict[str, Any]:
    """What matters of an event for one line: its stage, status, progress, metric, error."""
    data = event.data
    shown = {k: data[k] for k in BRIEF_KEYS if k in data and data[k] not in (None, "")}
    if data.get("error"):
        shown["error"] = data["error"]
    return shown


def plain_line(event: FeedItem) -> str:
    return f"{event.seq:>8}  {event.type:<16} {json.dumps(brief(event))}"


def json_line(event: FeedItem) -> str:
    return json.dumps({"seq": event.seq, "type": event.type, "data": dict(event.data)})


class LineView:
    """One line per event on `out`, flushed as it comes."""

    def __init__(self, out: TextIO, *, as_json: bool = False) -> None:
        self._out = out
        self._line = json_line if as_json else plain_line

    def __enter__(self) -> LineView:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def feed(self, event: FeedItem) -> None:
        print(self._line(event), file=self._out, flush=True)


class LiveView:
    """Progress bars per stage attempt on a rich Console, with the feed's text above them."""

    def __init__(self, console: Console, *, auto_refresh: bool = True) -> None:
        self._console = console
        self._progress = Progress(
            _MarkColumn(),
            TextColumn("{task.description:<16}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[state]}"),
            console=console,
        )
        self._metrics = _PendingMetrics()
        self._live = Live(
            Group(self._progress, self._metrics),
            console=console,
            auto_refresh=auto_refresh,
            refresh_per_second=8,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._tasks: dict[tuple[str, int], TaskID] = {}
        # Per training attempt: the bar of its epoch under way, and which epoch that is.
        self._epochs: dict[tuple[str, int], tuple[TaskID, object]] = {}

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._commit_metrics()
        self._live.stop()

    def feed(self, event: FeedItem) -> None:
        if event.type == "MetricRecorded":
            self._metric(event.data)
        else:
            self._commit_metrics()
            self._show(event)
        if event.type in TERMINAL_TYPES:
            # The outcome goes below the bars, which stay as they ended.
            self._live.stop()
            self._console.print(_outcome(event.type, event.data))
        else:
            self._live.refresh()

    def _show(self, event: FeedItem) -> None:
        data = event.data
        if event.type == "StageChanged":
            self._stage_changed(data)
        elif event.type == "ProgressReported":
            task = self._task(data)
            self._progress.update(task, completed=float(data.get("percent") or 0.0))
            if data.get("message"):
                self._progress.update(task, state=Text(str(data["message"])))
            if data.get("epoch") and data.get("steps"):
                self._epoch(data)
        elif event.type == "LogEmitted":
            style = "red" if data.get("stream") == "stderr" else ""
            self._print(_prefixed(data, Text(str(data.get("message", "")), style=style)))
        elif event.type == "ArtifactStored":
            self._print(_prefixed(data, _artifact(data)))
        elif event.type == "JobAccepted":
            self._print(_accepted(data))
        elif event.type not in TERMINAL_TYPES:
            self._print(Text(plain_line(event), style="dim"))

    def _stage_changed(self, data: Mapping[str, Any]) -> None:
        task = self._task(data)
        status = str(data.get("status"))
        if status == "STARTED":
            return
        if status == "SUCCEEDED":
            self._progress.update(task, completed=100.0)
        self._progress.stop_task(task)
        error = data.get("error") or {}
        style = STATUS_STYLES.get(status, "")
        mark = Text(STATUS_MARKS.get(status, "?"), style=style)
        self._progress.update(
            task, state=Text(f"{status} {error.get('code') or ''}".rstrip(), style=style), mark=mark
        )
        if self._key(data) in self._epochs:
            epoch_bar = self._epochs[self._key(data)][0]
            self._progress.stop_task(epoch_bar)
            self._progress.update(epoch_bar, mark=mark)
        if error:
            self._print(_prefixed(data, _error_text(status, error)))

    @staticmethod
    def _key(data: Mapping[str, Any]) -> tuple[str, int]:
        return str(data.get("stage")), int(data.get("attempt") or 1)

    def _task(self, data: Mapping[str, Any]) -> TaskID:
        """The bar of the event's stage attempt, created at its first event (its STARTED,
        unless the watch resumed after it)."""
        key = self._key(data)
        if key not in self._tasks:
            name = key[0] if key[1] <= 1 else f"{key[0]} (attempt {key[1]})"
            self._tasks[key] = self._progress.add_task(name, total=100.0, state=Text(""), mark=None)
        return self._tasks[key]

    def _epoch(self, data: Mapping[str, Any]) -> None:
        """The bar of a training attempt's current epoch: its steps, loss, ETA and speed."""
        key = self._key(data)
        shown = f"  epoch {data['epoch']}" + (f"/{data['epochs']}" if data.get("epochs") else "")
        if key not in self._epochs:
            task = self._progress.add_task(shown, state=Text(""), mark=None)
        else:
            task, epoch = self._epochs[key]
            if epoch != data["epoch"]:
                # A new epoch: its bar starts again (a finished bar would keep its end time).
                self._progress.reset(task)
        self._epochs[key] = (task, data["epoch"])
        self._progress.update(
            task,
            description=shown,
            completed=float(data.get("step") or 0),
            total=float(data["steps"]),
            state=Text(training_state(data)),
        )

    def _metric(self, data: Mapping[str, Any]) -> None:
        key = (str(data.get("stage")), int(data.get("attempt") or 1), int(data.get("step") or 0))
        if key != self._metrics.key:
            self._commit_metrics()
            self._metrics.key = key
        self._metrics.values[str(data.get("name"))] = float(data.get("value") or 0.0)

    def _commit_metrics(self) -> None:
        """The metrics of the step being shown become a line above the bars."""
        line = self._metrics.line()
        if line is not None:
            self._print(line)
        self._metrics.clear()

    def _print(self, renderable: RenderableType) -> None:
        self._console.print(renderable, highlight=False)


class _MarkColumn(ProgressColumn):
    """A spinner while the stage attempt runs, then the mark of how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self._spinner = SpinnerColumn()

    def render(self, task: Task) -> RenderableType:
        mark: Text | None = task.fields.get("mark")
        return mark if mark is not None else self._spinner.render(task)


class _PendingMetrics:
    """The metrics of the latest step (epoch), shown under the bars until the step is over."""

    def __init__(self) -> None:
        self.key: tuple[str, int, int] | None = None
        self.values: dict[str, float] = {}

    def clear(self) -> None:
        self.key = None
        self.values = {}

    def line(self) -> Text | None:
        if self.key is None or not self.values:
            return None
        stage, _, step = self.key
        counted = "epoch" if stage == "train" else "step"
        shown = "  ".join(f"{name} {_number(value)}" for name, value in self.values.items())
        return Text(f"{counted} {step}  {shown}", style="cyan")

    def __rich__(self) -> RenderableType:
        return self.line() or Group()


def training_state(data: Mapping[str, Any]) -> str:
    """How a training step stands, for its epoch's bar: `loss 0.1234  ETA 12 s  850
    samples/s`, each part only when the progress event carries it."""
    parts = []
    if data.get("loss") is not None:
        parts.append(f"loss {_number(float(data['loss']))}")
    if data.get("eta_s") is not None:
        parts.append(f"ETA {_duration(float(data['eta_s']))}")
    if data.get("samples_per_s") is not None:
        parts.append(f"{float(data['samples_per_s']):.0f} samples/s")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return (
        f"{minutes} min {rest:02d} s"
        if minutes < 60
        else f"{minutes // 60} h {minutes % 60:02d} min"
    )


def _number(value: float) -> str:
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"


def _prefixed(data: Mapping[str, Any], text: Text) -> Text:
    return Text.assemble((f"{data.get('stage', '')!s:<9}", "bold"), text)


def _artifact(data: Mapping[str, Any]) -> Text:
    size = int(data.get("size_bytes") or 0)
    shown = f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"
    digest = str(data.get("sha256") or "")[:12]
    return Text(f"artifact {data.get('name')} ({data.get('media_type')}, {shown}, sha256 {digest})")


def _accepted(data: Mapping[str, Any]) -> Text:
    stages = " → ".join(str(s) for s in data.get("stages") or [])
    return Text(f"job {data.get('job_id')} accepted: {data.get('kind')}, stages {stages}")


def _error_words(error: Mapping[str, Any]) -> str:
    return f"{error.get('code')}: {' '.join(str(error.get('message') or '').split())}"


def _error_text(status: str, error: Mapping[str, Any]) -> Text:
    return Text(f"{status} {_error_words(error)}", style=STATUS_STYLES.get(status, ""))


def _outcome(kind: str, data: Mapping[str, Any]) -> Text:
    status = "REJECTED" if kind == "JobRejected" else str(data.get("status"))
    mark = STATUS_MARKS.get(status, "")
    line = Text(f"{mark} job {status}".strip(), style=f"bold {STATUS_STYLES.get(status, '')}")
    if data.get("duration_ms") is not None:
        line.append(f" in {float(data['duration_ms']) / 1000:.1f} s")
    if data.get("error"):
        line.append(f": {_error_words(data['error'])}")
    return line
