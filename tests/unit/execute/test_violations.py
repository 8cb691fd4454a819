"""Which violation explains a run's end, from what the parent and the kernel saw."""

from __future__ import annotations

import dataclasses
import signal

import pytest

from consumers.execute.limits import Violation
from consumers.execute.violations import Evidence, classify, program_exit

CLEAN = Evidence(
    stopped_for=None,
    exit_code=0,
    signal=None,
    cpu_s=0.1,
    cpu_limit_s=10,
    oom_kills=0,
    forks_refused=0,
    stderr_tail=b"",
)


def seen(**changes: object) -> Evidence:
    return dataclasses.replace(CLEAN, **changes)  # type: ignore[arg-type]


def test_a_program_that_exits_on_its_own_violates_nothing() -> None:
    assert classify(CLEAN) is None
    assert classify(seen(exit_code=1, stderr_tail=b"ValueError: bad input\n")) is None


@pytest.mark.parametrize(
    ("evidence", "violation"),
    [
        (seen(stopped_for=Violation.TIME_LIMIT, exit_code=None, signal=9), Violation.TIME_LIMIT),
        (
            seen(stopped_for=Violation.OUTPUT_LIMIT, exit_code=None, signal=9),
            Violation.OUTPUT_LIMIT,
        ),
        (seen(stopped_for=Violation.CANCELLED, exit_code=None, signal=9), Violation.CANCELLED),
        (
            seen(exit_code=None, signal=signal.SIGXCPU, cpu_s=1.0, cpu_limit_s=1),
            Violation.CPU_LIMIT,
        ),
        (
            seen(exit_code=None, signal=signal.SIGKILL, cpu_s=2.0, cpu_limit_s=1),
            Violation.CPU_LIMIT,
        ),
        (seen(exit_code=None, signal=signal.SIGKILL, oom_kills=1), Violation.MEMORY_LIMIT),
        (seen(exit_code=1, stderr_tail=b"Traceback ...\nMemoryError\n"), Violation.MEMORY_LIMIT),
        (
            seen(exit_code=None, signal=signal.SIGABRT, stderr_tail=b"what():  std::bad_alloc\n"),
            Violation.MEMORY_LIMIT,
        ),
        (seen(exit_code=1, stderr_tail=b"mmap: Cannot allocate memory\n"), Violation.MEMORY_LIMIT),
        (seen(exit_code=1, forks_refused=3), Violation.PROCESS_LIMIT),
        (seen(exit_code=None, signal=signal.SIGXFSZ), Violation.OUTPUT_LIMIT),
        (
            seen(exit_code=1, stderr_tail=b"OSError: [Errno 27] File too large\n"),
            Violation.OUTPUT_LIMIT,
        ),
    ],
)
def test_each_limit_is_named_exactly(evidence: Evidence, violation: Violation) -> None:
    assert classify(evidence) == violation


def test_a_kill_below_the_cpu_limit_is_not_a_cpu_violation() -> None:
    assert classify(seen(exit_code=None, signal=signal.SIGKILL, cpu_s=0.5, cpu_limit_s=1)) is None


def test_words_in_the_output_of_a_program_that_succeeded_are_not_evidence() -> None:
    assert classify(seen(exit_code=0, stderr_tail=b"caught MemoryError, used less\n")) is None
    assert classify(seen(exit_code=0, stderr_tail=b"File too large, skipped\n")) is None


def test_a_cancel_outranks_everything_it_interrupted() -> None:
    evidence = seen(stopped_for=Violation.CANCELLED, signal=9, oom_kills=1, forks_refused=2)
    assert classify(evidence) == Violation.CANCELLED


def test_the_kernel_refusing_memory_or_a_fork_outranks_the_wall_clock() -> None:
    # A fork bomb that keeps retrying until the wall clock is still a fork bomb.
    timed_out = seen(stopped_for=Violation.TIME_LIMIT, exit_code=None, signal=9)
    assert classify(dataclasses.replace(timed_out, forks_refused=1)) == Violation.PROCESS_LIMIT
    assert classify(dataclasses.replace(timed_out, oom_kills=1)) == Violation.MEMORY_LIMIT


def test_a_refused_fork_is_a_violation_even_when_the_program_then_succeeds() -> None:
    assert classify(seen(exit_code=0, forks_refused=1)) == Violation.PROCESS_LIMIT


def test_exit_codes_and_signals_come_through_bubblewrap() -> None:
    exited = {code: code << 8 for code in (0, 1, 3, 128, 137, 152, 200)}
    assert program_exit(exited[3], through_bwrap=True) == (3, None)
    assert program_exit(exited[128], through_bwrap=True) == (128, None)
    # bubblewrap reports a program killed by signal N as exit code 128 + N.
    assert program_exit(exited[137], through_bwrap=True) == (None, signal.SIGKILL)
    assert program_exit(exited[152], through_bwrap=True) == (None, signal.SIGXCPU)
    assert program_exit(exited[200], through_bwrap=True) == (200, None)
    # Without bubblewrap the wait status is the program's own.
    assert program_exit(exited[137], through_bwrap=False) == (137, None)
    assert program_exit(signal.SIGKILL, through_bwrap=False) == (None, signal.SIGKILL)
    # bubblewrap itself killed (by the parent) reads as that signal.
    assert program_exit(signal.SIGKILL, through_bwrap=True) == (None, signal.SIGKILL)
