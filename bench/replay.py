"""Replay against the ceilings beside it: events per second rebuilt into a schema of their own,
from the topics and from the live archive, next to a raw aiokafka read of the same topics;
and the live projector (which now also writes the archive) next to a raw COPY.

Starts its own embedded broker and PostgreSQL, produces realistic job histories (those of
bench/projector.py), projects them live, then times: a bare consumer reading every message
(no decoding), `replay` from the topics, `replay` from the archive, and `compare` of each
replay with the live projections. Usage: python bench/replay.py [events]   (default 50000)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from projector import copy_ceiling, produce, project

from projections.replay import compare, replay
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.settings import Settings


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


async def bench(settings: Settings, count: int) -> None:
    codec = default_codec()
    sent = await produce(settings, codec, count)
    live_s, projector = await project(settings, codec, count)
    rows, copy_s = await copy_ceiling(settings.require_database(), codec, sent)
    read_s = await raw_read(settings, count)
    from_topics = await replay(settings, codec, "bench_topics")
    from_archive = await replay(settings, codec, "bench_archive", source="archive")
    url = settings.require_database()
    diffs = {schema: await compare(url, schema) for schema in ("bench_topics", "bench_archive")}

    print(f"{count} events ({projector.stats.applied} applied), one run, same machine:")
    print(f"  raw aiokafka read of the topics   {read_s:6.2f} s  {count / read_s:>9,.0f} events/s")
    for label, done in (
        ("replay from the topics", from_topics),
        ("replay from the archive", from_archive),
    ):
        print(
            f"  {label:<33} {done.seconds:6.2f} s  {done.events / done.seconds:>9,.0f} events/s"
            f"  ({done.events / done.seconds / (count / read_s):.0%} of the raw read)"
        )
    print(
        f"  live projector (with the archive) {live_s:6.2f} s  {count / live_s:>9,.0f} events/s"
        f"  ({count / live_s / (rows / copy_s):.0%} of raw COPY)"
    )
    print(f"  raw COPY of the {rows} feed rows  {copy_s:6.2f} s  {rows / copy_s:>9,.0f} rows/s")
    for schema, tables in diffs.items():
        different = [d.table for d in tables if not d.same]
        print(f"  compare {schema}: {different or 'no difference'}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
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
            settings = launcher.start_servers()
            asyncio.run(bench(settings, count))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
