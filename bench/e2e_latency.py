"""End-to-end latency and throughput of compile jobs (parse+compile+codegen) on the embedded stack.

Prints, for each concurrency level, the time from POST /jobs to JobFinished on the job's SSE
feed (p50/p95/p99) and the sustained jobs/s. One worker process, one projector, one API.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from api.client import StagecastClient
from streams.launcher import Launcher
from streams.settings import Settings

DSL = (Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.neural").read_text()


async def one_job(client: StagecastClient) -> float:
    started = time.perf_counter()
    accepted = await client.submit(DSL)
    async for event in client.events(accepted["job_id"]):
        if event.type == "JobFinished":
            if event.data["status"] != "SUCCEEDED":
                raise RuntimeError(f"job {accepted['job_id']} ended {event.data['status']}")
            break
    return time.perf_counter() - started


async def level(api_url: str, concurrency: int, jobs: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)

    async def client_loop() -> None:
        async with StagecastClient(api_url) as client:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                latencies.append(await one_job(client))

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(api_url: str, levels: list[int], jobs: int) -> None:
    await level(api_url, 4, 20)  # warm-up: group joined, connections and caches hot
    print(
        f"{'concurrency':>11} {'jobs':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'mean ms':>8} {'jobs/s':>8}"
    )
    for concurrency in levels:
        latencies, wall = await level(api_url, concurrency, jobs)
        ms = [value * 1000 for value in latencies]
        print(
            f"{concurrency:>11} {len(ms):>6} {percentile(ms, 0.50):>8.1f} "
            f"{percentile(ms, 0.95):>8.1f} {percentile(ms, 0.99):>8.1f} "
            f"{statistics.fmean(ms):>8.1f} {len(ms) / wall:>8.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per concurrency level")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as state:
        launcher = Launcher(Settings(state_dir=Path(state), api_port=0))
        try:
            launcher.start()
            print(
                f"embedded stack up (API {launcher.api_url}); {args.jobs} digits_cnn "
                "compile jobs per level\n"
            )
            asyncio.run(measure(launcher.api_url, args.levels, args.jobs))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
