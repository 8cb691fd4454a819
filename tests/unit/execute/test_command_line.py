"""The sandbox's command lines, built from plain values."""

from __future__ import annotations

from pathlib import Path

from consumers.execute.limits import RunLimits
from consumers.execute.sandbox import bubblewrap_argv, program_env, rlimit_argv, system_mounts


def test_binds_come_after_the_fresh_work_dir_so_they_show_inside_it() -> None:
    command = bubblewrap_argv(
        ["bwrap", "--unshare-all"],
        etc_data=[(7, "/etc/passwd")],
        files=[(8, "/work/main.py")],
        binds=[Path("/work/project/.venv")],
    )
    assert command[:2] == ["bwrap", "--unshare-all"]
    work = command.index("/work")
    assert command[work - 1] == "--tmpfs"
    assert command.index("--file") > work
    assert command.index("--ro-bind") > work
    assert command[command.index("--ro-bind") :][:3] == ["--ro-bind"] + ["/work/project/.venv"] * 2
    assert command[command.index("--ro-bind-data") :][:3] == ["--ro-bind-data", "7", "/etc/passwd"]
    assert command[-3:] == ["--chdir", "/work", "--"]


def test_system_mounts_are_read_only_and_never_the_host_root() -> None:
    mounts = system_mounts(Path("/opt/python"))
    assert "--bind" not in mounts
    sources = [mounts[i + 1] for i, arg in enumerate(mounts) if arg.startswith("--ro-bind")]
    assert "/" not in sources
    assert "/root" not in sources
    assert {"/usr", "/etc/ld.so.cache", "/opt/python"} <= set(sources)
    assert "/usr/lib/python3" not in system_mounts(Path("/usr/lib/python3"))


def test_rlimits_give_a_second_between_sigxcpu_and_sigkill() -> None:
    limits = RunLimits(cpu_s=3, address_space_mib=100, file_mib=2, open_files=16)
    assert rlimit_argv("/usr/bin/prlimit", limits) == [
        "/usr/bin/prlimit",
        "--cpu=3:4",
        f"--as={100 * 1024 * 1024}",
        f"--fsize={2 * 1024 * 1024}",
        "--nofile=16",
        "--core=0",
        "--",
    ]


def test_the_environment_is_minimal_and_the_callers_comes_on_top() -> None:
    env = program_env({"PYTHONPATH": "/src", "HOME": "/elsewhere"}, home="/work", tmp="/tmp")
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/elsewhere",
        "LANG": "C.UTF-8",
        "USER": "nobody",
        "LOGNAME": "nobody",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": "/tmp",
        "PYTHONPATH": "/src",
    }
