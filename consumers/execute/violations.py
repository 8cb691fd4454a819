"""Which limit, if any, ended a run: a pure reading of what the parent and the kernel saw."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from consumers.execute.limits import Violation

# What a program prints as it dies of a refused allocation (RLIMIT_AS, or the cgroup's limit
# reached without the OOM killer): Python, C++, glibc's strerror(ENOMEM), V8 and friends.
OUT_OF_MEMORY_WORDS = (
    b"MemoryError",
    b"std::bad_alloc",
    b"Cannot allocate memory",
    b"out of memory",
)
# strerror(EFBIG): a write past RLIMIT_FSIZE where SIGXFSZ is ignored (Python ignores it).
FILE_TOO_LARGE_WORDS = (b"File too large",)
# Signal numbers reach us as bubblewrap's exit status 128 + N, the way shells report them.
_SIGNAL_STATUS_BASE = 128


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything known about a finished run that bears on why it ended."""

    stopped_for: Violation | None  # the parent killed it: CANCELLED, TIME_LIMIT or OUTPUT_LIMIT
    exit_code: int | None
    signal: int | None
    cpu_s: float
    cpu_limit_s: int
    oom_kills: int
    forks_refused: int
    stderr_tail: bytes


def classify(evidence: Evidence) -> Violation | None:
    """The violation that explains the run's end, most definite first.

    A cancel wins over everything (someone asked for it). The kernel's own counters (an OOM kill,
    a refused fork) come next: they are the cause even when the run went on to hit the wall clock.
    Then the parent's own kills, then signals, then what a failed program printed as it died.
    """
    if evidence.stopped_for is Violation.CANCELLED:
        return Violation.CANCELLED
    if evidence.oom_kills > 0:
        return Violation.MEMORY_LIMIT
    if evidence.forks_refused > 0:
        return Violation.PROCESS_LIMIT
    if evidence.stopped_for is not None:
        return evidence.stopped_for
    if evidence.signal == signal.SIGXCPU:
        return Violation.CPU_LIMIT
    if evidence.signal == signal.SIGKILL and evidence.cpu_s >= evidence.cpu_limit_s:
        return Violation.CPU_LIMIT  # the hard limit, one second past the soft one
    if evidence.signal == signal.SIGXFSZ:
        return Violation.OUTPUT_LIMIT
    if evidence.exit_code == 0:
        return None
    if any(word in evidence.stderr_tail for word in FILE_TOO_LARGE_WORDS):
        return Violation.OUTPUT_LIMIT
    if any(word in evidence.stderr_tail for word in OUT_OF_MEMORY_WORDS):
        return Violation.MEMORY_LIMIT
    return None


def program_exit(wait_status: int, *, through_bwrap: bool) -> tuple[int | None, int | None]:
    """(exit_code, signal) of the program from the wait status of the process we started.

    bubblewrap exits with the program's code, or 128 + N when signal N killed it; a program that
    itself exits with 129..192 is therefore read as killed by a signal, as a shell would.
    """
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        return None, -code
    if through_bwrap and _SIGNAL_STATUS_BASE < code <= _SIGNAL_STATUS_BASE + signal.SIGRTMAX:
        return None, code - _SIGNAL_STATUS_BASE
    return code, None
