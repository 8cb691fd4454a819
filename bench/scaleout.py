"""Compile-job throughput (parse+compile+codegen of digits_cnn) with 1, 2 and 3 worker processes
in one consumer group, on the embedded stack, with the CPU each process used.

For each worker count a fresh stack (`stagecast up --workers N`, six partitions per topic)
runs two phases, timed as bench/e2e_latency.py times them: requests produced straight into
Kafka until the last JobFinished is on the events topic (the workers alone), then jobs through
the HTTP API at one concurrency, each followed to its JobFinished on its SSE feed. Every
process of the stack and this client share the machine's cores, so on a small machine more
workers mostly compete with the projector, the API and the broker for the same CPU: the
table says how much CPU each process used per job, which is where the time went ("client" is
this bench process: it builds, sends and follows the jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cpu import tree_cpu
from e2e_latency import kafka_jobs_wall, level, percentile

from streams.launcher import Launcher
from streams.settings import Settings

PARTITIONS = 6


@dataclass
class Phase:
    """One measured phase: jobs, wall time, and CPU seconds per process."""

    jobs: int
    wall_s: float
    cpu_s: dict[str, float]
    p50_ms: float | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s

    def cpu_ms_per_job(self, names: Callable[[str], bool]) -> float:
        return 1000 * sum(s for name, s in self.cpu_s.items() if names(name)) / self.jobs


@contextmanager
def cpu_used(launcher: Launcher, into: dict[str, float]) -> Iterator[None]:
    """Fills `into` with each process's CPU seconds while the block ran (this client too).

    The client's own time only: the stack's processes are this process's children, and a tree
    reading of it would count them twice.
    """
    info = launcher.stack_info()["pids"]
    assert isinstance(info, dict)
    pids = {name: pid for name, pid in info.items() if pid}
    before = {name: tree_cpu(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    yield
    into.update({name: tree_cpu(pid) - before[name] for name, pid in pids.items()})
    into["client"] = time.process_time() - client_before


def measure(workers: int, kafka_jobs: int, api_jobs: int, concurrency: int) -> list[Phase]:
    """Both phases on a fresh stack with `workers` worker processes."""
    with tempfile.TemporaryDirectory(prefix="sc-scaleout-") as state:
        settings = Settings(
            state_dir=Path(state),
            api_port=0,
            workers=workers,
            partitions=PARTITIONS,
            stage_partitions=PARTITIONS,
        )
        launcher = Launcher(settings)
        try:
            launcher.start(wait_ready=180)
            asyncio.run(level(launcher.api_url, 4, 20))  # warm-up: every worker has run a job
            kafka_cpu: dict[str, float] = {}
            with cpu_used(launcher, kafka_cpu):
                wall = asyncio.run(kafka_jobs_wall(launcher.settings, kafka_jobs))
            kafka = Phase(kafka_jobs, wall, kafka_cpu)
            api_cpu: dict[str, float] = {}
            with cpu_used(launcher, api_cpu):
                latencies, wall = asyncio.run(level(launcher.api_url, concurrency, api_jobs))
            p50 = percentile([value * 1000 for value in latencies], 0.5)
            return [kafka, Phase(api_jobs, wall, api_cpu, p50)]
        finally:
            launcher.stop()


def is_worker(name: str) -> bool:
    return name.startswith("worker")


COLUMNS: list[tuple[str, Callable[[str], bool]]] = [
    ("workers", is_worker),
    ("projector", lambda name: name == "projector"),
    ("api", lambda name: name == "api"),
    ("webhooks", lambda name: name == "webhooks"),
    ("broker", lambda name: name == "broker"),
    ("postgres", lambda name: name == "postgres"),
    ("client", lambda name: name == "client"),
]


def print_table(title: str, rows: dict[int, Phase]) -> None:
    print(f"\n{title}")
    cpu_heads = " ".join(f"{name:>9}" for name, _ in COLUMNS)
    heads = f"{'workers':>7} {'jobs':>6} {'jobs/s':>8} {'x1':>5} {'p50 ms':>7}"
    print(f"{heads}   CPU ms/job: {cpu_heads}")
    base = rows[min(rows)].jobs_per_s
    for workers, phase in rows.items():
        p50 = f"{phase.p50_ms:>7.1f}" if phase.p50_ms is not None else f"{'-':>7}"
        cpus = " ".join(f"{phase.cpu_ms_per_job(names):>9.2f}" for _, names in COLUMNS)
        print(
            f"{workers:>7} {phase.jobs:>6} {phase.jobs_per_s:>8.1f} "
            f"{phase.jobs_per_s / base:>5.2f} {p50}               {cpus}"
        )
    for workers, phase in rows.items():
        each = sorted(
            (name, 1000 * seconds / phase.jobs)
            for name, seconds in phase.cpu_s.items()
            if is_worker(name)
        )
        shares = ", ".join(f"{name} {ms:.2f}" for name, ms in each)
        print(f"  {workers} worker(s), CPU ms/job each: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--kafka-jobs", type=int, default=1000, help="jobs produced into Kafka")
    parser.add_argument("--api-jobs", type=int, default=500, help="jobs through the API")
    parser.add_argument("--concurrency", type=int, default=32, help="API clients at once")
    args = parser.parse_args()
    print(
        f"digits_cnn compile jobs; {PARTITIONS} partitions per topic; {os.cpu_count()} cores "
        "shared by every process below"
    )
    kafka: dict[int, Phase] = {}
    api: dict[int, Phase] = {}
    for workers in args.workers:
        started = time.perf_counter()
        kafka[workers], api[workers] = measure(
            workers, args.kafka_jobs, args.api_jobs, args.concurrency
        )
        # Other work on the machine moves every figure: the load says how much there was.
        load = " ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"  {workers} worker(s) measured in {time.perf_counter() - started:.0f}s; "
            f"load average after: {load}",
            flush=True,
        )
    print_table("Produced into Kafka, until the last JobFinished on the events topic", kafka)
    print_table(
        f"Through the API at concurrency {args.concurrency}, POST /jobs -> JobFinished on SSE",
        api,
    )
    cores = os.cpu_count() or 1
    total = statistics.fmean(sum(p.cpu_s.values()) / p.wall_s for p in api.values())
    print(f"\nmean CPU busy through the API: {total:.2f} of {cores} cores")


if __name__ == "__main__":
    main()
