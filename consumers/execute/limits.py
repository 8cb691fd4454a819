"""What one sandboxed run may use and what it did: plain values for the sandbox and the stage."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum


class Violation(StrEnum):
    """Why a run was stopped or failed at a limit; a plain non-zero exit is none of these."""

    TIME_LIMIT = "TIME_LIMIT"
    CPU_LIMIT = "CPU_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    PROCESS_LIMIT = "PROCESS_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Limits of one run. `address_space_mib` is RLIMIT_AS: generous, because PyTorch reserves
    far more virtual memory than it touches (`import torch` peaks near 640 MiB of address space
    for 230 MiB resident); the cgroup's `memory_mib` is what bounds real memory."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mib: int = 512
    processes: int = 32
    output_kib: int = 1024
    file_mib: int = 64
    open_files: int = 64
    address_space_mib: int = 8192

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"RunLimits.{field.name} must be positive")

    @property
    def output_bytes(self) -> int:
        return self.output_kib * 1024


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended. `exit_code` is None when a signal ended it; `violation` is a
    `Violation` name or None; `peak_rss_kib` is the peak memory of the run's cgroup (resident
    pages plus page cache and tmpfs files), or the program's own peak RSS without one."""

    exit_code: int | None
    signal: int | None
    violation: str | None
    wall_s: float
    cpu_s: float
    peak_rss_kib: int
    output_bytes: int
    truncated: bool


class SandboxError(RuntimeError):
    """The sandbox could not be set up, or could not start a program inside it."""

    code = "SANDBOX_UNAVAILABLE"
