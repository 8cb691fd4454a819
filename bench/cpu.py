"""CPU seconds of the stack's processes, read from /proc: what each side of a bench spent."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, of its children it reaped, and of those alive (PostgreSQL's
    backends: a closed connection's backend is reaped, so its time moves, never vanishes)."""

    def stat(of: int) -> list[str]:
        # After the command's closing parenthesis: state, ppid, ..., utime at 11, cstime at 14.
        return Path(f"/proc/{of}/stat").read_text().rsplit(")", 1)[1].split()

    own = stat(pid)
    ticks = sum(int(value) for value in own[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        try:
            child = stat(int(entry.name))
        except OSError:
            continue
        if int(child[1]) == pid:
            ticks += int(child[11]) + int(child[12])
    return ticks / CLOCK_TICKS
