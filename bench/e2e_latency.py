"""End-to-end latency and throughput of compile jobs (parse+compile+codegen) on the embedded stack.

Prints, for each concurrency level, the time from POST /jobs to JobFinished on the job's SSE
feed (p50/p95/p99) and the sustained jobs/s: one worker process, one projector, one API, the
broker, PostgreSQL and this client all share the machine; then the CPU milliseconds each of
them spent per job at that level (from /proc, bench/cpu.py). First, the worker alone: N
requests produced straight into Kafka, timed until N JobFinished are on the events topic.
With --profile DIR, py-spy samples the API, the worker and the projector during the last level
and writes one collapsed-stack file per process there (flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cpu import tree_cpu

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


# The processes whose CPU is shown per job, in the order of the columns.
MEASURED = ("api", "worker", "projector", "database", "broker", "client")


def processes(launcher: Launcher) -> dict[str, int]:
    """The pid of each measured process; the client is this one."""
    assert launcher.database is not None and launcher.database.pid is not None
    assert launcher.broker is not None and launcher.broker.pid is not None
    return {
        **{name: launcher.children[name].pid for name in ("api", "worker", "projector")},
        "database": launcher.database.pid,
        "broker": launcher.broker.pid,
    }


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each measured process (tree_cpu counts PostgreSQL's backends)."""
    return {**{name: tree_cpu(pid) for name, pid in pids.items()}, "client": time.process_time()}


@contextmanager
def profiled(pids: dict[str, int], into: Path | None) -> Iterator[None]:
    """py-spy sampling the API, worker and projector while the block runs (when `into` is set)."""
    if into is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    into.mkdir(parents=True, exist_ok=True)
    samplers = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pids[name]),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "--output",
                str(into / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("api", "worker", "projector")
    ]
    try:
        yield
    finally:
        for sampler in samplers:
            # py-spy writes its file when interrupted.
            sampler.send_signal(signal.SIGINT)
        for sampler in samplers:
            sampler.wait(timeout=30)
    print(f"py-spy collapsed stacks of api, worker and projector in {into}", flush=True)


async def measure(launcher: Launcher, levels: list[int], jobs: int, profile: Path | None) -> None:
    api_url = launcher.api_url
    pids = processes(launcher)
    await level(api_url, 4, 20)  # warm-up: connections and caches hot
    print()
    print(
        f"{'concurrency':>11} {'jobs':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'mean ms':>8} {'jobs/s':>8}   CPU ms per job: "
        + " ".join(f"{name:>9}" for name in MEASURED)
    )
    for index, concurrency in enumerate(levels):
        with profiled(pids, profile if index == len(levels) - 1 else None):
            before = cpu_seconds(pids)
            latencies, wall = await level(api_url, concurrency, jobs)
            after = cpu_seconds(pids)
        ms = [value * 1000 for value in latencies]
        per_job = {name: (after[name] - before[name]) * 1000 / len(ms) for name in MEASURED}
        print(
            f"{concurrency:>11} {len(ms):>6} {percentile(ms, 0.50):>8.1f} "
            f"{percentile(ms, 0.95):>8.1f} {percentile(ms, 0.99):>8.1f} "
            f"{statistics.fmean(ms):>8.1f} {len(ms) / wall:>8.1f}   {'':>15} "
            + " ".join(f"{per_job[name]:>9.2f}" for name in MEASURED),
            flush=True,
        )


async def worker_throughput(settings: Settings, jobs: int) -> None:
    """Requests produced straight into Kafka; the clock stops at the last JobFinished."""
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
        wall = time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()
    print(
        f"worker alone: {jobs} requests produced into Kafka -> {jobs} JobFinished "
        f"in {wall:.2f}s = {jobs / wall:.1f} jobs/s (one worker process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per concurrency level")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16, 32])
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy collapsed stacks of api, worker and projector here (last level)",
    )
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
            asyncio.run(measure(launcher, args.levels, args.jobs, args.profile))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
