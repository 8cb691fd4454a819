"""The execute stage's sandbox against hostile programs: real bubblewrap, cgroups and processes.

Every test ends with nothing left behind (no run cgroup, no process carrying the test's marker),
and each hostile program is followed by a normal one, which must still run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumers.execute import RunLimits, RunResult, Sandbox, SandboxError, Violation

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
# The interpreter itself, not the venv's link to it: the sandbox binds the installation only.
PYTHON = os.path.realpath(sys.executable)
MARKER = f"stagecast-sandbox-test-{uuid.uuid4().hex}"
LIMITS = RunLimits()
CONTROLLERS = ("memory", "pids", "cpuacct")


@dataclass
class Output:
    """What on_output received, with when each line arrived."""

    lines: list[tuple[str, bytes, float]] = field(default_factory=list)

    async def __call__(self, stream: str, line: bytes) -> None:
        self.lines.append((stream, line, time.monotonic()))

    def of(self, stream: str) -> list[bytes]:
        return [line for name, line, _ in self.lines if name == stream]

    @property
    def text(self) -> str:
        return "\n".join(line.decode() for line in self.of("stdout"))


def python(code: str) -> list[str]:
    """argv running `code`; the marker rides along so a leftover process can be found."""
    return [PYTHON, "-c", code, MARKER]


def shell(script: str) -> list[str]:
    return ["/bin/sh", "-c", script, MARKER]


def read_or_nothing(path: Path) -> str:
    """A cgroup file's text; empty when its group went away meanwhile (another run ended)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def run_groups() -> set[Path]:
    """Run cgroups that exist now under `stagecast/` in this process's own groups."""
    groups: set[Path] = set()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in set(controllers.split(",")) & set(CONTROLLERS):
            parent = Path("/sys/fs/cgroup", controller, path.lstrip("/"), "stagecast")
            if parent.is_dir():
                groups.update(child for child in parent.iterdir() if child.is_dir())
    return groups


