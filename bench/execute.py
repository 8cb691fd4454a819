"""What the execute stage's sandbox costs per run.

Run: .venv/bin/python bench/execute.py. Times `print("hi")` through Sandbox.run and as a bare
subprocess of the same interpreter, alternating the two so that load from anything else on the
machine falls on both alike, then counts sequential runs per second of trivial programs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from consumers.execute import RunLimits, Sandbox

PYTHON = os.path.realpath(sys.executable)
HI = [PYTHON, "-c", "print('hi')"]
PAIRS = 60
SEQUENTIAL = 100
LIMITS = RunLimits()


async def ignore(stream: str, line: bytes) -> None:
    """An on_output that drops the lines: the bench measures the sandbox, not a consumer."""


async def bare(argv: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await process.communicate()


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def row(name: str, samples: list[float]) -> str:
    p50, p95 = (percentile(samples, share) * 1000 for share in (0.5, 0.95))
    return f"  {name:<24} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms"


async def main() -> None:
    sandbox = Sandbox.detect()
    print("protections:", sandbox.protections, "confined" if sandbox.confined else "NOT confined")

    async def contained(argv: list[str]) -> None:
        await sandbox.run(argv, limits=LIMITS, on_output=ignore)

    await contained(HI)  # warm the page cache for both
    await bare(HI)
    inside, outside = [], []
    for _ in range(PAIRS):
        inside.append(await timed(lambda: contained(HI)))
        outside.append(await timed(lambda: bare(HI)))
    overhead = [a - b for a, b in zip(inside, outside, strict=True)]
    print(f"print('hi') with {PYTHON}, {PAIRS} alternating pairs:")
    print(row("Sandbox.run", inside))
    print(row("bare subprocess", outside))
    print(row("overhead (paired)", overhead))
    difference = percentile(inside, 0.5) - percentile(outside, 0.5)
    print(f"  {'overhead p50 - p50':<24} {1000 * difference:6.1f} ms")
    print(f"  {'overhead mean (paired)':<24} {1000 * statistics.fmean(overhead):6.1f} ms")

    print(f"sequential runs, {SEQUENTIAL} each:")
    for name, argv in (("/bin/true", ["/bin/true"]), ("python print('hi')", HI)):
        started = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await contained(argv)
        elapsed = time.perf_counter() - started
        mean_ms = 1000 * elapsed / SEQUENTIAL
        print(f"  {name:<24} {SEQUENTIAL / elapsed:6.1f} runs/s   mean {mean_ms:6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
