"""stagecast beside Celery 5 + Redis doing the same compile job, measured in one run.

The peer runs the project's own parse, compile and codegen functions as a three-task Celery
chain (bench/peer_chain.py) over a Redis server this bench starts on loopback with a temporary
directory: one worker process with the solo pool, the result read from the Redis backend.
stagecast is measured with bench/e2e_latency.py's functions: POST /jobs until JobFinished on the
job's SSE feed. The two systems run one after the other, never side by side, so neither pays
for the other's idle polling. Prints one job at a time (p50/p95/p99), the sustained jobs/s of a
burst, and the ratios.

Run: `.venv/bin/python bench/peer.py` (needs `make bench-deps`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_latency import DSL, level, percentile, worker_throughput

from streams.launcher import Launcher
from streams.settings import Settings
from streams.stack import die_with_parent, free_port, stop_process

# The Celery worker imports the chain's module from here, as this script does.
BENCH = Path(__file__).resolve().parent
# Distinct from argparse's 2: the bench was asked correctly, but the machine lacks a part.
MISSING_REQUIREMENT_EXIT = 3
STAGECAST_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Latencies:
    """One system's jobs run one at a time, in milliseconds."""

    system: str
    ms: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Throughput:
    """One system's burst: `jobs` sent at once, done in `wall_s` seconds."""

    system: str
    jobs: int
    wall_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


def missing_requirements(
    which: Callable[[str], str | None], installed: Callable[[str], bool]
) -> list[str]:
    """What this machine lacks for the peer, each with the command that installs it."""
    missing = []
    if which("redis-server") is None:
        missing.append(
            "redis-server is not installed: run `make bench-deps` "
            "(or `apt-get install redis-server` as root)"
        )
    for module, package in (("celery", "celery"), ("redis", "redis")):
        if not installed(module):
            missing.append(
                f"the Python package {package} is not installed: run `make bench-deps` "
                "(or `.venv/bin/pip install -e '.[bench]'`)"
            )
    return missing


def require(missing: Sequence[str]) -> None:
    """Say what is missing and exit non-zero; nothing is measured without the peer."""
    if missing:
        for line in missing:
            print(f"bench/peer.py: {line}", file=sys.stderr)
        sys.exit(MISSING_REQUIREMENT_EXIT)


