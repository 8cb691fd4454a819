"""The one runner every stage agent uses: STARTED, work with a reporter, SUCCEEDED or FAILED."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from streams.attempts import ATTEMPT_LOST, WORKER_LOST, AttemptHistory, resumption
from streams.control import ControlListener
from streams.document import document_of, document_text
from streams.envelope import envelope, error_info
from streams.handoff import HandedOff, Handoff, hand_off
from streams.intake import Refused
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import STAGES, Settings
from streams.stage import Outcome, Problem, StageCancelled, StageFailure, StageResult
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StageCommand:
    """A decoded StageCommand: everything a stage needs, the previous stage's output included."""

    job_id: str
    tenant: str
    stage: str
    attempt: int
    plan: tuple[str, ...]
    spec: dict[str, Any]
    input: dict[str, Any]
    # The spec as it arrived: the next stage's command carries it on unchanged, unencoded.
    spec_text: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StageCommand:
        spec = document_of(record["spec"])
        given = document_of(record["input"])
        if not isinstance(spec, dict) or not isinstance(given, dict):
            raise ValueError("spec and input must be JSON objects")
        plan = list(record["plan"])
        if record["stage"] not in plan:
            raise ValueError(f"stage {record['stage']!r} is not in its plan {plan}")
        if len(set(plan)) != len(plan) or any(name not in STAGES for name in plan):
            raise ValueError(f"plan {plan} repeats or names unknown stages")
        return cls(
            job_id=record["job_id"],
            tenant=record["tenant"],
            stage=record["stage"],
            attempt=record["attempt"],
            plan=tuple(record["plan"]),
            spec=spec,
            input=given,
            spec_text=record["spec"],
        )

    @property
    def next_stage(self) -> str | None:
        position = self.plan.index(self.stage)
        return self.plan[position + 1] if position + 1 < len(self.plan) else None


StageLogic = Callable[[StageCommand, "StageReporter"], Awaitable[Outcome]]


