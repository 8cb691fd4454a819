"""What the execute stage's sandbox costs per run, and what a CODE job costs end to end.

Run: .venv/bin/python bench/execute.py. Times `print("hi")` through Sandbox.run and as a bare
subprocess of the same interpreter, alternating the two so that load from anything else on the
machine falls on both alike, then counts sequential runs per second of trivial programs.
Then, on an embedded stack (one worker): `print("hi")` as CODE jobs one at a time (the
execute stage's own duration, and POST /jobs to JobFinished on the feed), and trivial CODE
jobs per second with many clients at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from api.client import StagecastClient
from consumers.execute import RunLimits, Sandbox
from streams.launcher import Launcher
from streams.settings import Settings

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


STAGE_JOBS = 40
THROUGHPUT_JOBS = 100
CLIENTS = 8


async def code_job(client: StagecastClient) -> tuple[float, float]:
    """One print('hi') CODE job: (POST to JobFinished, the execute stage's own duration)."""
    started = time.perf_counter()
    accepted = await client.submit(kind="CODE", code="print('hi')")
    stage_ms = 0.0
    async for event in client.events(accepted["job_id"]):
        if event.type == "StageChanged" and event.data["status"] == "SUCCEEDED":
            stage_ms = float(event.data["duration_ms"])
        if event.type == "JobFinished":
            if event.data["status"] != "SUCCEEDED":
                raise RuntimeError(f"job ended {event.data['status']}: {event.data['error']}")
            break
    return time.perf_counter() - started, stage_ms / 1000


async def through_the_stage(api_url: str) -> None:
    async with StagecastClient(api_url) as client:
        await code_job(client)  # warm: connections, the worker's sandbox, the page cache
        end_to_end, stage = [], []
        outside = []
        for _ in range(STAGE_JOBS):
            total, own = await code_job(client)
            end_to_end.append(total)
            stage.append(own)
            outside.append(await timed(lambda: bare(HI)))
    print(f"print('hi') as {STAGE_JOBS} CODE jobs one at a time, one worker:")
    print(row("execute stage duration", stage))
    print(row("POST -> JobFinished", end_to_end))
    print(row("bare subprocess", outside))
    difference = percentile(stage, 0.5) - percentile(outside, 0.5)
    print(f"  {'stage - bare, p50':<24} {1000 * difference:6.1f} ms")

    queue = list(range(THROUGHPUT_JOBS))

    async def client_loop() -> None:
        async with StagecastClient(api_url) as client:
            while queue:
                queue.pop()
                await code_job(client)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    print(
        f"{THROUGHPUT_JOBS} trivial CODE jobs, {CLIENTS} clients, one worker: "
        f"{THROUGHPUT_JOBS / elapsed:.1f} jobs/s"
    )


def stack_figures() -> None:
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as state:
        launcher = Launcher(Settings(state_dir=Path(state), api_port=0))
        try:
            launcher.start()
            settings = json.dumps({"execute_concurrency": launcher.settings.execute_concurrency})
            print(f"\nembedded stack up (API {launcher.api_url}, {settings})")
            asyncio.run(through_the_stage(launcher.api_url))
        finally:
            launcher.stop()


if __name__ == "__main__":
    asyncio.run(main())
    stack_figures()
