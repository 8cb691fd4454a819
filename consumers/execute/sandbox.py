"""Run one untrusted program contained, streaming its output line by line.

Layers, outermost first: a cgroup v1 group per controller (memory, pids, cpu accounting) that the
launcher joins before anything else runs; bubblewrap (every namespace unshared, uid 65534, a
read-only view of the system, a fresh tmpfs `/work` and `/tmp`, no network); rlimits set by
`prlimit` right before the program (CPU, address space, file size, open files, no core dumps);
and this parent, which enforces the wall clock, the output cap and cancellation, then kills
whatever is left in the groups and removes them. What this machine cannot provide is recorded
by `detect()` and shown in `protections`; the rest is still applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from consumers.execute.cgroups import CPUACCT, MEMORY, PIDS, CgroupTree, RunCgroup
from consumers.execute.limits import RunLimits, RunResult, SandboxError, Violation
from consumers.execute.output import Announcement, Lines, OutputBudget
from consumers.execute.violations import Evidence, classify, program_exit

log = logging.getLogger(__name__)

OnOutput = Callable[[str, bytes], Awaitable[None]]

SANDBOX_UID = 65534
WORK_DIR = "/work"
# Where a program may write files that outlive its run (`output_dir`), and the variable naming it.
OUTPUT_DIR = "/out"
OUTPUT_ENV = "STAGECAST_OUTPUT_DIR"
MIB = 1024 * 1024
# bubblewrap's monitor and the pid namespace's init count against pids.max beside the program.
BWRAP_PROCESSES = 2
NAMESPACE_FLAGS = (
    "--unshare-all",
    "--unshare-user",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--uid",
    str(SANDBOX_UID),
    "--gid",
    str(SANDBOX_UID),
    "--hostname",
    "sandbox",
)
# Read-only bits of /etc that programs need: the dynamic linker's cache, the alternatives that
# /usr/bin links through (cc, java, ...), certificates, name service order, the time zone.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/nsswitch.conf",
    "/etc/localtime",
)
# Made up for the sandbox rather than bound from the host, which would show its users and hosts.
ETC_DATA = {
    "/etc/passwd": b"nobody:x:65534:65534:nobody:/work:/usr/sbin/nologin\n",
    "/etc/group": b"nogroup:x:65534:\n",
    "/etc/hosts": b"127.0.0.1 localhost\n::1 localhost\n",
}
# A bind may not replace or live inside what the sandbox makes fresh for every run.
RESERVED = tuple(Path(p) for p in ("/", "/proc", "/dev", "/tmp", WORK_DIR))
RESERVED_TREES = tuple(Path(p) for p in ("/proc", "/dev"))
PATH = "/usr/local/bin:/usr/bin:/bin"

_READ_CHUNK = 64 * 1024
_STDERR_TAIL = 4096
_REAP_S = 5.0
_DRAIN_S = 2.0
_PROBE_S = 10.0
# Joins every run group (the files come before `--`), then execs the rest of its arguments.
_JOIN = """for procs do
  shift
  [ "$procs" = -- ] && break
  echo $$ >"$procs" || exit 125
done
exec "$@"
"""
# Runs last before prlimit and the program: prints the run's token on stderr, then execs.
_ANNOUNCE = 'printf "%s\\n" "$1" >&2 && shift && exec "$@"'


@dataclass(frozen=True, slots=True)
class _Request:
    """One run's program and what it gets, checked."""

    argv: list[str]
    files: list[tuple[str, bytes]]
    stdin: bytes
    limits: RunLimits
    binds: list[Path]
    env: Mapping[str, str]
    output_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class _Launch:
    argv: list[str]
    pass_fds: tuple[int, ...]
    cwd: str
    env: dict[str, str]


