"""What the execute stage runs for a job and what each way a run ends means, without I/O."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from consumers.execute.limits import RunLimits, RunResult
from consumers.execute.programs import (
    COMPILE_FAILED_MARKER,
    RESULT_MARKER,
    LimitSettings,
    Program,
    code_program,
    model_program,
    outcome_of,
    requested_limits,
    smoke_line,
)
from streams.stage import StageFailure, StageResult

LIMITS = RunLimits(wall_s=5, cpu_s=5, memory_mib=256, processes=16, output_kib=64)
TOOLS = {"python": sys.executable, "c": "/usr/bin/gcc", "javascript": "/usr/bin/node"}


def result(**fields: Any) -> RunResult:
    base: dict[str, Any] = {
        "exit_code": 0,
        "signal": None,
        "violation": None,
        "wall_s": 0.25,
        "cpu_s": 0.125,
        "peak_rss_kib": 9000,
        "output_bytes": 12,
        "truncated": False,
    }
    return RunResult(**(base | fields))


def code(language: str | None = None, source: str = "x", stdin: str | None = None) -> Program:
    made = code_program({"code": source, "language": language, "stdin": stdin}, LIMITS, TOOLS)
    assert isinstance(made, Program)
    return made


def test_each_language_runs_its_own_way() -> None:
    python = code(None, "print(1)", "7\n")
    assert python.argv == (sys.executable, "-I", "main.py")
    assert python.files == {"main.py": b"print(1)"}
    assert python.stdin == b"7\n"
    c = code("c", "int main(void){return 0;}")
    assert c.argv[:2] == ("/bin/sh", "-c")
    assert "/usr/bin/gcc" in c.argv[2] and COMPILE_FAILED_MARKER in c.argv[2]
    assert c.files == {"main.c": b"int main(void){return 0;}"}
    javascript = code("javascript", "console.log(1)")
    assert javascript.argv == ("/usr/bin/node", "main.js")


def test_a_language_whose_toolchain_is_missing_is_refused_not_faked() -> None:
    made = code_program({"code": "x", "language": "c"}, LIMITS, TOOLS | {"c": None})
    assert isinstance(made, StageFailure)
    assert made.code == "LANGUAGE_UNAVAILABLE"


def test_requested_limits_override_the_defaults_field_by_field() -> None:
    settings = LimitSettings(LIMITS, RunLimits(wall_s=60))
    asked = {"limits": {"timeout_seconds": 2, "memory_mb": None, "processes": 4}}
    limits = requested_limits(asked, settings)
    assert (limits.wall_s, limits.memory_mib, limits.processes) == (2.0, 256, 4)
    assert requested_limits({}, settings) == LIMITS


@pytest.mark.parametrize(
    "violation",
    ["TIME_LIMIT", "CPU_LIMIT", "MEMORY_LIMIT", "PROCESS_LIMIT", "OUTPUT_LIMIT"],
)
def test_every_violation_fails_the_stage_with_its_own_code(violation: str) -> None:
    outcome = outcome_of(code(), result(violation=violation, exit_code=None, signal=9), None, False)
    assert isinstance(outcome, StageFailure)
    assert outcome.code == violation
    assert outcome.message


def test_a_cancelled_run_is_no_outcome_of_its_own() -> None:
    assert outcome_of(code(), result(violation="CANCELLED"), None, False) is None


def test_exits_compile_errors_and_success() -> None:
    exited = outcome_of(code(), result(exit_code=3), None, False)
    assert isinstance(exited, StageFailure) and exited.code == "NONZERO_EXIT"
    assert "exit code 3" in exited.message
    killed = outcome_of(code(), result(exit_code=None, signal=11), None, False)
    assert isinstance(killed, StageFailure) and "signal 11" in killed.message
    compile_error = outcome_of(code("c"), result(exit_code=1), None, True)
    assert isinstance(compile_error, StageFailure) and compile_error.code == "COMPILE_ERROR"
    ran = outcome_of(code(), result(), None, False)
    assert isinstance(ran, StageResult)
    assert ran.summary["exit_code"] == 0 and ran.summary["language"] == "python"
    assert (ran.summary["wall_ms"], ran.summary["cpu_ms"]) == (250.0, 125.0)


GENERATED = {
    "target": "pytorch",
    "module": "INPUT_SHAPE = (4,)\n",
    "input_shape": [4],
    "output_shape": [3],
    "token_ids_below": None,
}


def test_a_model_smoke_run_checks_the_output_shape_against_compile() -> None:
    program = model_program(GENERATED, LIMITS)
    assert isinstance(program, Program)
    assert set(program.files) == {"model.py", "smoke.py"}
    assert json.loads(program.argv[-1])["batch"] == 8
    matching = {"output_shape": [3], "ms_per_batch": 1.5, "peak_rss_kib": 20000}
    ran = outcome_of(program, result(), matching, False)
    assert isinstance(ran, StageResult)
    assert ran.summary["output_shape"] == [3] and ran.summary["ms_per_batch"] == 1.5
    assert ran.summary["peak_rss_kib"] == 20000
    wrong = outcome_of(program, result(), matching | {"output_shape": [4]}, False)
    assert isinstance(wrong, StageFailure) and wrong.code == "OUTPUT_SHAPE_MISMATCH"
    silent = outcome_of(program, result(), None, False)
    assert isinstance(silent, StageFailure) and silent.code == "SMOKE_RUN_FAILED"


def test_a_model_without_codegen_output_is_refused() -> None:
    problem = model_program({"module": "x"}, LIMITS)
    assert not isinstance(problem, Program)
    assert problem.code == "INPUT_INVALID"


def test_only_the_marked_line_is_the_smoke_result() -> None:
    assert smoke_line(RESULT_MARKER + '{"output_shape": [2]}') == {"output_shape": [2]}
    assert smoke_line('{"output_shape": [2]}') is None
    assert smoke_line(RESULT_MARKER + "not json") is None
    assert smoke_line(RESULT_MARKER + "[1]") is None
