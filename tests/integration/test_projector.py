"""The projector on the real embedded broker and PostgreSQL: what it writes and what it survives."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from projections.projector import NOTIFY_CHANNEL, Projector
from schemas.codec import default_codec
from streams.producer import EventPublisher, Outgoing
from streams.settings import Settings
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

T0 = 1_732_270_000_000
TOPIC_OF = {
    "JobRequested": "requests",
    "ProgressReported": "progress",
    "LogEmitted": "progress",
    "MetricRecorded": "progress",
    "ArtifactStored": "progress",
}
ROOT = Path(__file__).resolve().parents[2]
MODEL_PY = b"import torch\n\nclass Model(torch.nn.Module):\n    pass\n"

Event = tuple[str, dict[str, Any]]  # (event type, record)


def event(event_type: str, job_id: str, at: int, **fields: Any) -> Event:
    """An event of `job_id` that happened `at` ms after T0."""
    common = {
        "event_id": str(uuid.uuid4()),
        "job_id": job_id,
        "tenant": "acme",
        "occurred_at": T0 + at,
        "source": "test",
    }
    return event_type, {**common, **fields}


def requested(job_id: str, at: int = 0, key: str | None = None) -> Event:
    return event(
        "JobRequested",
        job_id,
        at,
        kind="MODEL",
        dsl="network Tiny {}",
        code=None,
        target="pytorch",
        stages=[],
        train=json.dumps({"epochs": 2}),
        limits={"timeout_seconds": 60, "memory_mb": None, "cpu_seconds": None},
        labels={"team": "vision"},
        idempotency_key=key,
    )


def accepted(job_id: str, at: int, stages: list[str]) -> Event:
    return event(
        "JobAccepted",
        job_id,
        at,
        kind="MODEL",
        target="pytorch",
        stages=stages,
        idempotency_key=None,
    )


def stage_changed(
    job_id: str,
    at: int,
    stage: str,
    status: str,
    attempt: int = 1,
    duration_ms: int | None = None,
    error: dict[str, Any] | None = None,
    summary: str = "{}",
) -> Event:
    return event(
        "StageChanged",
        job_id,
        at,
        stage=stage,
        attempt=attempt,
        status=status,
        summary=summary,
        error=error,
        duration_ms=duration_ms,
    )


def progress(job_id: str, at: int, stage: str, percent: float, attempt: int = 1) -> Event:
    return event(
        "ProgressReported",
        job_id,
        at,
        stage=stage,
        attempt=attempt,
        percent=percent,
        message=f"{percent}%",
    )


def finished(job_id: str, at: int, status: str, stages: list[str]) -> Event:
    return event(
        "JobFinished",
        job_id,
        at,
        status=status,
        error=None,
        stages_completed=stages,
        duration_ms=at,
    )


def successful_job(job_id: str) -> list[Event]:
    """parse, then compile failing once and succeeding on retry, then codegen: with telemetry."""
    stages = ["parse", "compile", "codegen"]
    syntax = {"code": "SHAPE_MISMATCH", "message": "bad", "details": json.dumps({"line": 3})}
    return [
        requested(job_id, 0, key=f"key-{job_id}"),
        accepted(job_id, 10, stages),
        stage_changed(job_id, 20, "parse", "STARTED"),
        progress(job_id, 25, "parse", 50.0),
        event(
            "LogEmitted",
            job_id,
            26,
            stage="parse",
            attempt=1,
            level="INFO",
            stream="stdout",
            message="tokens: 12",
        ),
        stage_changed(
            job_id, 30, "parse", "SUCCEEDED", duration_ms=10, summary=json.dumps({"layers": 2})
        ),
        stage_changed(job_id, 40, "compile", "STARTED"),
        stage_changed(job_id, 45, "compile", "FAILED", duration_ms=5, error=syntax),
        stage_changed(job_id, 50, "compile", "STARTED", attempt=2),
        event(
            "MetricRecorded",
            job_id,
            55,
            stage="compile",
            attempt=2,
            name="parameters",
            value=1234.0,
            step=0,
            labels={"unit": "count"},
        ),
        stage_changed(job_id, 60, "compile", "SUCCEEDED", attempt=2, duration_ms=10),
        stage_changed(job_id, 70, "codegen", "STARTED"),
        event(
            "ArtifactStored",
            job_id,
            75,
            stage="codegen",
            attempt=1,
            name="model.py",
            media_type="text/x-python",
            uri=None,
            size_bytes=len(MODEL_PY),
            sha256=hashlib.sha256(MODEL_PY).hexdigest(),
            content=MODEL_PY,
        ),
        stage_changed(job_id, 80, "codegen", "SUCCEEDED", duration_ms=10),
        finished(job_id, 90, "SUCCEEDED", stages),
    ]


def at(offset_ms: int) -> datetime:
    return datetime.fromtimestamp((T0 + offset_ms) / 1000, UTC)


def outgoing(settings: Settings, events: Iterable[Event]) -> list[Outgoing]:
    topics = {
        "requests": settings.topics.requests,
        "events": settings.topics.events,
        "progress": settings.topics.progress,
    }
    return [
        Outgoing(topics[TOPIC_OF.get(event_type, "events")], event_type, record)
        for event_type, record in events
    ]


async def publish(settings: Settings, items: list[Outgoing]) -> None:
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        await publisher.publish(items)
    finally:
        await publisher.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Projector]:
    """A projector running in this event loop until the block ends."""
    projector = Projector(settings, default_codec())
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield projector
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within_s}s")
        await asyncio.sleep(0.05)


async def consumed(projector: Projector, messages: int) -> None:
    async def check() -> bool:
        return projector.stats.messages >= messages

    await eventually(check)


@pytest.fixture
async def settings(stack: RunningStack) -> Settings:
    """Fresh topics and a fresh migrated database for one test."""
    return await asyncio.to_thread(stack.isolated)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.require_database())
    yield conn
    await conn.close()


async def test_projects_a_job_history_into_jobs_stages_and_the_feed(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    history = successful_job(job_id)
    await publish(settings, outgoing(settings, history))
    async with running(settings) as projector:
        await consumed(projector, len(history))

    job = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", uuid.UUID(job_id))
    assert job is not None
    assert (job["status"], job["current_stage"], job["progress"]) == ("SUCCEEDED", "codegen", 100)
    assert (job["kind"], job["target"], job["tenant"]) == ("MODEL", "pytorch", "acme")
    assert job["stages"] == ["parse", "compile", "codegen"]
    assert job["idempotency_key"] == f"key-{job_id}"
    assert json.loads(job["labels"]) == {"team": "vision"}
    assert json.loads(job["spec"]) == {
        "dsl": "network Tiny {}",
        "code": None,
        "language": None,
        "stdin": None,
        "train": {"epochs": 2},
        "limits": {
            "timeout_seconds": 60,
            "memory_mb": None,
            "cpu_seconds": None,
            "processes": None,
            "output_kib": None,
        },
    }
    assert [job[name] for name in ("requested_at", "accepted_at", "started_at", "finished_at")] == [
        at(0),
        at(10),
        at(20),
        at(90),
    ]
    assert job["error"] is None

    stages = await db.fetch(
        "SELECT * FROM job_stages WHERE job_id = $1 ORDER BY started_at", uuid.UUID(job_id)
    )
    assert [
        (s["stage"], s["attempt"], s["status"], s["started_at"], s["finished_at"], s["duration_ms"])
        for s in stages
    ] == [
        ("parse", 1, "SUCCEEDED", at(20), at(30), 10),
        ("compile", 1, "FAILED", at(40), at(45), 5),
        ("compile", 2, "SUCCEEDED", at(50), at(60), 10),
        ("codegen", 1, "SUCCEEDED", at(70), at(80), 10),
    ]
    assert json.loads(stages[0]["summary"]) == {"layers": 2}
    assert json.loads(stages[1]["error"]) == {
        "code": "SHAPE_MISMATCH",
        "message": "bad",
        "details": {"line": 3},
    }

    feed = await db.fetch(
        "SELECT seq, event_id, type, stage, topic, payload FROM job_events WHERE job_id = $1 "
        "ORDER BY seq",
        uuid.UUID(job_id),
    )
    expected = [record["event_id"] for t, record in history if t != "JobRequested"]
    assert sorted(str(row["event_id"]) for row in feed) == sorted(expected)
    # Within a topic the feed keeps the order the events were produced in.
    lifecycle = [str(row["event_id"]) for row in feed if row["topic"] == settings.topics.events]
    assert lifecycle == [r["event_id"] for t, r in history if TOPIC_OF.get(t) is None]
    artifact = next(row for row in feed if row["type"] == "ArtifactStored")
    assert "content" not in json.loads(artifact["payload"])
    assert json.loads(artifact["payload"])["size_bytes"] == len(MODEL_PY)

    metric = await db.fetchrow("SELECT * FROM metrics WHERE job_id = $1", uuid.UUID(job_id))
    assert metric is not None
    assert (metric["stage"], metric["attempt"], metric["name"], metric["value"]) == (
        "compile",
        2,
        "parameters",
        1234.0,
    )
    stored = await db.fetchrow("SELECT * FROM artifacts WHERE job_id = $1", uuid.UUID(job_id))
    assert stored is not None
    assert (stored["name"], stored["content"], stored["size_bytes"]) == (
        "model.py",
        MODEL_PY,
        len(MODEL_PY),
    )


async def test_redelivered_events_are_projected_once(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    history = successful_job(job_id)
    # The same bytes twice: the second copy lands in later batches and in the same one.
    items = outgoing(settings, history)
    await publish(settings, items + items)
    async with running(settings) as projector:
        await consumed(projector, 2 * len(items))
        await publish(settings, items)
        await consumed(projector, 3 * len(items))

    assert projector.stats.applied == len(items)
    assert projector.stats.duplicates == 2 * len(items)
    counts = await db.fetchrow(
        "SELECT count(*) AS events, count(DISTINCT event_id) AS distinct_events,"
        " (SELECT count(*) FROM metrics) AS metrics, (SELECT count(*) FROM artifacts) AS artifacts,"
        " (SELECT count(*) FROM job_stages) AS stages FROM job_events"
    )
    assert counts is not None
    assert dict(counts) == {
        "events": len(items) - 1,
        "distinct_events": len(items) - 1,
        "metrics": 1,
        "artifacts": 1,
        "stages": 4,
    }
    status = await db.fetchval("SELECT status FROM jobs WHERE job_id = $1", uuid.UUID(job_id))
    assert status == "SUCCEEDED"


async def end_offsets(db: asyncpg.Connection) -> dict[tuple[str, int], int]:
    rows = await db.fetch(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = 'main'"
    )
    return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}


async def test_resumes_from_stored_offsets_after_a_restart(
    settings: Settings, db: asyncpg.Connection
) -> None:
    jobs = [str(uuid.uuid4()), str(uuid.uuid4())]
    histories = [outgoing(settings, successful_job(job_id)) for job_id in jobs]
    # Both halves use the same partitions, so the restart has to move stored offsets on.
    before = [item for history in histories for item in history[:8]]
    after = [item for history in histories for item in history[8:]]
    await publish(settings, before)
    async with running(settings) as projector:
        await consumed(projector, len(before))
    assert sum((await end_offsets(db)).values()) == len(before)
    statuses = await db.fetch("SELECT status FROM jobs")
    assert [row["status"] for row in statuses] == ["RUNNING", "RUNNING"]

    await publish(settings, after)
    async with running(settings) as restarted:
        await consumed(restarted, len(after))
        # Nothing more arrives: it read only what came after the stored offsets.
        await asyncio.sleep(0.5)
    assert restarted.stats.messages == len(after)
    assert sum((await end_offsets(db)).values()) == len(before) + len(after)
    per_job = await db.fetch("SELECT job_id, count(*) AS n FROM job_events GROUP BY job_id")
    assert {str(row["job_id"]): row["n"] for row in per_job} == dict.fromkeys(
        jobs, len(histories[0]) - 1
    )
    statuses = await db.fetch("SELECT status FROM jobs")
    assert [row["status"] for row in statuses] == ["SUCCEEDED", "SUCCEEDED"]


async def test_resumes_when_its_database_connection_is_terminated(
    settings: Settings, db: asyncpg.Connection
) -> None:
    jobs = [str(uuid.uuid4()), str(uuid.uuid4())]
    histories = [outgoing(settings, successful_job(job_id)) for job_id in jobs]
    before = [item for history in histories for item in history[:8]]
    after = [item for history in histories for item in history[8:]]
    await publish(settings, before)
    async with running(settings) as projector:
        await consumed(projector, len(before))
        terminated = await db.fetchval(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'stagecast-projector-main' AND datname = current_database()"
        )
        assert terminated
        await publish(settings, after)

        async def all_projected() -> bool:
            count = await db.fetchval("SELECT count(*) FROM job_events")
            return bool(count == len(before) + len(after) - 2)

        await eventually(all_projected)
    statuses = await db.fetch("SELECT status FROM jobs")
    assert [row["status"] for row in statuses] == ["SUCCEEDED", "SUCCEEDED"]
    assert sum((await end_offsets(db)).values()) == len(before) + len(after)


async def test_terminal_status_never_regresses_when_events_arrive_out_of_order(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    # The request topic lags behind: the whole lifecycle is projected before the request.
    lifecycle = [
        accepted(job_id, 10, ["parse"]),
        stage_changed(job_id, 20, "parse", "STARTED"),
        stage_changed(job_id, 30, "parse", "FAILED", duration_ms=10),
        finished(job_id, 40, "FAILED", []),
    ]
    late = [
        requested(job_id, 0),
        # A retry that started before the failure was known, and its progress.
        stage_changed(job_id, 35, "parse", "STARTED", attempt=2),
        progress(job_id, 36, "parse", 80.0, attempt=2),
        # A second terminal event must not replace the first outcome.
        finished(job_id, 50, "SUCCEEDED", ["parse"]),
    ]
    await publish(settings, outgoing(settings, lifecycle))
    async with running(settings) as projector:
        await consumed(projector, len(lifecycle))
        await publish(settings, outgoing(settings, late))
        await consumed(projector, len(lifecycle) + len(late))

    job = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", uuid.UUID(job_id))
    assert job is not None
    assert (job["status"], job["finished_at"], job["requested_at"]) == ("FAILED", at(40), at(0))
    assert job["stages"] == ["parse"]
    assert json.loads(job["spec"])["dsl"] == "network Tiny {}"
    first_attempt = await db.fetchrow(
        "SELECT status, finished_at FROM job_stages WHERE job_id = $1 AND attempt = 1",
        uuid.UUID(job_id),
    )
    assert first_attempt is not None
    assert tuple(first_attempt) == ("FAILED", at(30))


# The request's clock: the dispatcher's, or 50 ms ahead of it (the API on another machine).
@pytest.mark.parametrize("request_at", [0, 50])
async def test_a_request_on_the_broker_is_archived_before_the_answer_read_ahead_of_it(
    stack: RunningStack, request_at: int
) -> None:
    # One message per batch: each job's answer and end, read first, could make a batch of
    # their own ahead of the request; the answer asks the cut that reads the request too,
    # past the cut's time when the request's clock runs ahead.
    settings = await asyncio.to_thread(stack.isolated, projector_batch=1)
    jobs = [str(uuid.uuid4()) for _ in range(12)]
    requests = [requested(job_id, request_at) for job_id in jobs]
    answers = [
        e
        for job_id in jobs
        for e in (accepted(job_id, 5, []), finished(job_id, 9, "SUCCEEDED", []))
    ]
    await publish(settings, outgoing(settings, requests))
    await publish(settings, outgoing(settings, answers))
    async with running(settings) as projector:
        await consumed(projector, len(requests) + len(answers))

    conn = await asyncpg.connect(settings.require_database())
    try:
        rows = await conn.fetch("SELECT job_id, type FROM event_archive ORDER BY position")
    finally:
        await conn.close()
    histories: dict[str, list[str]] = {}
    for row in rows:
        histories.setdefault(str(row["job_id"]), []).append(row["type"])
    expected = ["JobRequested", "JobAccepted", "JobFinished"]
    assert histories == {job_id: expected for job_id in jobs}


async def test_a_late_progress_report_does_not_reopen_a_finished_stage(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    done = [
        accepted(job_id, 0, ["parse"]),
        stage_changed(job_id, 10, "parse", "STARTED"),
        stage_changed(job_id, 20, "parse", "SUCCEEDED", duration_ms=10),
    ]
    await publish(settings, outgoing(settings, done))
    async with running(settings) as projector:
        await consumed(projector, len(done))
        await publish(settings, outgoing(settings, [progress(job_id, 15, "parse", 40.0)]))
        await consumed(projector, len(done) + 1)

    stage = await db.fetchrow(
        "SELECT status, progress FROM job_stages WHERE job_id = $1", uuid.UUID(job_id)
    )
    assert stage is not None
    assert tuple(stage) == ("SUCCEEDED", 100)
    assert (
        await db.fetchval("SELECT progress FROM jobs WHERE job_id = $1", uuid.UUID(job_id)) == 100
    )


async def test_a_reused_idempotency_key_does_not_stall_the_projector(
    settings: Settings, db: asyncpg.Connection
) -> None:
    first, same_batch, later = (str(uuid.uuid4()) for _ in range(3))
    await publish(
        settings,
        outgoing(settings, [requested(first, 0, key="once"), requested(same_batch, 1, key="once")]),
    )
    async with running(settings) as projector:
        await consumed(projector, 2)
        await publish(settings, outgoing(settings, [requested(later, 2, key="once")]))
        await consumed(projector, 3)

    keys = await db.fetch("SELECT job_id, idempotency_key FROM jobs")
    # One job keeps the key (which one is up to partition order); the others come without it.
    assert {str(row["job_id"]) for row in keys} == {first, same_batch, later}
    assert sorted(str(row["idempotency_key"]) for row in keys) == ["None", "None", "once"]
    holder = next(str(row["job_id"]) for row in keys if row["idempotency_key"])
    assert holder != later


async def test_undecodable_messages_are_counted_and_skipped(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    good = successful_job(job_id)
    valid = default_codec().encode("JobFinished", finished(job_id, 99, "SUCCEEDED", [])[1])
    broken = [b"not avro at all", valid[:-3], b"\xc3\x01" + b"\x00" * 8 + b"body"]
    key = job_id.encode()
    items = outgoing(settings, good[:5])
    items += [
        Outgoing(settings.topics.events, "JobFinished", {}, key=key, raw=raw) for raw in broken
    ]
    items += outgoing(settings, good[5:])
    await publish(settings, items)
    async with running(settings) as projector:
        await consumed(projector, len(items))

    assert projector.stats.undecodable == len(broken)
    assert projector.stats.applied == len(good)
    assert await db.fetchval("SELECT count(*) FROM job_events") == len(good) - 1
    assert sum((await end_offsets(db)).values()) == len(items)
    assert await db.fetchval("SELECT status FROM jobs") == "SUCCEEDED"


async def test_text_postgres_cannot_store_is_kept_readable(
    settings: Settings, db: asyncpg.Connection
) -> None:
    job_id = str(uuid.uuid4())
    log_line = event(
        "LogEmitted",
        job_id,
        1,
        stage="execute",
        attempt=1,
        level="INFO",
        stream="stdout",
        message="nul\x00byte",
    )
    metric = event(
        "MetricRecorded",
        job_id,
        2,
        stage="train",
        attempt=1,
        name="loss",
        value=float("nan"),
        step=1,
        labels={},
    )
    summary = stage_changed(job_id, 3, "execute", "SUCCEEDED", summary='{"x": NaN}')
    await publish(settings, outgoing(settings, [log_line, metric, summary]))
    async with running(settings) as projector:
        await consumed(projector, 3)

    payloads = {
        row["type"]: json.loads(row["payload"])
        for row in await db.fetch("SELECT type, payload FROM job_events")
    }
    assert payloads["LogEmitted"]["message"] == "nul\ufffdbyte"
    assert payloads["MetricRecorded"]["value"] is None
    assert str(await db.fetchval("SELECT value FROM metrics")) == "nan"
    assert json.loads(await db.fetchval("SELECT summary FROM job_stages")) == '{"x": NaN}'


async def test_notify_arrives_after_commit_with_the_max_seq_and_the_jobs(
    settings: Settings, db: asyncpg.Connection
) -> None:
    notes: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(settings.require_database())
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: notes.put_nowait(args[3]))
    job_id = str(uuid.uuid4())
    history = successful_job(job_id)
    try:
        await publish(settings, outgoing(settings, history))
        async with running(settings) as projector:
            head, *jobs = (await asyncio.wait_for(notes.get(), 30)).split()
            # The row the notification announces is already visible to another session.
            assert await listener.fetchval("SELECT 1 FROM job_events WHERE seq = $1", int(head))
            assert jobs == [job_id]
            await consumed(projector, len(history))
            final = await db.fetchval("SELECT max(seq) FROM job_events")
            while int(head) < final:
                head = (await asyncio.wait_for(notes.get(), 10)).split()[0]
    finally:
        await listener.close()
    assert int(head) == final == projector.stats.last_seq


def spawn_projector(settings: Settings) -> subprocess.Popen[bytes]:
    """`stagecast projector` on `settings`'s topics and database, in batches of 40."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
        "DATABASE_URL": settings.require_database(),
        "STAGECAST_TOPIC_PREFIX": settings.topic_prefix,
        "STAGECAST_PROJECTOR_BATCH": "40",
    }
    # From the checkout's root: the process runs this checkout's code, not an installed one's.
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "projector"], env=env, cwd=ROOT)