class StageReporter:
    """Publishes progress, logs, metrics and artifacts for one stage attempt, with stable ids."""

    def __init__(
        self,
        publisher: EventPublisher,
        command: StageCommand,
        source: str,
        started: Sequence[asyncio.Future[Any]] = (),
    ) -> None:
        self._publisher = publisher
        self._command = command
        self._source = source
        self._sequence = 0
        # The highest percent reported: an attempt's progress never goes back.
        self.percent = 0.0
        self._started = list(started)
        # Set when the job is cancelled while this stage runs (long stages watch it).
        self.cancel = asyncio.Event()

    @property
    def reported(self) -> int:
        """How many events this reporter has published."""
        return self._sequence

    def _record(self, kind: str) -> dict[str, Any]:
        self._sequence += 1
        c = self._command
        event_id = event_id_for(c.job_id, c.stage, c.attempt, kind, self._sequence)
        record = envelope(c.job_id, c.tenant, self._source, event_id)
        record.update(stage=c.stage, attempt=c.attempt)
        return record

    async def _send(self, event_type: str, record: dict[str, Any]) -> None:
        await self._send_all([(event_type, record)])

    async def _send_all(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Publish in order with one acknowledgement wait for all of them."""
        if self._started:
            # Progress goes to another topic: STARTED must be in the log before any of it.
            await asyncio.gather(*self._started)
            self._started = []
        topic = self._publisher.settings.topics.progress
        await self._publisher.publish([Outgoing(topic, kind, record) for kind, record in items])

    async def logs(self, lines: Sequence[tuple[str, str]], level: str = "INFO") -> None:
        """Several LogEmitted at once, in order: (stream, message) each."""
        items = []
        for stream, message in lines:
            record = self._record("log")
            record.update(level=level, stream=stream, message=message)
            items.append(("LogEmitted", record))
        if items:
            await self._send_all(items)

    async def progress(self, percent: float, message: str = "", **training: Any) -> None:
        await self.send_all([self.progress_event(percent, message, **training)])

    def progress_event(
        self, percent: float, message: str = "", **training: Any
    ) -> tuple[str, dict[str, Any]]:
        """A ProgressReported to send later with others (send_all); `training` fills its
        epoch, epochs, step, steps, eta_s, samples_per_s and loss."""
        record = self._record("progress")
        self.percent = max(self.percent, min(100.0, percent))
        record.update(percent=self.percent, message=message, **training)
        return "ProgressReported", record

    def metric_event(
        self, name: str, value: float, step: int = 0, labels: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A MetricRecorded to send later with others (send_all)."""
        record = self._record("metric")
        record.update(name=name, value=value, step=step, labels=dict(labels or {}))
        return "MetricRecorded", record

    def log_event(
        self, message: str, level: str = "INFO", stream: str = "stdout"
    ) -> tuple[str, dict[str, Any]]:
        """A LogEmitted to send later with others (send_all)."""
        record = self._record("log")
        record.update(level=level, stream=stream, message=message)
        return "LogEmitted", record

    async def send_all(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Events made by the *_event methods, in order, with one acknowledgement wait."""
        if items:
            await self._send_all(items)

    async def log(self, message: str, level: str = "INFO", stream: str = "stdout") -> None:
        record = self._record("log")
        record.update(level=level, stream=stream, message=message)
        await self._send("LogEmitted", record)

    async def metric(
        self, name: str, value: float, step: int = 0, labels: Mapping[str, str] | None = None
    ) -> None:
        await self.send_all([self.metric_event(name, value, step, labels)])

    async def stored_artifact_events(
        self, stored: Sequence[tuple[str, str, Path]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """ArtifactStored for files in the artifact store (name, media type, path each): their
        uri, size and hash travel, not their bytes. Hashed off the event loop, to send later
        with others (send_all)."""
        settings = self._publisher.settings
        described = await asyncio.to_thread(
            lambda: [_described(path, settings) for _, _, path in stored]
        )
        events = []
        for (name, media_type, _), (uri, size, sha256) in zip(stored, described, strict=True):
            record = self._record("artifact")
            record.update(
                name=name,
                media_type=media_type,
                uri=uri,
                size_bytes=size,
                sha256=sha256,
                content=None,
            )
            events.append(("ArtifactStored", record))
        return events

    async def artifact(
        self, name: str, media_type: str, content: bytes, uri: str | None = None
    ) -> None:
        await self.send_all([self.artifact_event(name, media_type, content, uri)])

    def artifact_event(
        self, name: str, media_type: str, content: bytes, uri: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """An ArtifactStored carrying its (small) content, to send later with others."""
        record = self._record("artifact")
        record.update(
            name=name,
            media_type=media_type,
            uri=uri,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content=content,
        )
        return "ArtifactStored", record


def _described(path: Path, settings: Settings) -> tuple[str, int, str]:
    """A stored file's uri, size and sha256 (read in chunks: it may be big)."""
    digest = hashlib.sha256()
    with path.open("rb") as stored:
        for chunk in iter(lambda: stored.read(1 << 20), b""):
            digest.update(chunk)
    return settings.artifact_uri(path), path.stat().st_size, digest.hexdigest()


class StageRunner:
    """Turns one consumed message into a stage attempt; no input can take it down."""

    def __init__(
        self,
        stage: str,
        logic: StageLogic,
        publisher: EventPublisher,
        settings: Settings,
        cancels: ControlListener | None = None,
        history: AttemptHistory | None = None,
        metrics: WorkerMetrics | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.stage = stage
        self.logic = logic
        self.publisher = publisher
        self.settings = settings
        self.source = f"{settings.source}.stage.{stage}"
        self.cancels = cancels or ControlListener()
        # For a long stage: which attempt a delivery is (streams/attempts.py).
        self.history = history
        self.metrics = metrics or WorkerMetrics()
        # The job's stage running here now: a second delivery of its command (a rebalance
        # hands the partition back and it is read again) waits for it instead of running it
        # again beside it, and is acknowledged only once the first one has ended.
        self._running: dict[str, asyncio.Future[None]] = {}
        # Where this stage's commands may go next without a trip through the broker
        # (streams/handoff.py), and the runs of this stage that came that way.
        self.handoff = handoff
        self._handed = HandedOff()

    async def handle(self, record: Mapping[str, Any]) -> None:
        if record["stage"] != self.stage:
            raise Refused("WRONG_STAGE", f"a {record['stage']!r} command on the {self.stage} topic")
        try:
            command = StageCommand.from_record(record)
        except (ValueError, KeyError) as error:
            raise Refused("INVALID", f"malformed StageCommand: {error}") from None
        handed = self._handed.arrived(command.job_id, command.attempt)
        if handed is not None and await asyncio.shield(handed):
            # It ran here from its hand-off and reached its outcome: acknowledged, not rerun.
            return
        await self.run(command)

    async def take(self, record: Mapping[str, Any]) -> None:
        """Run a command this process just published, before its delivery arrives."""
        try:
            command = StageCommand.from_record(record)
        except (ValueError, KeyError):
            return  # its delivery refuses it the usual way
        handed = self._handed.started(command.job_id, command.attempt)
        try:
            await self.run(command)
        except Exception as error:
            # An outage mid-run: the delivery runs the stage once the broker is back, as it
            # would have without the hand-off; the stage that published it is done.
            handed.set_result(False)
            log.warning(
                "%s of job %s stopped after its hand-off (%s: %s); its delivery runs it",
                self.stage,
                command.job_id,
                type(error).__name__,
                error,
            )
            return
        except BaseException:
            handed.set_result(False)
            raise
        handed.set_result(True)

    async def run(self, command: StageCommand) -> None:
        running = self._running.get(command.job_id)
        if running is not None:
            log.info(
                "%s of job %s is already running here; waiting for it", self.stage, command.job_id
            )
            await asyncio.shield(running)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[command.job_id] = done
        try:
            await self._run(command)
        finally:
            del self._running[command.job_id]
            done.set_result(None)

    async def _run(self, command: StageCommand) -> None:
        if self.cancels.cancelled(command.job_id):
            # Cancelled before this stage started: it never starts.
            if not self.cancels.ended_elsewhere(command.job_id):
                await self.publisher.publish([self._cancelled_job(command)])
            return
        if self.history is not None:
            resumed = await self._resumed(command, self.history)
            if resumed is None:
                return
            command = resumed
        with self.cancels.watch(command.job_id) as cancel, self.metrics.running(self.stage):
            await self._attempt(command, cancel)

    async def _resumed(self, command: StageCommand, history: AttemptHistory) -> StageCommand | None:
        """The attempt this delivery runs, after ending one a dead worker left open; None
        when nothing is to run."""
        decided = resumption(
            command, await history.latest(command), self.settings.stage_max_attempts
        )
        if decided.done:
            log.info("%s of job %s already ran and the job went on", command.stage, command.job_id)
            return None
        if decided.lost is None:
            return decided.command
        lost = dataclasses.replace(command, attempt=decided.lost)
        if decided.give_up:
            message = (
                f"{decided.lost} attempts of stage {command.stage} ended without an outcome "
                "(the worker running each one stopped); the job is not tried again"
            )
            error = error_info(
                WORKER_LOST, message, {"stage": command.stage, "attempts": decided.lost}
            )
            failed = [self._changed(lost, "FAILED", error=error, reported=1)]
            await self.publisher.publish([*failed, self._finished(lost, "FAILED", error)])
            return None
        retry = decided.command.attempt
        message = (
            f"attempt {decided.lost} of stage {command.stage} ended without an outcome (its "
            f"worker stopped or lost the broker); attempt {retry} runs the stage again"
        )
        details = {"stage": command.stage, "attempt": decided.lost, "retried_as": retry}
        error = error_info(ATTEMPT_LOST, message, details)
        # reported > 0: the projector cuts the progress topic before it, so the lost attempt's
        # progress precedes its end on the feed.
        await self.publisher.publish([self._changed(lost, "FAILED", error=error, reported=1)])
        log.warning("job %s: %s", command.job_id, message)
        return decided.command

    async def _attempt(self, command: StageCommand, cancel: asyncio.Event) -> None:
        started = time.monotonic()
        # Not awaited here: it shares a partition and a producer with this stage's later
        # events, so it stays ahead of them; its delivery is awaited with theirs.
        in_flight = await self.publisher.send([self._changed(command, "STARTED")])
        reporter = StageReporter(self.publisher, command, self.source, started=in_flight)
        reporter.cancel = cancel
        try:
            outcome = await self.logic(command, reporter)
        except KafkaError:
            raise  # the broker is away: the attempt runs again once it is back (Intake.receive)
        except Exception as error:  # the agent survives any one job
            log.exception("stage %s crashed on job %s", self.stage, command.job_id)
            outcome = StageFailure((Problem("STAGE_CRASHED", f"{type(error).__name__}: {error}"),))
        duration_ms = int((time.monotonic() - started) * 1000)
        reported = reporter.reported
        if self.cancels.ended_elsewhere(command.job_id):
            # The watchdog gave up on this attempt and ended the job: its end stands alone.
            self.metrics.ran(self.stage, "ENDED_ELSEWHERE", duration_ms)
            await asyncio.gather(*in_flight)
            return
        if isinstance(outcome, StageCancelled):
            self.metrics.ran(self.stage, "CANCELLED", duration_ms)
            changed = self._changed(
                command,
                "CANCELLED",
                summary=outcome.summary,
                error=self._cancel_error(command, outcome.reason),
                duration_ms=duration_ms,
                reported=reported,
            )
            await self._deliver([changed, self._cancelled_job(command)], in_flight)
            return
        if isinstance(outcome, StageResult):
            try:
                # Encoded before anything is sent: a refusal cannot follow a SUCCEEDED.
                outgoing = [
                    self.publisher.encoded(item)
                    for item in self._succeeded(command, outcome, duration_ms, reported)
                ]
            except (TypeError, ValueError) as error:
                # Output that cannot be serialised or encoded fails the job, visibly.
                problem = Problem("OUTPUT_INVALID", f"{type(error).__name__}: {error}")
                outcome = StageFailure((problem,))
            else:
                self.metrics.ran(self.stage, "SUCCEEDED", duration_ms)
                await self._deliver(outgoing, in_flight)
                return
        self.metrics.ran(self.stage, "FAILED", duration_ms)
        await self._deliver(self._failed(command, outcome, duration_ms, reported), in_flight)

    async def _deliver(
        self, outgoing: list[Outgoing], in_flight: list[asyncio.Future[Any]]
    ) -> None:
        events_topic = self.settings.topics.events
        events = [item for item in outgoing if item.topic == events_topic]
        commands = [item for item in outgoing if item.topic != events_topic]
        in_flight = in_flight + await self.publisher.send(events)
        await asyncio.gather(*in_flight)
        # Only now the next command: its STARTED must follow this stage's SUCCEEDED.
        await hand_off(self.handoff, self.publisher, commands)

    def _base(self, command: StageCommand, *id_parts: object) -> dict[str, Any]:
        event_id = event_id_for(command.job_id, command.stage, command.attempt, *id_parts)
        return envelope(command.job_id, command.tenant, self.source, event_id)

    def _changed(
        self,
        command: StageCommand,
        status: str,
        summary: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        duration_ms: int | None = None,
        reported: int = 0,
    ) -> Outgoing:
        record = self._base(command, status)
        record.update(
            stage=command.stage,
            attempt=command.attempt,
            status=status,
            summary=json.dumps(summary or {}),
            error=error,
            duration_ms=duration_ms,
            reported=reported,
        )
        return Outgoing(self.settings.topics.events, "StageChanged", record)

    def _cancel_error(self, command: StageCommand, reason: str = "") -> dict[str, Any]:
        reason = reason or self.cancels.reason(command.job_id)
        return error_info("CANCELLED", reason or "the job was cancelled", {"stage": command.stage})

    def _cancelled_job(self, command: StageCommand, ran: bool = False) -> Outgoing:
        """JobFinished CANCELLED; `ran` when the command's own stage completed first."""
        return self._finished(command, "CANCELLED", self._cancel_error(command), ran)

    def _finished(
        self,
        command: StageCommand,
        status: str,
        error: dict[str, Any] | None,
        ran: bool | None = None,
    ) -> Outgoing:
        record = self._base(command, "finished", status)
        ran = status == "SUCCEEDED" if ran is None else ran
        done = command.plan[: command.plan.index(command.stage) + ran]
        record.update(status=status, error=error, stages_completed=list(done), duration_ms=None)
        return Outgoing(self.settings.topics.events, "JobFinished", record)

    def _succeeded(
        self, command: StageCommand, result: StageResult, duration_ms: int, reported: int
    ) -> list[Outgoing]:
        summary = dict(result.summary)
        if result.warnings:
            summary["warnings"] = [w.as_dict() for w in result.warnings]
        succeeded = self._changed(
            command, "SUCCEEDED", summary=summary, duration_ms=duration_ms, reported=reported
        )
        out = [succeeded]
        following = command.next_stage
        if following is None:
            out.append(self._finished(command, "SUCCEEDED", None))
            return out
        if self.cancels.cancelled(command.job_id):
            # Cancelled while this stage ran: the next one never starts.
            out.append(self._cancelled_job(command, ran=True))
            return out
        record = self._base(command, "next", following)
        record.update(
            stage=following,
            attempt=1,
            plan=list(command.plan),
            spec=command.spec_text,
            input=document_text(result.output),
            deadline_ms=None,
        )
        out.append(Outgoing(self.settings.topics.stage(following), "StageCommand", record))
        return out

    def _failed(
        self, command: StageCommand, failure: StageFailure, duration_ms: int, reported: int
    ) -> list[Outgoing]:
        first = failure.problems[0]
        details: dict[str, Any] = {"problems": [p.as_dict() for p in failure.problems]}
        if first.line is not None:
            details.update(line=first.line, column=first.column)
        if failure.warnings:
            details["warnings"] = [w.as_dict() for w in failure.warnings]
        error = error_info(failure.code, failure.message, details)
        return [
            self._changed(
                command, "FAILED", error=error, duration_ms=duration_ms, reported=reported
            ),
            self._finished(command, "FAILED", error),
        ]
