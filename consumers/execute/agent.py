"""Execute stage agent: a CODE job's program or a MODEL job's smoke run, in the sandbox.

The run is a child process awaited asynchronously, so the agent keeps consuming, and the
consumer group keeps its heartbeats, however long it takes. Output lines reach the feed as
they come (LogEmitted in batches every 50 ms or 64 KiB), heartbeats every second, and a
cancel on the control topic kills the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from consumers.execute.limits import RunLimits
from consumers.execute.programs import (
    COMPILE_FAILED_MARKER,
    LimitSettings,
    Program,
    code_program,
    model_program,
    outcome_of,
    requested_limits,
    smoke_line,
    toolchains,
)
from consumers.execute.sandbox import Sandbox
from streams.runner import StageCommand, StageReporter
from streams.settings import Settings
from streams.stage import Outcome, Problem, StageCancelled, StageFailure, StageResult

log = logging.getLogger(__name__)

FLUSH_S = 0.05
FLUSH_BYTES = 64 * 1024


def limit_settings(settings: Settings, kind: str) -> LimitSettings:
    """The deployment's defaults (per kind of job) and maxima for one run."""
    maximum = RunLimits(
        wall_s=settings.execute_max_wall_s,
        cpu_s=settings.execute_max_cpu_s,
        memory_mib=settings.execute_max_memory_mib,
        processes=settings.execute_max_processes,
        output_kib=settings.execute_max_output_kib,
    )
    if kind == "TRAIN":
        default = RunLimits(
            wall_s=settings.train_wall_s,
            cpu_s=settings.train_cpu_s,
            memory_mib=settings.train_memory_mib,
            processes=settings.train_processes,
            output_kib=settings.execute_max_output_kib,
            file_mib=settings.train_file_mib,
        )
    elif kind == "MODEL":
        default = RunLimits(
            wall_s=settings.model_wall_s,
            cpu_s=settings.model_cpu_s,
            memory_mib=settings.model_memory_mib,
            processes=settings.model_processes,
            output_kib=settings.execute_output_kib,
        )
    else:
        default = RunLimits(
            wall_s=settings.execute_wall_s,
            cpu_s=settings.execute_cpu_s,
            memory_mib=settings.execute_memory_mib,
            processes=settings.execute_processes,
            output_kib=settings.execute_output_kib,
        )
    return LimitSettings(default, maximum)


