"""Replay against the ceilings beside it: events per second rebuilt into a schema of their own,
from the topics and from the live archive, next to a raw aiokafka read of the same topics and
to the path replay took before (a projector under its own name); and the live projector (which
writes the archive too) next to a raw COPY.

Starts its own embedded broker and PostgreSQL, produces realistic job histories (those of
bench/projector.py), projects them live, then times: a bare consumer reading every message
(no decoding), `replay` from the topics, `replay` from the archive, a live-path projector into
a fresh schema, and `compare` of each replay with the live projections.
Usage: python bench/replay.py [events] [job spacing ms]   (default 50000 and 20)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from cpu import tree_cpu
from projector import JOB_SPACING_MS, Sent, copy_ceiling, produce, project

from projections.migrate import migrate
from projections.replay import compare, replay
from schemas.codec import Codec, default_codec
from streams.launcher import Launcher
from streams.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds each side spent on one step: this process, PostgreSQL, the broker."""

    bench: float
    database: float
    broker: float

    @property
    def total(self) -> float:
        return self.bench + self.database + self.broker


async def measured(launcher: Launcher, step: Awaitable[T]) -> tuple[T, CpuUse]:
    """What `step` returns, and the CPU it cost every process of the stack."""
    assert launcher.database is not None and launcher.database.pid is not None
    assert launcher.broker is not None and launcher.broker.pid is not None
    database, broker = launcher.database.pid, launcher.broker.pid
    before = (time.process_time(), tree_cpu(database), tree_cpu(broker))
    result = await step
    after = (time.process_time(), tree_cpu(database), tree_cpu(broker))
    return result, CpuUse(*(end - start for start, end in zip(before, after, strict=True)))


def decode_alone(codec: Codec, sent: Sent) -> float:
    """Seconds to decode every message sent, and nothing else: replay's least Python work."""
    started = time.perf_counter()
    for _, _, value in sent:
        codec.decode(value)
    return time.perf_counter() - started


async def raw_read(settings: Settings, count: int) -> float:
    """Seconds for one consumer in no group to fetch `count` messages of the three topics."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.require_kafka(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, partition)
            for topic in (topics.requests, topics.events, topics.progress)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        seen = 0
        while seen < count:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(messages) for messages in fetched.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def live_path(settings: Settings, codec: Codec, count: int) -> float:
    """Seconds for a projector of its own into a fresh schema: how replay went before."""
    await migrate(settings.require_database(), schema="bench_live_path")
    elapsed, _ = await project(settings, codec, count, "bench-live-path", "bench_live_path")
    return elapsed


async def bench(launcher: Launcher, count: int, spacing_ms: int) -> None:
    settings = launcher.settings
    codec = default_codec()
    sent = await produce(settings, codec, count, spacing_ms)
    live_s, projector = await project(settings, codec, count)
    rows, copy_s = await copy_ceiling(settings.require_database(), codec, sent)
    read_s = await raw_read(settings, count)
    decode_s = decode_alone(codec, sent)
    from_topics, topics_cpu = await measured(launcher, replay(settings, codec, "bench_topics"))
    from_archive, archive_cpu = await measured(
        launcher, replay(settings, codec, "bench_archive", source="archive")
    )
    before_s = await live_path(settings, codec, count)
    url = settings.require_database()
    diffs = {schema: await compare(url, schema) for schema in ("bench_topics", "bench_archive")}

    read_rate = count / read_s
    print(
        f"{count} events ({projector.stats.applied} applied), jobs {spacing_ms} ms apart, "
        "one run, same machine:"
    )
    print(f"  raw aiokafka read of the topics    {read_s:6.2f} s  {read_rate:>9,.0f} events/s")
    for label, done in (
        ("replay from the topics", from_topics),
        ("replay from the archive", from_archive),
    ):
        rate = done.events / done.seconds
        print(
            f"  {label:<34} {done.seconds:6.2f} s  {rate:>9,.0f} events/s"
            f"  ({rate / read_rate:.0%} of the raw read)"
        )
    print(
        f"  decode alone (codec.decode, 1 core) {decode_s:5.2f} s  {count / decode_s:>9,.0f} "
        "events/s  (the least Python work a replay does per event)"
    )
    print(
        f"  a projector into a schema          {before_s:6.2f} s  {count / before_s:>9,.0f} "
        "events/s  (replay's path before; today's projector)"
    )
    print(
        f"  live projector (with the archive)  {live_s:6.2f} s  {count / live_s:>9,.0f} events/s"
        f"  ({count / live_s / (rows / copy_s):.0%} of raw COPY)"
    )
    print(f"  raw COPY of the {rows} feed rows   {copy_s:6.2f} s  {rows / copy_s:>9,.0f} rows/s")
    print(f"CPU per replayed event (this machine has {os.cpu_count()} cores):")
    for label, done, cpu in (
        ("from the topics", from_topics, topics_cpu),
        ("from the archive", from_archive, archive_cpu),
    ):
        per = 1e6 / done.events
        ceiling = (os.cpu_count() or 1) / (cpu.total / done.events)
        print(
            f"  {label:<17} bench {cpu.bench * per:5.1f} us + PostgreSQL {cpu.database * per:5.1f}"
            f" us + broker {cpu.broker * per:4.1f} us = {cpu.total * per:5.1f} us"
            f"  -> all cores busy at best {ceiling:,.0f} events/s"
        )
    for schema, tables in diffs.items():
        different = [d.table for d in tables if not d.same]
        print(f"  compare {schema}: {different or 'no difference'}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    spacing_ms = int(sys.argv[2]) if len(sys.argv) > 2 else JOB_SPACING_MS
    with tempfile.TemporaryDirectory(prefix="stagecast-bench-") as state:
        launcher = Launcher(
            Settings(
                _env_file=None,  # type: ignore[call-arg]
                kafka_bootstrap_servers=None,
                database_url=None,
                state_dir=Path(state),
                topic_prefix="bench",
            )
        )
        try:
            launcher.start_servers()
            asyncio.run(bench(launcher, count, spacing_ms))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