class Sandbox:
    """Runs programs with every protection this machine allows; `protections` says which."""

    def __init__(
        self,
        *,
        bwrap: Sequence[str] | None,
        cgroups: CgroupTree,
        prlimit: str | None,
        missing: Mapping[str, str],
    ) -> None:
        self._bwrap = list(bwrap) if bwrap is not None else None
        self._cgroups = cgroups
        self._prlimit = prlimit
        self._missing = dict(missing)

    @classmethod
    def detect(
        cls,
        *,
        require: bool = False,
        bwrap: str = "bwrap",
        cgroup_root: Path = Path("/sys/fs/cgroup"),
    ) -> Sandbox:
        """Find bubblewrap (and prove it starts a sandbox), writable cgroup v1 memory/pids/cpuacct
        and prlimit. With `require`, anything missing is an error that names it."""
        missing: dict[str, str] = {}
        found = shutil.which(bwrap)
        command: list[str] | None = None
        if found is None:
            missing["bubblewrap"] = f"{bwrap} not found (install the bubblewrap package)"
        else:
            command, problem = _probe_bwrap(found)
            if problem is not None:
                missing["bubblewrap"] = problem
        cgroups = CgroupTree.find(cgroup_root)
        for controller, why in cgroups.missing.items():
            missing[f"cgroup_{controller}"] = why
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            missing["rlimits"] = "prlimit not found (install util-linux)"
        if missing:
            why = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
            if require:
                raise SandboxError(f"the sandbox cannot confine programs here: {why}")
            log.warning("sandbox runs programs without some protections: %s", why)
        return cls(bwrap=command, cgroups=cgroups, prlimit=prlimit, missing=missing)

    @property
    def protections(self) -> dict[str, bool | str]:
        """What is in force for every run, as /ready and the worker's start-up log show it."""
        isolated = self._bwrap is not None
        return {
            "bubblewrap": isolated,
            "filesystem": "isolated" if isolated else "host",
            "network": "isolated" if isolated else "host",
            "cgroup_memory": MEMORY in self._cgroups.parents,
            "cgroup_pids": PIDS in self._cgroups.parents,
            "cgroup_cpuacct": CPUACCT in self._cgroups.parents,
            "rlimits": self._prlimit is not None,
            "uid": str(SANDBOX_UID) if isolated else str(os.getuid()),
        }

    @property
    def missing(self) -> dict[str, str]:
        """Each protection that is not in force, and why."""
        return dict(self._missing)

    @property
    def confined(self) -> bool:
        """Every protection is in force."""
        return not self._missing

    async def run(
        self,
        argv: Sequence[str],
        *,
        files: Mapping[str, bytes] = {},
        stdin: bytes = b"",
        limits: RunLimits,
        on_output: OnOutput,
        cancel: asyncio.Event | None = None,
        binds: Sequence[Path] = (),
        env: Mapping[str, str] = {},
        output_dir: Path | None = None,
    ) -> RunResult:
        """Run `argv` in a fresh work dir holding `files` (its cwd, `/work` inside), with `binds`
        (host paths) read-only at the same paths and `env` over a minimal environment.

        `on_output(stream, line)` gets each line as it arrives, in order per stream; while it is
        awaited that stream is not read, so a slow callback slows the program (its pipe fills)
        and that time counts against `wall_s`. A failing callback ends the run and its error
        propagates. Always reaps: when this returns or raises, nothing the program started is
        left running.
        """
        if not argv:
            raise ValueError("argv is empty")
        request = _Request(
            argv=list(argv),
            files=_placed_files(files),
            stdin=stdin,
            limits=limits,
            binds=[_checked_bind(path) for path in binds],
            env=env,
            output_dir=_checked_bind(output_dir) if output_dir is not None else None,
        )
        if cancel is not None and cancel.is_set():
            return RunResult(
                exit_code=None,
                signal=None,
                violation=Violation.CANCELLED,
                wall_s=0.0,
                cpu_s=0.0,
                peak_rss_kib=0,
                output_bytes=0,
                truncated=False,
            )
        overhead = BWRAP_PROCESSES if self._bwrap is not None else 0
        cgroup = self._cgroups.create(
            uuid.uuid4().hex[:16],
            memory_bytes=limits.memory_mib * MIB,
            pids=limits.processes + overhead,
        )
        try:
            with contextlib.ExitStack() as cleanup:
                return await self._run_in(request, cgroup, cleanup, on_output, cancel)
        finally:
            await cgroup.sweep()
            await cgroup.remove()

    async def _run_in(
        self,
        request: _Request,
        cgroup: RunCgroup,
        cleanup: contextlib.ExitStack,
        on_output: OnOutput,
        cancel: asyncio.Event | None,
    ) -> RunResult:
        limits = request.limits
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        child_fds = [out_w, err_w, _sealed_memfd("stdin", request.stdin)]
        token = f"stagecast-sandbox-started-{uuid.uuid4().hex}"
        try:
            launch = self._launch(request, cgroup, cleanup, token)
            child_fds += launch.pass_fds
            started_at = time.monotonic()
            # Popen, not asyncio's subprocess: it returns once exec has happened (vfork), and
            # leaves reaping to us (wait4 gives the resource usage asyncio would throw away).
            process = subprocess.Popen(  # noqa: ASYNC220
                launch.argv,
                stdin=child_fds[2],
                stdout=out_w,
                stderr=err_w,
                pass_fds=launch.pass_fds,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
        except BaseException as error:
            os.close(out_r)
            os.close(err_r)
            if isinstance(error, OSError):
                raise SandboxError(f"cannot start the sandboxed program: {error}") from error
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        exited = _exit_future(loop, process, cleanup)

        budget = OutputBudget(limits.output_bytes)
        capped = asyncio.Event()
        announcement = Announcement(token.encode())
        stdout, stderr = (_Stream(name, budget, capped, on_output) for name in ("stdout", "stderr"))
        pumps = [
            asyncio.create_task(_pump(stdout, out_r)),
            asyncio.create_task(_pump(stderr, err_r, announcement)),
        ]
        try:
            stopped_for = await _watch(exited, pumps, capped, cancel, started_at + limits.wall_s)
        except BaseException:
            for pump in pumps:
                pump.cancel()
            raise
        finally:
            status, usage, ended_at = await _stop(process, cgroup, exited)
        # Every writer of the pipes is dead when a pid namespace or the groups held them all;
        # without either, one that left our session may keep a pipe open for good.
        accounted = self._bwrap is not None or bool(cgroup.dirs)
        stderr_tail = await _drain(pumps, None if accounted else _DRAIN_S)
        if budget.exceeded and stopped_for is None:
            stopped_for = Violation.OUTPUT_LIMIT

        if stopped_for is None and not announcement.seen:
            said = stderr_tail.decode(errors="replace").strip()[-500:]
            raise SandboxError(f"the sandbox could not start the program: {said}")
        code, sig = program_exit(status, through_bwrap=self._bwrap is not None)
        stats = cgroup.stats()
        cpu_s = stats.cpu_s if stats.cpu_s is not None else usage.ru_utime + usage.ru_stime
        peak = stats.peak_bytes // 1024 if stats.peak_bytes is not None else usage.ru_maxrss
        evidence = Evidence(
            stopped_for=stopped_for,
            exit_code=code,
            signal=sig,
            cpu_s=cpu_s,
            cpu_limit_s=limits.cpu_s,
            oom_kills=stats.oom_kills,
            forks_refused=stats.forks_refused,
            stderr_tail=stderr_tail,
        )
        return RunResult(
            exit_code=code,
            signal=sig,
            violation=classify(evidence),
            wall_s=ended_at - started_at,
            cpu_s=cpu_s,
            peak_rss_kib=peak,
            output_bytes=budget.used,
            truncated=budget.exceeded,
        )

    def _launch(
        self, request: _Request, cgroup: RunCgroup, cleanup: contextlib.ExitStack, token: str
    ) -> _Launch:
        """The command line that joins the groups, enters the sandbox, announces the start,
        sets the rlimits, then runs argv."""
        env = dict(request.env)
        if request.output_dir is not None:
            # The one place a program may leave files behind (the train stage's artifacts);
            # RLIMIT_FSIZE bounds each file.
            env[OUTPUT_ENV] = OUTPUT_DIR if self._bwrap is not None else str(request.output_dir)
        rlimits = rlimit_argv(self._prlimit, request.limits) if self._prlimit is not None else []
        program = ["/bin/sh", "-c", _ANNOUNCE, "sh", token, *rlimits, *request.argv]
        procs = [str(path) for path in cgroup.procs_files]
        if self._bwrap is None:
            workdir = Path(tempfile.mkdtemp(prefix="stagecast-run-"))
            cleanup.callback(shutil.rmtree, workdir, True)
            for name, content in request.files:
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).write_bytes(content)
            return _Launch(
                argv=["/bin/sh", "-c", _JOIN, "sh", *procs, "--", *program],
                pass_fds=(),
                cwd=str(workdir),
                env=program_env(env, home=str(workdir)),
            )
        file_fds = [
            (_sealed_memfd(name, data), f"{WORK_DIR}/{name}") for name, data in request.files
        ]
        etc_fds = [(_sealed_memfd(path, data), path) for path, data in ETC_DATA.items()]
        sandbox = bubblewrap_argv(
            self._bwrap,
            etc_data=etc_fds,
            files=file_fds,
            binds=request.binds,
            writable=request.output_dir,
        )
        return _Launch(
            argv=["/bin/sh", "-c", _JOIN, "sh", *procs, "--", *sandbox, *program],
            pass_fds=tuple(fd for fd, _ in etc_fds + file_fds),
            cwd="/",
            env=program_env(env, home=WORK_DIR, tmp="/tmp"),
        )


