"""End-to-end latency and throughput of compile jobs (parse+compile+codegen) on the embedded stack.

Prints, first, where one job's time goes, hop by hop (bench/trace.py): jobs one at a time, each
event's `occurred_at` (when its producer made it) beside the projector's `recorded_at` (when
the transaction that numbered it began), the NOTIFY this client hears on the projector's
channel and the moment the SSE message reaches it; the median of each hop. Then the stack's
CPU while idle. Then, for each concurrency level, the time from POST /jobs to JobFinished on
the job's SSE feed (p50/p95/p99) and the sustained jobs/s: one worker process, one projector,
one API, the broker, PostgreSQL and this client all share the machine. And the worker alone:
N requests produced straight into Kafka, timed until N JobFinished are on the events topic.
At each level it also prints the CPU milliseconds each process spent per job (from /proc,
bench/cpu.py). With --profile DIR, py-spy samples the API, the worker and the projector during
the last level and writes one collapsed-stack file per process there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cpu import tree_cpu

from api.client import StagecastClient
from api.jobs import job_requested
from api.models import JobSubmission
from projections.writer import NOTIFY_CHANNEL
from schemas.codec import default_codec
from streams.fetch_pace import FetchPace
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

    async def client_loop(client: StagecastClient) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            latencies.append(await one_job(client))

    # One client for all, as an application would hold one (each costs an SSL context).
    async with StagecastClient(api_url) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


@dataclass
class JobTrace:
    """One job's clock readings on this side: POST sent, 202 back, each SSE message received."""

    posted: float
    accepted: float
    job_id: str
    received: dict[int, float] = field(default_factory=dict)


@dataclass
class Notices:
    """When this client heard each NOTIFY of the projector's channel (its payload's max seq)."""

    heard: list[tuple[int, float]] = field(default_factory=list)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        head = str(payload).split()[0]
        self.heard.append((int(head), time.time()))

    def first_covering(self, seq: int) -> float | None:
        """The first NOTIFY whose commit numbered `seq` (or later)."""
        return next((when for top, when in self.heard if top >= seq), None)


async def traced_job(client: StagecastClient) -> JobTrace:
    posted = time.time()
    accepted = await client.submit(DSL)
    trace = JobTrace(posted, time.time(), accepted["job_id"])
    async for event in client.events(trace.job_id):
        trace.received[event.seq] = time.time()
        if event.type == "JobFinished":
            if event.data["status"] != "SUCCEEDED":
                raise RuntimeError(f"job {trace.job_id} ended {event.data['status']}")
            break
    return trace


def event_label(row: asyncpg.Record) -> str:
    """StageChanged parse STARTED, ArtifactStored codegen, JobFinished ..."""
    status = row["payload"].get("status") if row["type"] in ("StageChanged",) else None
    return " ".join(part for part in (row["type"], row["stage"], status) if part)


_FEED_TIMES = """
SELECT seq, type, stage, payload, extract(epoch FROM occurred_at) AS occurred,
       extract(epoch FROM recorded_at) AS recorded
FROM job_events WHERE job_id = $1::uuid ORDER BY seq
"""


async def hops(api_url: str, database_url: str, jobs: int) -> None:
    """One job at a time; the median of every hop from POST to JobFinished on the SSE feed."""
    notices = Notices()
    conn = await asyncpg.connect(database_url)
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
    await conn.add_listener(NOTIFY_CHANNEL, notices.on_notify)
    traces = []
    try:
        async with StagecastClient(api_url) as client:
            for _ in range(5):  # warm-up: connections and caches hot
                await traced_job(client)
            for _ in range(jobs):
                traces.append(await traced_job(client))
        await asyncio.sleep(0.2)
        per_hop: dict[str, list[float]] = {}
        order: list[str] = []
        totals = []

        def add(label: str, seconds: float) -> None:
            if label not in per_hop:
                order.append(label)
            per_hop.setdefault(label, []).append(seconds * 1000)

        for trace in traces:
            rows = await conn.fetch(_FEED_TIMES, trace.job_id)
            finished = rows[-1]
            add(
                f"POST sent -> {event_label(rows[0])} (API, requests topic, dispatcher)",
                float(rows[0]["occurred"]) - trace.posted,
            )
            previous = rows[0]
            for row in rows[1:]:
                gap = float(row["occurred"]) - float(previous["occurred"])
                add(f"  {event_label(previous)} -> {event_label(row)}", gap)
                previous = row
            recorded = float(finished["recorded"])
            heard = notices.first_covering(finished["seq"])
            received = trace.received[finished["seq"]]
            add(
                "JobFinished made -> projector transaction begins",
                recorded - float(finished["occurred"]),
            )
            if heard is not None:
                add("  transaction begins -> NOTIFY heard (commit)", heard - recorded)
                add("  NOTIFY heard -> SSE JobFinished received", received - heard)
            totals.append((received - trace.posted) * 1000)
            add("(202 back, beside the above: POST -> 202)", trace.accepted - trace.posted)
    finally:
        await conn.close()
    print(f"where one job's time goes: median of each hop over {jobs} jobs one at a time (ms)")
    print(f"{'hop':<78} {'p50':>6} {'mean':>6}")
    for label in order:
        values = per_hop[label]
        print(f"{label:<78} {statistics.median(values):>6.1f} {statistics.fmean(values):>6.1f}")
    hop_sum = sum(statistics.median(per_hop[label]) for label in order if not label.startswith("("))
    print(
        f"{'sum of the hop medians':<78} {hop_sum:>6.1f}\n"
        f"{'POST -> SSE JobFinished received, per job':<78} "
        f"{statistics.median(totals):>6.1f} {statistics.fmean(totals):>6.1f}\n",
        flush=True,
    )