def marked_processes() -> list[int]:
    """Pids whose command line carries this test run's marker (what `pgrep -f` would find)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARKER.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def on_the_host(paths: list[Path]) -> list[str]:
    """The paths that exist here, outside the sandbox."""
    return [str(path) for path in paths if path.exists()]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox.detect(require=True)


@pytest.fixture(autouse=True)
def leaves_nothing_behind() -> Iterator[None]:
    before = run_groups()
    yield
    assert run_groups() == before
    assert marked_processes() == []


async def run(
    sandbox: Sandbox,
    argv: list[str],
    limits: RunLimits = LIMITS,
    *,
    files: Mapping[str, bytes] = {},
    stdin: bytes = b"",
    cancel: asyncio.Event | None = None,
    binds: Sequence[Path] = (),
) -> tuple[RunResult, Output]:
    output = Output()
    result = await sandbox.run(
        argv, files=files, stdin=stdin, limits=limits, on_output=output, cancel=cancel, binds=binds
    )
    return result, output


def limits_table(text: str) -> dict[str, list[str]]:
    """/proc/self/limits (printed with '|' for newlines): soft and hard limit by name."""
    rows = {row[:26].strip(): row[26:].split() for row in text.split("|") if row}
    return {name: values[:2] for name, values in rows.items()}


async def assert_still_runs(sandbox: Sandbox) -> None:
    result, output = await run(sandbox, python("print('still here')"))
    assert (result.exit_code, result.violation) == (0, None)
    assert output.of("stdout") == [b"still here"]


async def test_detect_finds_every_protection_on_this_machine(sandbox: Sandbox) -> None:
    assert sandbox.confined
    assert sandbox.missing == {}
    assert sandbox.protections == {
        "bubblewrap": True,
        "filesystem": "isolated",
        "network": "isolated",
        "cgroup_memory": True,
        "cgroup_pids": True,
        "cgroup_cpuacct": True,
        "rlimits": True,
        "uid": "65534",
    }


async def test_a_program_runs_and_its_exit_code_is_kept(sandbox: Sandbox) -> None:
    result, output = await run(
        sandbox,
        python(
            "import os, sys; print('out', os.getuid()); print('err', file=sys.stderr); sys.exit(3)"
        ),
    )
    assert (result.exit_code, result.signal, result.violation) == (3, None, None)
    assert output.of("stdout") == [b"out 65534"]
    assert output.of("stderr") == [b"err"]
    assert result.output_bytes == len(b"out 65534\nerr\n")
    assert not result.truncated
    assert result.cpu_s > 0
    assert result.peak_rss_kib > 0


async def test_a_fork_bomb_stops_at_the_process_limit(sandbox: Sandbox) -> None:
    bomb = "import os\nwhile True:\n    os.fork()"
    result, _ = await run(sandbox, python(bomb), RunLimits(processes=16, wall_s=20))
    assert result.violation == Violation.PROCESS_LIMIT
    assert result.wall_s < 20
    await assert_still_runs(sandbox)


async def test_touching_10_gb_is_killed_at_the_cgroup_memory_limit(sandbox: Sandbox) -> None:
    # Address space large enough that only the cgroup can stop it.
    limits = RunLimits(memory_mib=256, address_space_mib=64 * 1024)
    touch = "b = bytearray(10 * 1024**3)\nfor i in range(0, len(b), 4096):\n    b[i] = 1"
    result, _ = await run(sandbox, python(touch), limits)
    assert (result.violation, result.signal) == (Violation.MEMORY_LIMIT, signal.SIGKILL)
    assert result.peak_rss_kib == 256 * 1024
    await assert_still_runs(sandbox)


async def test_a_10_gb_allocation_fails_under_the_address_space_limit(sandbox: Sandbox) -> None:
    result, output = await run(sandbox, python("b = b'x' * (10 * 1024**3)"))
    assert (result.violation, result.exit_code) == (Violation.MEMORY_LIMIT, 1)
    assert output.of("stderr")[-1] == b"MemoryError"
    await assert_still_runs(sandbox)


async def test_a_busy_loop_stops_at_the_cpu_limit(sandbox: Sandbox) -> None:
    result, _ = await run(sandbox, python("while True: pass"), RunLimits(cpu_s=1, wall_s=20))
    assert (result.violation, result.signal) == (Violation.CPU_LIMIT, signal.SIGXCPU)
    # The kernel checks RLIMIT_CPU against tick-sampled time; cpuacct counts exact run time,
    # which on a loaded machine can come out a little lower.
    assert 0.5 <= result.cpu_s < 2.5
    assert result.wall_s < 10
    await assert_still_runs(sandbox)


async def test_sleeping_forever_stops_at_the_wall_clock(sandbox: Sandbox) -> None:
    result, _ = await run(sandbox, python("import time; time.sleep(10**6)"), RunLimits(wall_s=1))
    assert (result.violation, result.signal) == (Violation.TIME_LIMIT, signal.SIGKILL)
    assert 1.0 <= result.wall_s < 2.5
    await assert_still_runs(sandbox)


async def test_a_gigabyte_of_output_is_cut_at_the_cap(sandbox: Sandbox) -> None:
    flood = "import sys\nfor _ in range(1 << 20):\n    sys.stdout.write('x' * 1023 + '\\n')"
    result, output = await run(sandbox, python(flood), RunLimits(output_kib=1024))
    assert result.violation == Violation.OUTPUT_LIMIT
    assert result.truncated
    assert result.output_bytes == 1024 * 1024
    delivered = sum(len(line) + 1 for line in output.of("stdout"))
    assert 1024 * 1024 - 1024 <= delivered <= 1024 * 1024 + 1
    assert result.wall_s < 5
    await assert_still_runs(sandbox)


@pytest.mark.parametrize(
    ("argv", "exit_code", "signal_number"),
    [
        # Python ignores SIGXFSZ, so its write fails with EFBIG "File too large".
        (
            python("f = open('big', 'wb')\nfor _ in range(2048):\n    f.write(b'x' * (1 << 20))"),
            1,
            None,
        ),
        # dd keeps SIGXFSZ's default action and dies of it.
        (shell("dd if=/dev/zero of=big bs=1M count=2048"), None, signal.SIGXFSZ),
    ],
    ids=["python", "dd"],
)
async def test_writing_a_2_gb_file_stops_at_the_file_size_limit(
    sandbox: Sandbox, argv: list[str], exit_code: int | None, signal_number: int | None
) -> None:
    result, _ = await run(sandbox, argv, RunLimits(file_mib=8))
    assert (result.violation, result.exit_code, result.signal) == (
        Violation.OUTPUT_LIMIT,
        exit_code,
        signal_number,
    )
    await assert_still_runs(sandbox)


async def test_a_connection_to_a_host_loopback_port_never_arrives(sandbox: Sandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connect = (
            "import socket, sys\n"
            f"print([name for _, name in socket.if_nameindex()])\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "except OSError as error:\n"
            "    print('failed', error.errno)\n"
            "    sys.exit(3)\n"
            "print('connected')\n"
        )
        result, output = await run(sandbox, python(connect))
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.exit_code == 3
    assert output.of("stdout")[0] == b"['lo']"
    assert output.of("stdout")[1].startswith(b"failed")
    await assert_still_runs(sandbox)


async def test_host_files_outside_the_binds_are_out_of_sight(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    look = (
        "import json, os, sys\n"
        "paths = sys.argv[2:]\n"
        "print(json.dumps({p: os.path.exists(p) for p in paths}))\n"
        "print(json.dumps(sorted(os.listdir('/root'))))\n"
    )
    hidden = on_the_host(
        [
            secret,
            PROJECT / "README.md",
            PROJECT / ".stagecast",
            Path("/etc/shadow"),
            Path("/root/.bashrc"),
        ]
    )
    assert {str(secret), str(PROJECT / "README.md")} <= set(hidden)
    venv = Path(sys.prefix)
    result, output = await run(sandbox, [*python(look), *hidden], binds=[venv])
    assert result.exit_code == 0
    seen, root = (json.loads(line) for line in output.of("stdout"))
    assert seen == dict.fromkeys(hidden, False)
    # Only the path down to the Python installation, never the rest of /root.
    base = Path(sys.base_prefix)
    expected = [base.relative_to("/root").parts[0]] if base.is_relative_to("/root") else []
    assert root == expected
    assert sorted(os.listdir("/root")) != expected
    await assert_still_runs(sandbox)


async def test_killing_its_parent_and_init_still_ends_with_a_result(sandbox: Sandbox) -> None:
    rampage = (
        "import os, signal\n"
        "for target in (os.getppid(), 1, -1):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError as error:\n"
        "        print('refused', target, error.errno)\n"
        "print('alive', os.getppid())\n"
    )
    result, output = await run(sandbox, python(rampage), RunLimits(wall_s=5))
    # Its parent is the pid namespace's init, which ignores signals from inside.
    assert (result.exit_code, result.violation) == (0, None)
    assert output.of("stdout")[-1] == b"alive 1"
    assert result.wall_s < 5
    await assert_still_runs(sandbox)


async def test_lines_arrive_in_order_while_the_program_runs(sandbox: Sandbox) -> None:
    talk = "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second', flush=True)"
    result, output = await run(sandbox, python(talk))
    ended = time.monotonic()
    assert output.of("stdout") == [b"first", b"second"]
    first_at = output.lines[0][2]
    assert ended - first_at >= 0.9
    assert result.exit_code == 0


async def test_a_slow_consumer_still_gets_every_line_after_the_program_ends(
    sandbox: Sandbox,
) -> None:
    delivered: list[bytes] = []

    async def slow(stream: str, line: bytes) -> None:
        await asyncio.sleep(0.02)
        delivered.append(line)

    code = "for i in range(150):\n    print(i)"
    result = await sandbox.run(python(code), limits=RunLimits(wall_s=30), on_output=slow)
    assert result.exit_code == 0
    assert delivered == [str(i).encode() for i in range(150)]


async def test_long_lines_are_split_and_a_partial_last_line_is_kept(sandbox: Sandbox) -> None:
    result, output = await run(
        sandbox, python("import sys; sys.stdout.write('a' * 40000 + '\\n' + 'tail')")
    )
    assert [len(line) for line in output.of("stdout")] == [16384, 16384, 7232, 4]
    assert output.of("stdout")[-1] == b"tail"
    assert result.output_bytes == 40005


async def test_stdin_is_delivered(sandbox: Sandbox) -> None:
    result, output = await run(
        sandbox, python("import sys; print(sys.stdin.read().upper())"), stdin=b"hello\nworld"
    )
    assert output.of("stdout") == [b"HELLO", b"WORLD"]
    assert result.exit_code == 0


async def test_files_are_written_into_the_work_dir(sandbox: Sandbox) -> None:
    files = {"main.py": b"import helper.say\n", "helper/say.py": b"print('said')\n"}
    result, output = await run(sandbox, [PYTHON, "main.py", MARKER], files=files)
    assert (result.exit_code, output.of("stdout")) == (0, [b"said"])


async def test_cancel_kills_the_program_within_2_s(sandbox: Sandbox) -> None:
    cancel, up = asyncio.Event(), asyncio.Event()

    async def note(stream: str, line: bytes) -> None:
        up.set()

    running = asyncio.create_task(
        sandbox.run(
            python("import time\nprint('up', flush=True)\ntime.sleep(10**6)"),
            limits=RunLimits(wall_s=60),
            on_output=note,
            cancel=cancel,
        )
    )
    await up.wait()
    assert marked_processes() != []  # what leaves_nothing_behind looks for is findable
    cancel.set()
    asked = time.monotonic()
    result = await running
    assert time.monotonic() - asked < 2.0
    assert (result.violation, result.signal) == (Violation.CANCELLED, signal.SIGKILL)
    await assert_still_runs(sandbox)


async def test_a_run_cancelled_before_it_starts_never_starts(sandbox: Sandbox) -> None:
    cancel = asyncio.Event()
    cancel.set()
    result, output = await run(sandbox, python("print('started')"), cancel=cancel)
    assert (result.violation, result.wall_s, output.lines) == (Violation.CANCELLED, 0.0, [])


async def test_a_failing_callback_ends_the_run_and_raises(sandbox: Sandbox) -> None:
    async def refuse(stream: str, line: bytes) -> None:
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError, match="broker gone"):
        await sandbox.run(
            python("import time\nprint('up', flush=True)\ntime.sleep(10**6)"),
            limits=RunLimits(wall_s=60),
            on_output=refuse,
        )
    await assert_still_runs(sandbox)


async def test_c_compiles_and_runs_inside(sandbox: Sandbox) -> None:
    source = b'#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n'
    result, output = await run(
        sandbox, shell("gcc -O1 -o hello hello.c && ./hello"), files={"hello.c": source}
    )
    assert (result.exit_code, output.text) == (0, "hello from C")


async def test_javascript_runs_inside(sandbox: Sandbox) -> None:
    script = b"console.log('hello from', typeof process.version)\n"
    result, output = await run(sandbox, ["node", "main.js", MARKER], files={"main.js": script})
    assert (result.exit_code, output.text) == (0, "hello from string")


async def test_the_project_venv_imports_numpy_when_bound(sandbox: Sandbox) -> None:
    code = "import numpy, sys; print(sys.prefix, int(numpy.arange(4).sum()))"
    result, output = await run(
        sandbox, [sys.executable, "-c", code, MARKER], binds=[Path(sys.prefix)]
    )
    assert (result.exit_code, output.text) == (0, f"{sys.prefix} 6")


async def test_limits_are_in_force_inside_and_in_the_run_cgroup(sandbox: Sandbox) -> None:
    limits = RunLimits(cpu_s=7, memory_mib=300, processes=9, file_mib=5, open_files=40)
    seen: dict[str, str] = {}

    async def look_at_groups(stream: str, line: bytes) -> None:
        # While the program runs: one run group per controller holds it, with its limits
        # (other runs on this machine, a worker's, may have groups of their own meanwhile).
        mine = str(300 * 1024 * 1024)
        (memory,) = {
            g
            for g in run_groups()
            if "/memory/" in str(g) and read_or_nothing(g / "memory.limit_in_bytes") == mine
        }
        (pids,) = {
            g
            for g in run_groups()
            if "/pids/" in str(g) and read_or_nothing(g / "pids.max") == str(9 + 2)
        }
        seen["memory"] = (memory / "memory.limit_in_bytes").read_text().strip()
        seen["pids"] = (pids / "pids.max").read_text().strip()
        seen["members"] = (pids / "cgroup.procs").read_text().strip()
        seen[stream] = line.decode()

    # It stays a moment after its line: the groups are read while it is still a member.
    code = (
        "import time; print(open('/proc/self/limits').read().replace('\\n', '|'), flush=True); "
        "time.sleep(1)"
    )
    result = await sandbox.run(python(code), limits=limits, on_output=look_at_groups)
    assert result.exit_code == 0
    assert seen["memory"] == str(300 * 1024 * 1024)
    assert seen["pids"] == str(9 + 2)  # bubblewrap's monitor and init besides the program
    assert seen["members"]
    rows = limits_table(seen["stdout"])
    assert rows["Max cpu time"] == ["7", "8"]
    assert rows["Max file size"] == [str(5 * 1024 * 1024)] * 2
    assert rows["Max open files"] == ["40", "40"]
    assert rows["Max core file size"] == ["0", "0"]
    assert rows["Max address space"] == [str(8192 * 1024 * 1024)] * 2


async def test_a_sandbox_that_cannot_be_set_up_is_an_error(sandbox: Sandbox) -> None:
    # A file where a directory has to go: bubblewrap fails before the program exists.
    with pytest.raises(SandboxError, match="could not start the program: bwrap: "):
        await run(sandbox, python("print('never')"), files={"x": b"", "x/y": b""})
    await assert_still_runs(sandbox)


async def test_file_names_and_binds_are_checked(sandbox: Sandbox) -> None:
    for files in ({"../escape": b""}, {"/etc/passwd": b""}):
        with pytest.raises(ValueError, match="relative path"):
            await run(sandbox, python("pass"), files=files)
    for bind in (Path("/"), Path("/work"), Path("/proc/1"), Path("/no/such/dir")):
        with pytest.raises(ValueError, match="bind"):
            await run(sandbox, python("pass"), binds=[bind])


async def test_without_bubblewrap_and_cgroups_the_sandbox_says_so_and_still_limits(
    tmp_path: Path,
) -> None:
    with pytest.raises(SandboxError, match=r"bubblewrap.*cgroup_memory.*cgroup_pids"):
        Sandbox.detect(require=True, bwrap="/nonexistent/bwrap", cgroup_root=tmp_path)
    bare = Sandbox.detect(bwrap="/nonexistent/bwrap", cgroup_root=tmp_path)
    assert not bare.confined
    assert bare.protections == {
        "bubblewrap": False,
        "filesystem": "host",
        "network": "host",
        "cgroup_memory": False,
        "cgroup_pids": False,
        "cgroup_cpuacct": False,
        "rlimits": True,
        "uid": str(os.getuid()),
    }
    assert set(bare.missing) == {"bubblewrap", "cgroup_memory", "cgroup_pids", "cgroup_cpuacct"}

    code = "print(open('/proc/self/limits').read().replace('\\n', '|'))"
    result, output = await run(bare, python(code), RunLimits(cpu_s=3, open_files=50))
    assert result.exit_code == 0
    rows = limits_table(output.text)
    assert (rows["Max cpu time"], rows["Max open files"]) == (["3", "4"], ["50", "50"])
    result, _ = await run(bare, python("import time; time.sleep(10**6)"), RunLimits(wall_s=1))
    assert result.violation == Violation.TIME_LIMIT
    result, _ = await run(bare, python("while True: print('x' * 99)"), RunLimits(output_kib=64))
    assert (result.violation, result.output_bytes) == (Violation.OUTPUT_LIMIT, 64 * 1024)
