"""cgroup v1 groups for sandboxed runs: one per run per controller, limited, swept and removed.

Run groups live under `stagecast/` inside this process's own group of each controller, so a
limit the host put on the worker (a container's, a supervisor's) still holds for its programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consumers.execute.limits import SandboxError

MEMORY = "memory"
PIDS = "pids"
CPUACCT = "cpuacct"
# The file that shows a group belongs to a v1 hierarchy of that controller.
_MARKERS = {MEMORY: "memory.limit_in_bytes", PIDS: "pids.max", CPUACCT: "cpuacct.usage"}
_GROUP = "stagecast"
_SWEEP_S = 2.0
_REMOVE_S = 1.0
_POLL_S = 0.001


class CgroupError(SandboxError):
    """A run's groups could not be made, limited or emptied."""


@dataclass(frozen=True, slots=True)
class CgroupStats:
    """What the kernel counted for one run's groups."""

    oom_kills: int
    forks_refused: int
    peak_bytes: int | None
    cpu_s: float | None


@dataclass(frozen=True, slots=True)
class CgroupTree:
    """The writable parent (`.../stagecast`) of each usable controller, and why others are not."""

    parents: Mapping[str, Path]
    missing: Mapping[str, str]

    @classmethod
    def find(cls, root: Path = Path("/sys/fs/cgroup")) -> CgroupTree:
        """Probe each controller by making and removing a group under its parent."""
        own = _own_groups()
        parents: dict[str, Path] = {}
        missing: dict[str, str] = {}
        for controller, marker in _MARKERS.items():
            hierarchy = root / controller
            if not hierarchy.is_dir():
                missing[controller] = f"no cgroup v1 {controller} hierarchy at {hierarchy}"
                continue
            mine = hierarchy / own.get(controller, "/").lstrip("/")
            parent = (mine if mine.is_dir() else hierarchy) / _GROUP
            probe = parent / f"probe-{os.getpid()}"
            try:
                _make(probe)
                usable = (probe / marker).is_file()
                probe.rmdir()
            except OSError as error:
                missing[controller] = f"cannot create groups under {parent}: {error.strerror}"
                continue
            finally:
                _remove_if_empty(parent)
            if not usable:
                missing[controller] = f"{hierarchy} is not a cgroup v1 {controller} hierarchy"
                continue
            parents[controller] = parent
        return cls(parents, missing)

    def create(self, run_id: str, *, memory_bytes: int, pids: int) -> RunCgroup:
        """A fresh group per controller for one run, limits written before anything joins."""
        group = RunCgroup({name: parent / run_id for name, parent in self.parents.items()})
        try:
            for path in group.dirs.values():
                _make(path)
            if MEMORY in group.dirs:
                memory = group.dirs[MEMORY]
                _write(memory / "memory.limit_in_bytes", memory_bytes)
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", memory_bytes)
            if PIDS in group.dirs:
                _write(group.dirs[PIDS] / "pids.max", pids)
        except OSError as error:
            group.remove_now()
            raise CgroupError(f"cannot set up the run's cgroups: {error}") from error
        return group


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """One run's groups, by controller."""

    dirs: Mapping[str, Path]

    @property
    def procs_files(self) -> list[Path]:
        """The files a process writes its pid into to join every group."""
        return [path / "cgroup.procs" for path in self.dirs.values()]

    def members(self) -> set[int]:
        """Pids of every process still in any of the run's groups."""
        pids: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(FileNotFoundError):
                pids.update(int(line) for line in procs.read_text().split())
        return pids

    async def sweep(self) -> None:
        """SIGKILL every process in the groups until none is left."""
        deadline = time.monotonic() + _SWEEP_S
        while members := self.members():
            for pid in members:
                self._kill(pid)
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {sorted(members)} survived SIGKILL for {_SWEEP_S} s")
            await asyncio.sleep(_POLL_S)

    def _kill(self, pid: int) -> None:
        # Through a pidfd taken while the pid is still a member: a pid that was reaped and
        # reused by another process between reading cgroup.procs and the kill is never hit.
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if pid in self.members():
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    def stats(self) -> CgroupStats:
        """The kernel's counters for the run; read after the run, before `remove`."""
        memory, pids, cpu = (self.dirs.get(name) for name in (MEMORY, PIDS, CPUACCT))
        return CgroupStats(
            oom_kills=_field(memory / "memory.oom_control", "oom_kill") if memory else 0,
            forks_refused=_field(pids / "pids.events", "max") if pids else 0,
            peak_bytes=int(_read(memory / "memory.max_usage_in_bytes")) if memory else None,
            cpu_s=int(_read(cpu / "cpuacct.usage")) / 1e9 if cpu else None,
        )

    async def remove(self) -> None:
        """Remove the groups (waiting out tasks that are still being torn down), then their
        `stagecast` parents if no other run is using them."""
        deadline = time.monotonic() + _REMOVE_S
        for path in self.dirs.values():
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove {path}: {error.strerror}") from error
                    await asyncio.sleep(_POLL_S)
            _remove_if_empty(path.parent)

    def remove_now(self) -> None:
        """Remove groups nothing has joined yet."""
        for path in self.dirs.values():
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()
            _remove_if_empty(path.parent)


def _own_groups() -> dict[str, str]:
    """This process's group path in each v1 controller, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                groups[controller] = path
    return groups


def _make(path: Path) -> None:
    # Another run may remove an empty `stagecast` parent between our two mkdirs: make it again.
    for _ in range(3):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    path.mkdir(parents=True, exist_ok=True)


def _remove_if_empty(path: Path) -> None:
    # EBUSY while another run has its group there; gone already is fine too.
    with contextlib.suppress(OSError):
        path.rmdir()


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))


def _read(path: Path) -> str:
    return path.read_text().strip()


def _field(path: Path, name: str) -> int:
    """The number after `name` in a flat-keyed cgroup file (`oom_kill 1`, `max 3`)."""
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0