def stack_pids(launcher: Launcher) -> dict[str, int]:
    """The pid of every process of the stack, by name: the launcher's children, the broker
    and PostgreSQL."""
    pids = {name: proc.pid for name, proc in launcher.children.items()}
    for name, server in (("broker", launcher.broker), ("postgres", launcher.database)):
        if server is not None and server.pid is not None:
            pids[name] = server.pid
    return pids


def idle_cpu(launcher: Launcher, seconds: float) -> None:
    """The stack's CPU while no job runs: what polling (fetch waits, lingers) costs at rest."""
    pids = stack_pids(launcher)
    before = {name: tree_cpu(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    used = {name: tree_cpu(pid) - before[name] for name, pid in pids.items()}
    parts = ", ".join(
        f"{name} {value / seconds * 100:.1f}%" for name, value in sorted(used.items())
    )
    total = sum(used.values()) / seconds * 100
    print(f"idle CPU over {seconds:g} s (% of one core): {total:.1f}% in all ({parts})\n")


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


@contextlib.contextmanager
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


async def worker_throughput(settings: Settings, jobs: int) -> float:
    """Requests produced straight into Kafka; the clock stops at the last JobFinished; jobs/s."""
    wall = await kafka_jobs_wall(settings, jobs)
    print(
        f"worker alone: {jobs} requests produced into Kafka -> {jobs} JobFinished "
        f"in {wall:.2f}s = {jobs / wall:.1f} jobs/s (one worker process)"
    )
    return jobs / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per concurrency level")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16, 32])
    parser.add_argument("--trace", type=int, default=50, help="jobs traced hop by hop")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--also",
        metavar="SETTING=VALUE",
        action="append",
        default=[],
        help="first trace a stack with this setting changed (e.g. fetch_busy_wait_ms=2, "
        "projector_linger_ms=20); repeat for more stacks, each compared in the same run",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy collapsed stacks of api, worker and projector here (last level)",
    )
    args = parser.parse_args()
    for change in args.also:
        name, _, value = change.partition("=")
        with stack(**{name: None if value.lower() == "none" else value}) as launcher:
            print(f"== {name}={value}")
            trace_stack(launcher, args.idle, args.trace)
    with stack() as launcher:
        print(
            f"== the stack's defaults (fetch_max_wait_ms={launcher.settings.fetch_max_wait_ms}, "
            f"projector_linger_ms={launcher.settings.projector_linger_ms})"
        )
        trace_stack(launcher, args.idle, args.trace)
        if args.levels:
            print(f"{args.jobs} digits_cnn compile jobs per level")
            asyncio.run(worker_throughput(launcher.settings, args.jobs * 5))
            asyncio.run(measure(launcher, args.levels, args.jobs, args.profile))


def trace_stack(launcher: Launcher, idle_s: float, jobs: int) -> None:
    """Idle CPU, a bare hop through the broker, then the hops of `jobs` jobs."""
    idle_cpu(launcher, idle_s)
    asyncio.run(bare_hop(launcher.settings))
    projector = launcher.metrics_urls()["projector"]
    before = projector_totals(projector)
    asyncio.run(hops(launcher.api_url, launcher.settings.require_database(), jobs))
    after = projector_totals(projector)
    batches = after["batches"] - before["batches"]
    seconds = after["seconds"] - before["seconds"]
    print(
        f"projector: {batches / (jobs + 5):.1f} transactions per job, "
        f"{seconds / max(batches, 1) * 1000:.1f} ms each on average\n"
    )


def projector_totals(metrics_url: str) -> dict[str, float]:
    """Batches committed and seconds spent writing them, from the projector's metrics."""
    totals = {"batches": 0.0, "seconds": 0.0}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("stagecast_projector_batches_total{"):
            totals["batches"] = float(line.split()[-1])
        elif line.startswith("stagecast_projector_batch_seconds_sum{"):
            totals["seconds"] = float(line.split()[-1])
    return totals


async def bare_hop(settings: Settings, messages: int = 100) -> None:
    """Produce one message and wait for it, over a topic of its own read like the stack reads
    (several partitions, the stack's fetch waits): the broker's part of every hop."""
    topic = f"{settings.topic_prefix}.bench-hop"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require_kafka())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.partitions, 1)])
    finally:
        await admin.close()
    pace = FetchPace(settings.fetch_max_wait_ms, settings.fetch_busy_wait_ms)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.require_kafka(),
        auto_offset_reset="latest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka(), acks="all")
    await consumer.start()
    await producer.start()
    acked, consumed = [], []
    try:
        await consumer.seek_to_end()
        for index in range(messages):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"hop", key=str(index).encode())
            acked.append((time.perf_counter() - started) * 1000)
            while not await consumer.getmany(timeout_ms=1000):
                pace.pace(consumer, False)
            pace.pace(consumer, True)
            consumed.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.003)
    finally:
        await producer.stop()
        await consumer.stop()
    print(
        f"a bare hop through the broker ({messages} messages, {settings.partitions} partitions): "
        f"produce -> acknowledged p50 {statistics.median(acked):.1f} ms, "
        f"-> consumed p50 {statistics.median(consumed):.1f} ms\n"
    )


@contextlib.contextmanager
def stack(**settings: Any) -> Iterator[Launcher]:
    """An embedded stack in a state directory of its own, stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as state:
        launcher = Launcher(Settings(state_dir=Path(state), api_port=0, **settings))
        try:
            launcher.start()
            yield launcher
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
