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
    if kind == "MODEL":
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


class OutputPump:
    """A run's output lines to the feed, in order, in batches; at most `max_lines` of them."""

    def __init__(self, reporter: StageReporter, max_lines: int) -> None:
        self.reporter = reporter
        self.max_lines = max_lines
        self.forwarded = 0
        self.dropped = 0
        self.smoke: dict[str, Any] | None = None
        self.compile_failed = False
        self._pending: list[tuple[str, str]] = []
        self._pending_bytes = 0
        self._lock = asyncio.Lock()

    async def line(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        if stream == "stdout" and (measured := smoke_line(text)) is not None:
            self.smoke = measured
            return
        if stream == "stderr" and text == COMPILE_FAILED_MARKER:
            self.compile_failed = True
            return
        if self.forwarded + len(self._pending) >= self.max_lines:
            self.dropped += 1
            return
        self._pending.append((stream, text))
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            lines, self._pending, self._pending_bytes = self._pending, [], 0
            if lines:
                await self.reporter.logs(lines)
                self.forwarded += len(lines)

    async def every(self, interval: float, stop: asyncio.Event) -> None:
        """Flush every `interval` until `stop` is set (a flush is never cut half way)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        if self.dropped:
            notice = f"[{self.dropped} more line(s) not shown: the feed keeps {self.max_lines}]"
            await self.reporter.logs([("stderr", notice)], level="WARNING")


async def heartbeats(reporter: StageReporter, limits: RunLimits, interval: float) -> None:
    """ProgressReported while the stage works: the share of the run's time allowed gone."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        elapsed = time.monotonic() - started
        await reporter.progress(
            min(99.0, 100 * elapsed / limits.wall_s),
            f"working for {elapsed:.0f} s (the run may take {limits.wall_s:g} s)",
        )


class ExecuteStage:
    """The stage logic, holding this worker's sandbox and its bound on concurrent runs."""

    def __init__(self, settings: Settings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox.detect()
        self.toolchains = toolchains()
        self._slots = asyncio.Semaphore(settings.execute_concurrency)
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
        if not self.sandbox.confined and not self.settings.allow_unconfined:
            missing = ", ".join(f"{name} ({why})" for name, why in self.sandbox.missing.items())
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
        program = self.program(command)
        if isinstance(program, StageFailure):
            return program
        # Heartbeats from now on, also while waiting for a free slot: the watchdog fails an
        # attempt that goes silent.
        beating = asyncio.create_task(
            heartbeats(reporter, program.limits, self.settings.execute_heartbeat_s)
        )
        try:
            async with self._slots:
                outcome = await self._run(program, reporter)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        if program.kind == "MODEL" and isinstance(outcome, StageResult):
            # The next stage (train) needs the module too: codegen's output goes on with it.
            return StageResult({**command.input, "smoke": outcome.output}, outcome.summary)
        return outcome

    async def _run(self, program: Program, reporter: StageReporter) -> Outcome:
        pump = OutputPump(reporter, self.settings.execute_log_lines)
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
