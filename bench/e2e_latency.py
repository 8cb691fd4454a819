"""End-to-end latency and throughput of compile jobs (parse+compile+codegen) on the embedded stack.

Prints, for each concurrency level, the time from POST /jobs to JobFinished on the job's SSE
feed (p50/p95/p99) and the sustained jobs/s: one worker process, one projector, one API, the
broker, PostgreSQL and this client all share the machine. First, the worker alone: N requests
produced straight into Kafka, timed until N JobFinished are on the events topic.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api.client import StagecastClient
from api.jobs import job_requested
from api.models import JobSubmission
from schemas.codec import default_codec
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
    await level(api_url, 4, 20)  # warm-up: connections and caches hot
    print()
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


async def kafka_jobs_wall(settings: Settings, jobs: int) -> float:
    """Seconds from producing `jobs` requests straight into Kafka to their last JobFinished."""
    codec = default_codec()
    values = [
        codec.encode("JobRequested", job_requested(JobSubmission(dsl=DSL), "bench", "bench"))
        for _ in range(jobs)
    ]
    consumer = AIOKafkaConsumer(
        settings.topics.events,
        bootstrap_servers=settings.require_kafka(),
        auto_offset_reset="latest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka(), linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        for value in values:
            await producer.send(settings.topics.requests, value)
        await producer.flush()
        finished = 0
        while finished < jobs:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event_type, _ = codec.decode(record.value)
                    finished += event_type == "JobFinished"
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def worker_throughput(settings: Settings, jobs: int) -> None:
    """Requests produced straight into Kafka; the clock stops at the last JobFinished."""
    wall = await kafka_jobs_wall(settings, jobs)
    print(
        f"worker alone: {jobs} requests produced into Kafka -> {jobs} JobFinished "
        f"in {wall:.2f}s = {jobs / wall:.1f} jobs/s (one worker process)"
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
            asyncio.run(worker_throughput(launcher.settings, args.jobs * 5))
            asyncio.run(measure(launcher.api_url, args.levels, args.jobs))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
