"""What a running process is waiting on: every asyncio task's chain of awaits, logged on SIGUSR1.

A stuck asyncio process shows an idle event loop to a sampling profiler (py-spy sees threads,
not suspended coroutines); `kill -USR1 PID` writes where each task is suspended instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """`function (file:line)` for each coroutine the task awaits, outermost first, and what
    the innermost one waits for (a future, a sleep, an event)."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        if inspect.iscoroutine(awaited) or inspect.isgenerator(awaited):
            frame = awaited.cr_frame if inspect.iscoroutine(awaited) else awaited.gi_frame
            if frame is None:  # it has returned
                break
        else:
            # A future's iterator or another awaitable that is no coroutine: the chain's end.
            chain.append(type(awaited).__name__)
            break
        code = frame.f_code
        chain.append(f"{code.co_name} ({code.co_filename}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain


def log_tasks() -> None:
    """Log every task of the running loop with its chain of awaits."""
    tasks = asyncio.all_tasks()
    log.warning("%d asyncio tasks (SIGUSR1):", len(tasks))
    for task in sorted(tasks, key=lambda task: task.get_name()):
        log.warning("task %s: %s", task.get_name(), " -> ".join(await_chain(task)))


def dump_tasks_on_sigusr1() -> None:
    """From now on, SIGUSR1 logs the running loop's tasks (see log_tasks)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)