def bubblewrap_argv(
    bwrap: Sequence[str],
    *,
    etc_data: Sequence[tuple[int, str]],
    files: Sequence[tuple[int, str]],
    binds: Sequence[Path],
    writable: Path | None = None,
) -> list[str]:
    """bubblewrap's command line up to the program: `bwrap` is the binary, its namespace flags
    and the system mounts (from `system_mounts`); file contents come in as fds."""
    command = list(bwrap)
    for fd, path in etc_data:
        command += ["--ro-bind-data", str(fd), path]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", WORK_DIR]
    for fd, path in files:
        command += ["--file", str(fd), path]
    for bind in binds:
        command += ["--ro-bind", str(bind), str(bind)]
    if writable is not None:
        command += ["--bind", str(writable), OUTPUT_DIR]
    return [*command, "--chdir", WORK_DIR, "--"]


def system_mounts(python_home: Path) -> list[str]:
    """Read-only binds of the system as this host lays it out: /usr, the top-level links or
    directories into it, the bits of /etc programs need, and the Python installation."""
    mounts = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            mounts += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            mounts += ["--ro-bind", top, top]
    for path in ETC_FILES:
        mounts += ["--ro-bind-try", path, path]
    if not python_home.is_relative_to("/usr"):
        mounts += ["--ro-bind", str(python_home), str(python_home)]
    return mounts