async def test_sigkill_mid_stream_loses_and_doubles_nothing(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    jobs = [str(uuid.uuid4()) for _ in range(60)]
    items = [item for job_id in jobs for item in outgoing(settings, successful_job(job_id))]
    expected = {str(item.record["event_id"]) for item in items if item.event_type != "JobRequested"}
    process = spawn_projector(settings)
    try:

        async def produce_slowly() -> None:
            for start in range(0, len(items), 50):
                await publish(settings, items[start : start + 50])
                await asyncio.sleep(0.05)

        producing = asyncio.create_task(produce_slowly())

        async def some_projected() -> bool:
            return bool(await db.fetchval("SELECT count(*) > 100 FROM job_events"))

        await eventually(some_projected)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = await db.fetchval("SELECT count(*) FROM job_events")
        await producing
        assert killed_at < len(expected), "the kill should land mid-stream"
        process = spawn_projector(settings)

        async def all_projected() -> bool:
            return bool(await db.fetchval("SELECT count(*) >= $1 FROM job_events", len(expected)))

        await eventually(all_projected, within_s=60)
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, "SIGTERM is a clean shutdown"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    rows = await db.fetch("SELECT event_id, count(*) AS n FROM job_events GROUP BY event_id")
    assert {str(row["event_id"]) for row in rows} == expected
    assert max(row["n"] for row in rows) == 1
    statuses = await db.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    assert {row["status"]: row["n"] for row in statuses} == {"SUCCEEDED": len(jobs)}
    assert sum((await end_offsets(db)).values()) == len(items)