class EventPump:
    """Events of one run to the feed, in order, in batches: one acknowledgement wait each."""

    def __init__(self, reporter: StageReporter) -> None:
        self.reporter = reporter
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self._lock = asyncio.Lock()

    async def flush(self) -> int:
        """Send what is pending; how many events that was."""
        async with self._lock:
            items, self.pending = self.pending, []
            await self.reporter.send_all(items)
            return len(items)

    async def every(self, interval: float, stop: asyncio.Event) -> None:
        """Flush every `interval` until `stop` is set (a flush is never cut half way)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await self.flush()


class OutputPump(EventPump):
    """A run's output lines as LogEmitted, flushed also at 64 KiB; at most `max_lines`."""

    def __init__(self, reporter: StageReporter, max_lines: int) -> None:
        super().__init__(reporter)
        self.max_lines = max_lines
        self.forwarded = 0
        self.dropped = 0
        self.smoke: dict[str, Any] | None = None
        self.compile_failed = False
        self._pending_bytes = 0

    async def line(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        if stream == "stdout" and (measured := smoke_line(text)) is not None:
            self.smoke = measured
            return
        if stream == "stderr" and text == COMPILE_FAILED_MARKER:
            self.compile_failed = True
            return
        if self.forwarded + len(self.pending) >= self.max_lines:
            self.dropped += 1
            return
        self.pending.append(self.reporter.log_event(text, stream=stream))
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> int:
        self._pending_bytes = 0
        sent = await super().flush()
        self.forwarded += sent
        return sent

    async def close(self) -> None:
        await self.flush()
        if self.dropped:
            notice = f"[{self.dropped} more line(s) not shown: the feed keeps {self.max_lines}]"
            await self.reporter.logs([("stderr", notice)], level="WARNING")


def unconfined(sandbox: Sandbox, settings: Settings) -> StageFailure | None:
    """SANDBOX_UNAVAILABLE where the sandbox lacks a protection and that is not allowed."""
    if sandbox.confined or settings.allow_unconfined:
        return None
    missing = ", ".join(f"{name} ({why})" for name, why in sandbox.missing.items())
    return StageFailure(
        (
            Problem(
                "SANDBOX_UNAVAILABLE",
                f"this worker cannot confine programs: missing {missing}",
                hint="install what is missing (make install does) or set "
                "STAGECAST_ALLOW_UNCONFINED=true to run without it",
            ),
        )
    )


async def heartbeats(
    reporter: StageReporter, wall_s: float | None, interval: float, pump: EventPump | None
) -> None:
    """ProgressReported while the stage works. With `wall_s`, the share of the time allowed
    that has gone; without (training reports its own percent), the percent so far. With a
    `pump`, a heartbeat queues behind the run's events made before it and goes with them."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        elapsed = time.monotonic() - started
        share = min(99.0, 100 * elapsed / wall_s) if wall_s else 0.0
        if pump is None:
            await reporter.progress(share, f"working for {elapsed:.0f} s")
        else:
            pump.pending.append(reporter.progress_event(share, f"working for {elapsed:.0f} s"))
            await pump.flush()


@contextlib.asynccontextmanager
async def beating(
    reporter: StageReporter, wall_s: float | None, interval: float, pump: EventPump | None = None
) -> AsyncIterator[None]:
    """Heartbeats while the block runs (also while it waits for a free slot): the watchdog
    fails an attempt that goes silent."""
    task = asyncio.create_task(heartbeats(reporter, wall_s, interval, pump))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ExecuteStage:
    """The stage logic, holding this worker's sandbox and its bound on concurrent runs."""

    def __init__(
        self, settings: Settings, sandbox: Sandbox, slots: asyncio.Semaphore | None = None
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.toolchains = toolchains()
        # Shared with the train stage: the bound is on runs per worker, whichever stage.
        self._slots = slots or asyncio.Semaphore(settings.execute_concurrency)
        log.warning(
            "execute stage: sandbox protections %s%s; toolchains %s",
            self.sandbox.protections,
            f"; missing {self.sandbox.missing}" if self.sandbox.missing else "",
            {name: path is not None for name, path in self.toolchains.items()},
        )

    def sandbox_report(self) -> dict[str, Any]:
        """What /ready shows about this worker's runs (streams/app.py records it)."""
        return {
            "protections": self.sandbox.protections,
            "missing": self.sandbox.missing,
            "toolchains": {name: path is not None for name, path in self.toolchains.items()},
        }

    def program(self, command: StageCommand) -> Program | StageFailure:
        kind = str(command.spec.get("kind") or "MODEL")
        limits = requested_limits(command.spec, limit_settings(self.settings, kind))
        if kind == "CODE":
            return code_program(command.spec, limits, self.toolchains)
        made = model_program(command.input, limits)
        return made if isinstance(made, Program) else StageFailure((made,))

    async def __call__(self, command: StageCommand, reporter: StageReporter) -> Outcome:
        refused = unconfined(self.sandbox, self.settings)
        if refused is not None:
            return refused
        program = self.program(command)
        if isinstance(program, StageFailure):
            return program
        interval = self.settings.execute_heartbeat_s
        pump = OutputPump(reporter, self.settings.execute_log_lines)
        async with beating(reporter, program.limits.wall_s, interval, pump), self._slots:
            outcome = await self._run(program, reporter, pump)
        if program.kind == "MODEL" and isinstance(outcome, StageResult):
            # The next stage (train) needs the module too: codegen's output goes on with it.
            return StageResult({**command.input, "smoke": outcome.output}, outcome.summary)
        return outcome

    async def _run(self, program: Program, reporter: StageReporter, pump: OutputPump) -> Outcome:
        ended = asyncio.Event()
        flushing = asyncio.create_task(pump.every(FLUSH_S, ended))
        try:
            result = await self.sandbox.run(
                program.argv,
                files=program.files,
                stdin=program.stdin,
                limits=program.limits,
                on_output=pump.line,
                cancel=reporter.cancel,
                binds=[Path(sys.prefix)],
            )
        finally:
            ended.set()
            await flushing
        await pump.close()
        outcome = outcome_of(program, result, pump.smoke, pump.compile_failed)
        if outcome is None:
            return StageCancelled(summary={"kind": program.kind, "wall_ms": result.wall_s * 1000})
        return outcome
