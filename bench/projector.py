"""Events per second through the projector, next to a raw COPY of the same rows as the ceiling.

Starts its own embedded broker and PostgreSQL (streams.launcher), pre-produces realistic job
histories, then times the projector from start until every message is committed.
Usage: python bench/projector.py [events] [job spacing ms]   (default 50000 and 20; with a
spacing of 0 every job runs in the same half second, as this bench's histories did before)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from projections.batch import staged_row
from projections.projector import Projector
from schemas.codec import Codec, default_codec
from streams.launcher import Launcher
from streams.settings import Settings

STAGES = ["parse", "compile", "codegen", "execute", "train"]
EPOCHS = 10
# Jobs start this far apart (each lasts about half a second): a few dozen run side by side, and
# event time moves on through the history as it does on a live stack.
JOB_SPACING_MS = 20
MODEL_PY = b"import torch\n\n\nclass Model(torch.nn.Module):\n    ...\n" * 20

Event = tuple[str, str, dict[str, Any]]  # (topic role, event type, record)


def job_history(job_id: str, start_ms: int) -> list[Event]:
    """A successful five-stage job: about seventy events, like a small training run emits."""
    clock = iter(range(start_ms, start_ms + 10_000_000, 7))

    def event(role: str, event_type: str, **fields: Any) -> Event:
        common = {
            "event_id": str(uuid.uuid4()),
            "job_id": job_id,
            "tenant": "bench",
            "occurred_at": next(clock),
            "source": "bench",
        }
        return role, event_type, {**common, **fields}

    events = [
        event(
            "requests",
            "JobRequested",
            kind="MODEL",
            dsl="model m {\n  input [1, 28, 28]\n  dense 10\n}\n",
            code=None,
            target="pytorch",
            stages=STAGES,
            train=json.dumps({"epochs": EPOCHS}),
            limits=None,
            labels={"team": "bench"},
            idempotency_key=None,
        ),
        event("events", "JobAccepted", kind="MODEL", target="pytorch", stages=STAGES),
    ]
    for stage in STAGES:
        place = {"stage": stage, "attempt": 1}
        events.append(
            event("events", "StageChanged", **place, status="STARTED", summary="{}", error=None)
        )
        for line in range(3):
            events.append(
                event("progress", "LogEmitted", **place, level="INFO", message=f"step {line}")
            )
        for percent in (50.0, 100.0):
            events.append(event("progress", "ProgressReported", **place, percent=percent))
        if stage == "codegen":
            events.append(
                event(
                    "progress",
                    "ArtifactStored",
                    **place,
                    name="model.py",
                    media_type="text/x-python",
                    size_bytes=len(MODEL_PY),
                    sha256=hashlib.sha256(MODEL_PY).hexdigest(),
                    content=MODEL_PY,
                )
            )
        if stage == "train":
            for epoch in range(EPOCHS):
                for name, value in (("loss", 1.0 / (epoch + 1)), ("accuracy", epoch / EPOCHS)):
                    events.append(
                        event(
                            "progress",
                            "MetricRecorded",
                            **place,
                            name=name,
                            value=value,
                            step=epoch,
                        )
                    )
                events.append(
                    event("progress", "ProgressReported", **place, percent=10.0 * (epoch + 1))
                )
        events.append(
            event(
                "events",
                "StageChanged",
                **place,
                status="SUCCEEDED",
                summary=json.dumps({"ok": True}),
                error=None,
                duration_ms=42,
            )
        )
    events.append(
        event(
            "events",
            "JobFinished",
            status="SUCCEEDED",
            error=None,
            stages_completed=STAGES,
            duration_ms=1234,
        )
    )
    return events


Sent = list[tuple[str, bytes, bytes]]  # (topic, key, value)
EVENTS_PER_JOB = len(job_history(str(uuid.uuid4()), 0))


async def produce(
    settings: Settings, codec: Codec, count: int, spacing_ms: int = JOB_SPACING_MS
) -> Sent:
    """Produce `count` events, jobs starting `spacing_ms` apart; return what was sent."""
    topics = settings.topics
    roles = {"requests": topics.requests, "events": topics.events, "progress": topics.progress}
    sent: Sent = []
    start_ms = int(time.time() * 1000)
    while len(sent) < count:
        job_id = str(uuid.uuid4())
        for role, event_type, record in job_history(job_id, start_ms)[: count - len(sent)]:
            sent.append((roles[role], job_id.encode(), codec.encode(event_type, record)))
        start_ms += spacing_ms
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(),
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=1_048_576,
    )
    await producer.start()
    try:
        for topic, key, value in sent:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def project(
    settings: Settings,
    codec: Codec,
    count: int,
    name: str = "bench",
    schema: str | None = None,
) -> tuple[float, Projector]:
    """Seconds for a fresh projector to commit `count` messages (into `schema`, if given)."""
    projector = Projector(settings, codec, name=name, schema=schema)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(projector.run(stop))
    while projector.stats.messages < count:
        if task.done():
            task.result()
            raise RuntimeError("projector stopped before consuming everything")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed, projector


async def copy_ceiling(database_url: str, codec: Codec, sent: Sent) -> tuple[int, float]:
    """Rows, and seconds for one raw COPY of the same feed rows into a table without indexes."""
    rows = []
    for offset, (topic, _, value) in enumerate(sent):
        event_type, record = codec.decode(value)
        if event_type == "JobRequested":
            continue
        row = staged_row(offset, topic, 0, offset, event_type, record)
        rows.append((row[1], row[2], row[3], row[5], row[9], row[8], topic, 0, offset))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE TABLE copy_ceiling (event_id uuid, job_id uuid, type text, stage text,"
            " payload jsonb, occurred_at timestamptz, topic text, partition int,"
            ' "offset" bigint)'
        )
        started = time.perf_counter()
        await conn.copy_records_to_table("copy_ceiling", records=rows)
        return len(rows), time.perf_counter() - started
    finally:
        await conn.close()


async def bench(settings: Settings, count: int, spacing_ms: int) -> None:
    codec = default_codec()
    sent = await produce(settings, codec, count, spacing_ms)
    elapsed, projector = await project(settings, codec, count)
    rows, ceiling = await copy_ceiling(settings.require_database(), codec, sent)
    stats = projector.stats
    through = count / elapsed
    raw = rows / ceiling
    print(f"jobs {spacing_ms} ms apart, about {EVENTS_PER_JOB} events each")
    print(
        f"events: {count} ({stats.applied} applied, {stats.duplicates} duplicates, "
        f"{stats.undecodable} undecodable) in {stats.batches} batches "
        f"(projector_batch {settings.projector_batch}, plus what a consistent cut adds)"
    )
    print(f"projector, start to last commit: {elapsed:.2f} s -> {through:,.0f} events/s")
    print(f"raw COPY of the {rows} feed rows: {ceiling:.2f} s -> {raw:,.0f} rows/s")
    print(f"projector / raw COPY: {through / raw:.1%}")


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
            settings = launcher.start_servers()
            asyncio.run(bench(settings, count, spacing_ms))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
