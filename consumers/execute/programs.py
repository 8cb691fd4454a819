"""What the execute stage runs for a job, and what the run's end means: pure logic, no I/O.

A CODE job is the user's program (Python from the project's environment, C through gcc,
JavaScript through node). A MODEL job is a smoke run of the generated module: build the
model, run a forward pass on a seeded random batch of the declared input shape, and check
the output shape against the compiled one (`consumers/execute/smoke.py`).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.execute.limits import RunLimits, RunResult
from streams.stage import Problem, StageFailure, StageResult

SMOKE_SCRIPT = Path(__file__).with_name("smoke.py")
# The smoke run prints its measurements on one line that starts with this marker.
RESULT_MARKER = "__stagecast_smoke__ "
# gcc's diagnostics go to stderr; this line after them says the program never ran.
COMPILE_FAILED_MARKER = "__stagecast_compile_failed__"
SMOKE_BATCH = 8


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """A deployment's defaults and maxima for one kind of run."""

    default: RunLimits
    maximum: RunLimits


@dataclass(frozen=True, slots=True)
class Program:
    """One sandboxed run: what to start, with which files, input and limits."""

    kind: str  # "CODE" or "MODEL"
    language: str
    argv: tuple[str, ...]
    files: Mapping[str, bytes]
    stdin: bytes
    limits: RunLimits
    expected_shape: tuple[int, ...] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def toolchains() -> dict[str, str | None]:
    """The programs each language needs, where this machine has them (None: missing)."""
    return {
        "python": sys.executable,
        "c": shutil.which("gcc"),
        "javascript": shutil.which("node"),
    }


def requested_limits(spec: Mapping[str, Any], limits: LimitSettings) -> RunLimits:
    """The request's limits over the deployment's defaults (the dispatcher checked maxima)."""
    asked = spec.get("limits") or {}
    default = limits.default

    def pick(name: str, fallback: float) -> Any:
        value = asked.get(name)
        return fallback if value is None else value

    return RunLimits(
        wall_s=float(pick("timeout_seconds", default.wall_s)),
        cpu_s=int(pick("cpu_seconds", default.cpu_s)),
        memory_mib=int(pick("memory_mb", default.memory_mib)),
        processes=int(pick("processes", default.processes)),
        output_kib=int(pick("output_kib", default.output_kib)),
        file_mib=default.file_mib,
        open_files=default.open_files,
        address_space_mib=default.address_space_mib,
    )


def code_program(
    spec: Mapping[str, Any], limits: RunLimits, found: Mapping[str, str | None]
) -> Program | StageFailure:
    """The user's program, or LANGUAGE_UNAVAILABLE when this worker lacks its toolchain."""
    language = spec.get("language") or "python"
    code = str(spec.get("code") or "")
    stdin = str(spec.get("stdin") or "").encode()
    tool = found.get(language)
    if tool is None:
        return StageFailure(
            (
                Problem(
                    "LANGUAGE_UNAVAILABLE",
                    f"this worker cannot run {language}: its toolchain is not installed",
                    hint="install it on the worker (see the README) or use python",
                ),
            )
        )
    if language == "python":
        argv: tuple[str, ...] = (tool, "-I", "main.py")
        files = {"main.py": code.encode()}
    elif language == "c":
        build = (
            f"{tool} -O2 -std=c11 -o /tmp/program main.c -lm 2>&1 >&2 "
            f"|| {{ echo {COMPILE_FAILED_MARKER} >&2; exit 1; }}; exec /tmp/program"
        )
        argv = ("/bin/sh", "-c", build)
        files = {"main.c": code.encode()}
    else:
        argv = (tool, "main.js")
        files = {"main.js": code.encode()}
    return Program("CODE", language, argv, files, stdin, limits)