def rlimit_argv(prlimit: str, limits: RunLimits) -> list[str]:
    """prlimit's command line: the soft CPU limit sends SIGXCPU, the hard one a second later
    SIGKILL; no core files."""
    return [
        prlimit,
        f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
        f"--as={limits.address_space_mib * MIB}",
        f"--fsize={limits.file_mib * MIB}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
    ]


def program_env(extra: Mapping[str, str], *, home: str, tmp: str | None = None) -> dict[str, str]:
    """A minimal environment (nothing of the worker's leaks in), unbuffered Python for
    streaming, and the caller's `extra` on top."""
    env = {
        "PATH": PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "USER": "nobody",
        "LOGNAME": "nobody",
        "PYTHONUNBUFFERED": "1",
    }
    if tmp is not None:
        env["TMPDIR"] = tmp
    return env | dict(extra)


def _probe_bwrap(bwrap: str) -> tuple[list[str] | None, str | None]:
    """bubblewrap's namespace flags and system mounts if it can start `true` with them here,
    else why not."""
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=_PROBE_S)
        flags = [bwrap, *NAMESPACE_FLAGS]
        # Keeps programs from making user namespaces of their own (bubblewrap 0.8 and later).
        if "--disable-userns" in usage.stdout:
            flags.append("--disable-userns")
        command = [*flags, *system_mounts(Path(sys.base_prefix))]
        probe = subprocess.run(
            [*command, "--proc", "/proc", "--dev", "/dev", "--", "true"],
            capture_output=True,
            text=True,
            timeout=_PROBE_S,
            env=program_env({}, home="/"),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{bwrap} did not run: {error}"
    if probe.returncode != 0:
        return None, f"{bwrap} cannot make a sandbox here: {probe.stderr.strip()}"
    return command, None


async def _watch(
    exited: asyncio.Future[float],
    pumps: list[asyncio.Task[bytes]],
    capped: asyncio.Event,
    cancel: asyncio.Event | None,
    deadline: float,
) -> Violation | None:
    """Wait for the program to end, or for a reason to stop it: that reason, or None."""
    capped_wait = asyncio.ensure_future(capped.wait())
    cancel_wait = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    waiters: set[asyncio.Future[Any]] = {exited, capped_wait, *pumps}
    if cancel_wait is not None:
        waiters.add(cancel_wait)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Violation.TIME_LIMIT
            done, _ = await asyncio.wait(
                waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for pump in pumps:
                if pump in done:
                    pump.result()  # a failing on_output ends the run with its error
                    waiters.discard(pump)
            if cancel_wait in done:
                return Violation.CANCELLED
            if capped_wait in done:
                return Violation.OUTPUT_LIMIT
            if exited in done:
                return None
    finally:
        capped_wait.cancel()
        if cancel_wait is not None:
            cancel_wait.cancel()


async def _stop(
    process: subprocess.Popen[bytes], cgroup: RunCgroup, exited: asyncio.Future[float]
) -> tuple[int, resource.struct_rusage, float]:
    """Kill the session and everything in the run's groups, then reap the launcher: its wait
    status, its resource usage (for when there are no groups to count) and when it ended."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await cgroup.sweep()
    try:
        ended_at = await asyncio.wait_for(asyncio.shield(exited), _REAP_S)
    except TimeoutError as error:
        raise SandboxError(f"the sandbox's launcher survived SIGKILL for {_REAP_S} s") from error
    _, status, usage = os.wait4(process.pid, 0)  # noqa: ASYNC222 - it has exited: no wait
    process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
    return status, usage, ended_at


async def _drain(pumps: list[asyncio.Task[bytes]], grace_s: float | None) -> bytes:
    """The tail of stderr (the last pump) once both streams are delivered to their end, or
    what was delivered within `grace_s`."""
    _, pending = await asyncio.wait(pumps, timeout=grace_s)
    for pump in pending:
        pump.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # result() also raises what a failing on_output raised while the streams drained.
    tails = [b"" if pump in pending else pump.result() for pump in pumps]
    return tails[-1]


class _Stream:
    """One output stream of a run: cut into lines, counted against the budget both share."""

    def __init__(
        self, name: str, budget: OutputBudget, capped: asyncio.Event, on_output: OnOutput
    ) -> None:
        self._name = name
        self._budget = budget
        self._capped = capped
        self._on_output = on_output
        self._lines = Lines()
        self.tail = b""

    @property
    def exhausted(self) -> bool:
        """The budget both streams share is spent: read no more."""
        return self._budget.exceeded

    async def deliver(self, data: bytes) -> None:
        accepted = self._budget.take(data)
        if self._budget.exceeded:
            self._capped.set()
        self.tail = (self.tail + accepted)[-_STDERR_TAIL:]
        for line in self._lines.feed(accepted):
            await self._on_output(self._name, line)

    async def end(self) -> None:
        for line in self._lines.finish():
            await self._on_output(self._name, line)


async def _pump(stream: _Stream, fd: int, announcement: Announcement | None = None) -> bytes:
    """Deliver one pipe's lines until it ends or the budget runs out; the stream's tail.
    The pipe that carries the launcher's `announcement` has it taken out first."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while not stream.exhausted:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                break
            await stream.deliver(announcement.feed(chunk) if announcement is not None else chunk)
        if announcement is not None:
            await stream.deliver(announcement.finish())
        await stream.end()
    finally:
        transport.close()
    return stream.tail


def _placed_files(files: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    """The files with their names checked: relative paths that stay inside the work dir."""
    placed = []
    for name, content in files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or not path.parts or ".." in path.parts:
            raise ValueError(f"file name {name!r} must be a relative path inside the work dir")
        placed.append((str(path), content))
    return placed


def _checked_bind(path: Path) -> Path:
    """An absolute host path that exists and hides nothing the sandbox makes for itself."""
    if not path.is_absolute():
        raise ValueError(f"bind {path} must be an absolute path")
    normal = Path(os.path.normpath(path))
    if normal in RESERVED or any(normal.is_relative_to(tree) for tree in RESERVED_TREES):
        raise ValueError(f"bind {path} would hide what the sandbox provides")
    if not normal.exists():
        raise ValueError(f"bind {path} does not exist")
    return normal


def _sealed_memfd(name: str, data: bytes) -> int:
    """An in-memory file holding `data`, sealed read-only, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _exit_future(
    loop: asyncio.AbstractEventLoop, process: subprocess.Popen[bytes], cleanup: contextlib.ExitStack
) -> asyncio.Future[float]:
    """A future that gets the time the process ended, from a pidfd (no child watcher, and no
    wait: the process stays a zombie, its pid unreusable, until `_stop` reaps it)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError as error:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise SandboxError(f"cannot watch the sandboxed program: {error}") from error
    exited: asyncio.Future[float] = loop.create_future()

    def mark() -> None:
        if not exited.done():
            exited.set_result(time.monotonic())

    loop.add_reader(pidfd, mark)
    cleanup.callback(os.close, pidfd)
    cleanup.callback(loop.remove_reader, pidfd)
    return exited