def _module_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: the first column left-aligned, the figures right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        figures = (f"{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True))
        return "  ".join([f"{first:<{widths[0]}}", *figures]).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def latency_table(rows: Sequence[Latencies]) -> str:
    headers = ("one job at a time", "jobs", "p50 ms", "p95 ms", "p99 ms", "mean ms")
    return render_table(
        headers,
        [
            (
                row.system,
                str(len(row.ms)),
                *(f"{percentile(list(row.ms), q):.1f}" for q in (0.50, 0.95, 0.99)),
                f"{statistics.fmean(row.ms):.1f}",
            )
            for row in rows
        ],
    )


def throughput_table(rows: Sequence[Throughput]) -> str:
    headers = ("sustained (a burst of N)", "N", "seconds", "jobs/s")
    return render_table(
        headers,
        [(row.system, str(row.jobs), f"{row.wall_s:.2f}", f"{row.jobs_per_s:.1f}") for row in rows],
    )


def ratio_lines(
    stagecast: Latencies, peer: Latencies, bursts: Sequence[Throughput], peer_burst: Throughput
) -> list[str]:
    """stagecast's figures over the peer's: below 1 is faster for latency, above 1 for jobs/s."""
    lines = [
        f"latency {name} stagecast / Celery: "
        f"{percentile(list(stagecast.ms), q) / percentile(list(peer.ms), q):.2f}x"
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
    ]
    lines += [
        f"jobs/s {burst.system} / Celery: {burst.jobs_per_s / peer_burst.jobs_per_s:.2f}x"
        for burst in bursts
    ]
    return lines


@contextmanager
def redis_server(state: Path) -> Iterator[str]:
    """A Redis server on a free loopback port, nothing persisted; yields its URL."""
    binary = shutil.which("redis-server")
    assert binary is not None, "checked by require() first"
    port = free_port()
    log = (state / "redis.log").open("ab")
    proc = subprocess.Popen(
        [
            *(binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(state)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )
    log.close()
    try:
        _wait_for_redis(proc, port, state / "redis.log")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc, signal.SIGTERM)


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {log}")
        try:
            client.ping()
            client.close()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise TimeoutError(f"redis-server did not answer on port {port} within 15s; see {log}")


@contextmanager
def celery_worker(redis_url: str, state: Path) -> Iterator[Any]:
    """One Celery worker process (solo pool) on the chain's tasks; yields the client's app."""
    from peer_chain import REDIS_URL_VARIABLE, celery_app

    log = (state / "celery.log").open("ab")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "peer_chain", "worker", "--pool=solo"),
            *("--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("--hostname", f"peer-{os.getpid()}@localhost"),
        ],
        cwd=BENCH,
        env={**os.environ, REDIS_URL_VARIABLE: redis_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )
    log.close()
    app = celery_app(redis_url)
    try:
        deadline = time.monotonic() + 60.0
        while not app.control.ping(timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start; see {state / 'celery.log'}")
        yield app
    finally:
        stop_process(proc, signal.SIGTERM, timeout=15.0)
        app.close()


def peer_figures(app: Any, jobs: int, burst: int) -> tuple[Latencies, Throughput]:
    """The peer: a warm-up, `jobs` chains one at a time, then `burst` chains sent at once."""
    from peer_chain import codegen_stage, compile_job, compile_stage, parse_stage

    expected = codegen_stage(compile_stage(parse_stage(DSL)))
    for _ in range(20):
        if compile_job(app, DSL).get(timeout=30) != expected:
            raise RuntimeError("the Celery chain did not return codegen's module")
    latencies = []
    for _ in range(jobs):
        started = time.perf_counter()
        compile_job(app, DSL).get(timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    results = [compile_job(app, DSL) for _ in range(burst)]
    for result in results:
        result.get(timeout=300)
    wall = time.perf_counter() - started
    system = "Celery 5 + Redis, 3-task chain, solo pool"
    return Latencies(system, tuple(latencies)), Throughput(system, burst, wall)


def stagecast_figures(jobs: int, burst: int) -> tuple[Latencies, list[Throughput]]:
    """stagecast on the embedded stack, with bench/e2e_latency.py's clients."""
    with tempfile.TemporaryDirectory(prefix="sc-peer-") as state:
        launcher = Launcher(Settings(state_dir=Path(state), api_port=0))
        try:
            launcher.start()
            asyncio.run(level(launcher.api_url, 4, 20))  # warm-up: connections and caches hot
            one_at_a_time, _ = asyncio.run(level(launcher.api_url, 1, jobs))
            _, api_wall = asyncio.run(level(launcher.api_url, STAGECAST_CONCURRENCY, burst))
            worker_rate = asyncio.run(worker_throughput(launcher.settings, burst))
        finally:
            launcher.stop()
    latencies = Latencies(
        "stagecast, POST /jobs -> JobFinished on SSE", tuple(v * 1000 for v in one_at_a_time)
    )
    bursts = [
        Throughput(f"stagecast API, concurrency {STAGECAST_CONCURRENCY}", burst, api_wall),
        Throughput("stagecast worker alone, from Kafka", burst, burst / worker_rate),
    ]
    return latencies, bursts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs one at a time, per system")
    parser.add_argument("--burst", type=int, default=1000, help="jobs in the sustained burst")
    args = parser.parse_args()
    require(missing_requirements(shutil.which, _module_installed))
    print(f"{args.jobs} digits_cnn compile jobs one at a time, then a burst of {args.burst}\n")
    stagecast, bursts = stagecast_figures(args.jobs, args.burst)
    with (
        tempfile.TemporaryDirectory(prefix="sc-peer-redis-") as state,
        redis_server(Path(state)) as redis_url,
        celery_worker(redis_url, Path(state)) as app,
    ):
        peer, peer_burst = peer_figures(app, args.jobs, args.burst)
    print()
    print(latency_table([peer, stagecast]))
    print()
    print(throughput_table([peer_burst, *bursts]))
    print()
    print("\n".join(ratio_lines(stagecast, peer, bursts, peer_burst)))


if __name__ == "__main__":
    main()