def model_program(given: Mapping[str, Any], limits: RunLimits, seed: int = 0) -> Program | Problem:
    """The smoke run of the module codegen produced, or why there is nothing to run."""
    module = given.get("module")
    shape = given.get("input_shape")
    expected = given.get("output_shape")
    if not isinstance(module, str) or not isinstance(shape, list) or not isinstance(expected, list):
        return Problem(
            "INPUT_INVALID", "the execute stage needs codegen's module, input and output shapes"
        )
    arguments = {
        "batch": SMOKE_BATCH,
        "seed": seed,
        "token_ids_below": given.get("token_ids_below"),
        "marker": RESULT_MARKER,
    }
    argv = (sys.executable, "-I", "smoke.py", json.dumps(arguments))
    files = {"model.py": module.encode(), "smoke.py": SMOKE_SCRIPT.read_bytes()}
    target = str(given.get("target") or "pytorch")
    return Program(
        "MODEL",
        "python",
        argv,
        files,
        b"",
        limits,
        expected_shape=tuple(int(n) for n in expected),
        summary={"target": target, "batch": SMOKE_BATCH, "seed": seed},
    )


def _measured(result: RunResult) -> dict[str, Any]:
    return {
        "wall_ms": round(result.wall_s * 1000, 1),
        "cpu_ms": round(result.cpu_s * 1000, 1),
        "peak_rss_kib": result.peak_rss_kib,
        "output_bytes": result.output_bytes,
        "truncated": result.truncated,
    }


_VIOLATIONS = {
    "TIME_LIMIT": "the program ran longer than its {wall_s:g} s wall-clock limit",
    "CPU_LIMIT": "the program used more than its {cpu_s} s of CPU time",
    "MEMORY_LIMIT": "the program needed more than its {memory_mib} MiB of memory",
    "PROCESS_LIMIT": "the program tried to run more than {processes} processes or threads",
    "OUTPUT_LIMIT": (
        "the program wrote more than its {output_kib} KiB of output, or too big a file"
    ),
}


def run_failure(limits: RunLimits, result: RunResult) -> StageFailure | None:
    """The failure a run's end means: a limit it broke, or a non-zero exit; None if fine.

    A cancelled run is no failure of its own (the runner reports the cancel).
    """
    if result.violation == "CANCELLED":
        return None
    if result.violation is not None:
        message = _VIOLATIONS[result.violation].format(
            wall_s=limits.wall_s,
            cpu_s=limits.cpu_s,
            memory_mib=limits.memory_mib,
            processes=limits.processes,
            output_kib=limits.output_kib,
        )
        return StageFailure((Problem(result.violation, message),))
    if result.exit_code != 0:
        how = (
            f"exit code {result.exit_code}" if result.signal is None else f"signal {result.signal}"
        )
        return StageFailure((Problem("NONZERO_EXIT", f"the program ended with {how}"),))
    return None


def outcome_of(
    program: Program,
    result: RunResult,
    smoke: Mapping[str, Any] | None,
    compile_failed: bool,
) -> StageResult | StageFailure | None:
    """What the run means for the stage; None when it was cancelled (the runner says so)."""
    measured = _measured(result)
    details: dict[str, Any] = {**program.summary, "kind": program.kind, **measured}
    if result.violation == "CANCELLED":
        return None
    if compile_failed and result.violation is None:
        return StageFailure((Problem("COMPILE_ERROR", "gcc could not compile the program"),))
    failed = run_failure(program.limits, result)
    if failed is not None:
        return failed
    if program.kind == "CODE":
        summary = {**details, "language": program.language, "exit_code": 0}
        return StageResult({"exit_code": 0, **measured}, summary)
    if smoke is None:
        return StageFailure(
            (Problem("SMOKE_RUN_FAILED", "the smoke run ended without its measurements"),)
        )
    shape = tuple(int(n) for n in smoke.get("output_shape", ()))
    if shape != program.expected_shape:
        return StageFailure(
            (
                Problem(
                    "OUTPUT_SHAPE_MISMATCH",
                    f"the model's output is {list(shape)} per sample; compile said "
                    f"{list(program.expected_shape or ())}",
                ),
            )
        )
    summary = {
        **details,
        "output_shape": list(shape),
        "ms_per_batch": smoke.get("ms_per_batch"),
        "peak_rss_kib": max(result.peak_rss_kib, int(smoke.get("peak_rss_kib") or 0)),
    }
    return StageResult({"output_shape": list(shape), **summary}, summary)


def smoke_line(line: str) -> dict[str, Any] | None:
    """The smoke run's measurements, if `line` is its result line."""
    if not line.startswith(RESULT_MARKER):
        return None
    try:
        value = json.loads(line[len(RESULT_MARKER) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
