"""Memory of every process of the stack over many compile jobs: does anything grow per job?

Runs digits_cnn compile jobs through the HTTP API (POST /jobs, then the job's SSE feed until
JobFinished, bench/e2e_latency.py's client at concurrency 32) on the embedded stack, and after
every `--every` jobs samples the resident memory of each process: worker, projector, webhooks,
API, the broker, and PostgreSQL (the server and all its backends). Prints the samples per
process and the growth per 1,000 jobs after the warm-up (a least-squares slope).

Resident memory here is private plus file-backed pages (RssAnon + RssFile), shared memory left
out: each PostgreSQL backend maps the shared buffers, which would otherwise be counted once per
backend. The embedded broker keeps its whole log in memory, so it grows with every event by
design; its figure is reported as such, and nothing is deleted to make it flat.

Run: `.venv/bin/python bench/memory.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e_latency import level

from streams.launcher import Launcher
from streams.settings import Settings

PROC = Path("/proc")
CONCURRENCY = 32
# The broker's growth is its log, kept in memory by the embedded build (ARCHITECTURE.md).
BROKER_NOTE = "embedded broker: the topics' log is held in memory, so it grows with every event"


@dataclass(frozen=True, slots=True)
class Sample:
    """Resident KiB of each process of the stack after `jobs` jobs."""

    jobs: int
    kib: Mapping[str, int]


def resident_kib(status: str) -> int:
    """RssAnon + RssFile from a /proc/PID/status text (RssShmem left out)."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in ("RssAnon", "RssFile"))


def parent_of(stat: str) -> int:
    """The parent pid from a /proc/PID/stat text (the command name may hold spaces and ')')."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """`root` and every process under it, given each live process's parent."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def growth_per_thousand(samples: Sequence[Sample], name: str) -> float:
    """Least-squares slope of one process's KiB over jobs, per 1,000 jobs."""
    xs = [float(sample.jobs) for sample in samples]
    ys = [float(sample.kib[name]) for sample in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("a slope needs samples at two job counts at least")
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def report(samples: Sequence[Sample], warm_up: int) -> str:
    """One row per process: MiB at each sample, then KiB per 1,000 jobs after the warm-up."""
    measured = [sample for sample in samples if sample.jobs >= warm_up]
    names = list(samples[0].kib)
    width = max(len(name) for name in names)
    header = f"{'MiB after N jobs':<{width}} " + " ".join(f"{s.jobs:>7}" for s in samples)
    lines = [header + f" {'KiB/1000 jobs':>14}"]
    for name in names:
        figures = " ".join(f"{s.kib[name] / 1024:>7.1f}" for s in samples)
        lines.append(f"{name:<{width}} {figures} {growth_per_thousand(measured, name):>14.1f}")
    lines.append(f"(growth fitted from {warm_up} jobs on; {BROKER_NOTE})")
    return "\n".join(lines)


def progress_line(taken: Sample, jobs_per_s: float) -> str:
    """One sample as it is taken: a run stopped early still shows what it saw."""
    sizes = ", ".join(f"{name} {kib / 1024:.1f}" for name, kib in taken.kib.items())
    return f"{taken.jobs:>6} jobs done ({jobs_per_s:.1f} jobs/s); MiB: {sizes}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None  # the process ended between listing and reading


def _parents() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _read(entry / "stat")) is not None:
            parents[int(entry.name)] = parent_of(stat)
    return parents


def sample(jobs: int, pids: Mapping[str, int]) -> Sample:
    """Every named process's tree, summed (PostgreSQL's backends are its server's children)."""
    parents = _parents()
    kib = {}
    for name, root in pids.items():
        texts = (_read(PROC / str(pid) / "status") for pid in descendants(root, parents))
        kib[name] = sum(resident_kib(text) for text in texts if text is not None)
    return Sample(jobs, kib)


def stack_pids(launcher: Launcher) -> dict[str, int]:
    pids = launcher.stack_info()["pids"]
    assert isinstance(pids, dict)
    return {name: pid for name, pid in pids.items() if isinstance(pid, int)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="compile jobs in all")
    parser.add_argument("--every", type=int, default=1_000, help="jobs between samples")
    parser.add_argument("--warm-up", type=int, default=2_000, help="jobs before the fit starts")
    args = parser.parse_args()
    if args.jobs < args.warm_up + 2 * args.every:
        parser.error("--jobs must leave two samples at least after --warm-up")
    with tempfile.TemporaryDirectory(prefix="sc-memory-") as state:
        launcher = Launcher(Settings(state_dir=Path(state), api_port=0))
        try:
            launcher.start()
            pids = stack_pids(launcher)
            print(f"embedded stack up (API {launcher.api_url}); bench pid {os.getpid()}")
            samples = [sample(0, pids)]
            for done in range(args.every, args.jobs + 1, args.every):
                _, wall = asyncio.run(level(launcher.api_url, CONCURRENCY, args.every))
                samples.append(sample(done, pids))
                print(progress_line(samples[-1], args.every / wall), flush=True)
        finally:
            launcher.stop()
    print()
    print(report(samples, args.warm_up))


if __name__ == "__main__":
    main()
