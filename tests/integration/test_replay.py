"""Replay of a live stack's history into schemas of their own, compared with the live ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from api.client import StagecastClient
from projections.audit import verify_archive
from projections.replay import compare, replay
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.producer import Outgoing
from streams.stack import free_port
from tests.conftest import EXAMPLES, RunningStack
from tests.integration.test_projector import (
    consumed,
    eventually,
    outgoing,
    publish,
    requested,
    running,
    successful_job,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = (EXAMPLES / "tiny.neural").read_text()
BROKEN = (EXAMPLES / "invalid" / "unknown_layer.neural").read_text()
JOBS = 1_000


@pytest.fixture(scope="module")
def history(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """A stack of its own that has run JOBS jobs, a fifth of them failing."""
    settings = stack.isolated(state_dir=tmp_path_factory.mktemp("replay"), api_port=free_port())
    launcher = Launcher(settings)
    launcher.api_url = f"http://{settings.api_host}:{settings.api_port}"
    for name in ("worker", "projector", "api"):
        launcher.spawn(name)
    try:
        launcher.wait_ready(90)
        asyncio.run(asyncio.wait_for(_run_jobs(launcher), 300))
        yield launcher
    finally:
        launcher.stop()


async def _run_jobs(launcher: Launcher) -> None:
    async with StagecastClient(launcher.api_url, timeout=60) as client:
        for start in range(0, JOBS, 50):
            await asyncio.gather(
                *(
                    client.submit(BROKEN if n % 5 == 0 else TINY, labels={"n": str(n)})
                    for n in range(start, start + 50)
                )
            )
    conn = await asyncpg.connect(launcher.settings.require_database())
    try:

        async def all_finished() -> bool:
            done = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('SUCCEEDED', 'FAILED')"
            )
            return bool(done == JOBS)

        await eventually(all_finished, within_s=240)
    finally:
        await conn.close()


def replay_cli(launcher: Launcher, *args: str) -> subprocess.CompletedProcess[str]:
    settings = launcher.settings
    env = dict(
        os.environ,
        DATABASE_URL=settings.require_database(),
        KAFKA_BOOTSTRAP_SERVERS=settings.require_kafka(),
        STAGECAST_TOPIC_PREFIX=settings.topic_prefix,
    )
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_a_replay_from_the_topics_and_from_the_archive_matches_the_live_projections(
    history: Launcher,
) -> None:
    settings = history.settings
    url = settings.require_database()
    from_topics = await replay(settings, default_codec(), "replay_topics")
    from_archive = await replay(settings, default_codec(), "replay_archive", source="archive")
    assert from_topics.events >= JOBS * 8 and from_archive.events >= JOBS * 6
    for schema in ("replay_topics", "replay_archive"):
        diffs = await compare(url, schema)
        assert [d for d in diffs if not d.same] == [], schema
        jobs = next(d for d in diffs if d.table == "jobs")
        assert jobs.live_rows == jobs.replay_rows == JOBS
    conn = await asyncpg.connect(url)
    try:
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM replay_topics.jobs GROUP BY 1 ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [(r["status"], r["n"]) for r in statuses] == [("FAILED", JOBS // 5), ("SUCCEEDED", 800)]


async def test_compare_names_a_changed_live_row_and_replay_never_writes_the_live_schema(
    history: Launcher,
) -> None:
    url = history.settings.require_database()
    conn = await asyncpg.connect(url)
    try:
        job_id = await conn.fetchval("SELECT job_id FROM jobs WHERE status = 'SUCCEEDED' LIMIT 1")
        before = await conn.fetchval("SELECT count(*) FROM job_events")
        await conn.execute("UPDATE jobs SET status = 'FAILED' WHERE job_id = $1", job_id)
        try:
            done = replay_cli(history, "--into", "replay_cli", "--compare")
            after = await conn.fetchval("SELECT count(*) FROM job_events")
        finally:
            await conn.execute("UPDATE jobs SET status = 'SUCCEEDED' WHERE job_id = $1", job_id)
    finally:
        await conn.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "jobs" in done.stdout and "DIFFERENT" in done.stdout
    assert f"differs: ({job_id})" in done.stdout
    assert after == before
    again = replay_cli(history, "--into", "replay_cli", "--compare")
    assert again.returncode == 0 and "no difference" in again.stdout


def test_a_replay_refuses_the_live_schema_and_a_bad_start(history: Launcher) -> None:
    for args in (("--into", "public"), ("--into", "Bad-Name"), ("--into", "x", "--from", "soon")):
        done = replay_cli(history, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


async def test_the_dashboard_views_sum_up_the_history(history: Launcher) -> None:
    conn = await asyncpg.connect(history.settings.require_database())
    try:
        throughput = await conn.fetchrow(
            "SELECT sum(requested) AS requested, sum(ended) AS ended, sum(succeeded) AS ok, "
            "sum(failed) AS failed FROM dash_throughput"
        )
        latency = {r["stage"]: r for r in await conn.fetch("SELECT * FROM dash_stage_latency")}
        since = await conn.fetch(
            "SELECT * FROM dash_stage_latency_since(now() + interval '1 minute')"
        )
        failures = await conn.fetch(
            "SELECT stage, status, error_code, attempts, share FROM dash_failures "
            "WHERE stage = 'parse' ORDER BY status"
        )
        in_flight = await conn.fetchval("SELECT count(*) FROM dash_in_flight")
    finally:
        await conn.close()
    assert throughput is not None
    assert dict(throughput) == {"requested": JOBS, "ended": JOBS, "ok": 800, "failed": 200}
    assert set(latency) == {"parse", "compile", "codegen"}
    assert latency["parse"]["attempts"] == JOBS and latency["compile"]["attempts"] == 800
    for row in latency.values():
        assert 0 <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert since == []  # nothing ended in the future
    assert [tuple(r) for r in failures] == [
        ("parse", "FAILED", "DSL_UNKNOWN_LAYER", 200, Decimal("0.2000")),
        ("parse", "SUCCEEDED", "-", 800, Decimal("0.8000")),
    ]
    assert in_flight == 0


async def test_a_replay_skips_what_the_live_projector_skipped_and_refuses_a_foreign_schema(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    jobs = [str(uuid.uuid4()) for _ in range(3)]
    history = [event for job_id in jobs for event in successful_job(job_id)]
    broken = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"body"]
    items = outgoing(settings, history[:7])
    items += [
        Outgoing(settings.topics.events, "JobFinished", {}, key=jobs[0].encode(), raw=raw)
        for raw in broken
    ]
    # A copy of an event under its own id: read again, applied once.
    items += outgoing(settings, [*history[7:], history[3]])
    await publish(settings, items)
    async with running(settings) as projector:
        await consumed(projector, len(items))
    url = settings.require_database()

    from_topics = await replay(settings, default_codec(), "replay_bad")
    assert (from_topics.events, from_topics.skipped) == (len(items), len(broken))
    assert [d for d in await compare(url, "replay_bad") if not d.same] == []
    # The replay's own archive is a chain `stagecast audit verify` accepts.
    replayed = await asyncpg.connect(url, server_settings={"search_path": "replay_bad"})
    try:
        report = await verify_archive(replayed)
    finally:
        await replayed.close()
    assert report.intact and report.rows == len(history)
    # Again into the same schema: the earlier replay gives way to the new one.
    from_archive = await replay(settings, default_codec(), "replay_bad", source="archive")
    assert (from_archive.events, from_archive.skipped) == (len(history), 0)
    assert [d for d in await compare(url, "replay_bad") if not d.same] == []

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE SCHEMA keepsakes; CREATE TABLE keepsakes.notes (t text)")
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="not a replay's"):
        await replay(settings, default_codec(), "keepsakes")


async def test_a_request_sent_twice_under_two_event_ids_counts_once_live_and_in_a_replay(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    job_id = str(uuid.uuid4())
    history = successful_job(job_id)
    # A producer that sent its request twice, each time with a new event id; both are read in
    # one batch. Only the first is the job's request, whatever the batching.
    again = requested(job_id, 1, key=f"key-{job_id}")
    items = outgoing(settings, [history[0], again, *history[1:]])
    await publish(settings, items)
    async with running(settings) as projector:
        await consumed(projector, len(items))
    url = settings.require_database()
    conn = await asyncpg.connect(url)
    try:
        archived = await conn.fetch(
            "SELECT event_id::text FROM event_archive WHERE job_id = $1 AND type = 'JobRequested'",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    assert [row["event_id"] for row in archived] == [history[0][1]["event_id"]]
    await replay(settings, default_codec(), "replay_twice")
    assert [d for d in await compare(url, "replay_twice") if not d.same] == []


async def test_a_replay_from_a_time_rebuilds_only_what_was_sent_since(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    before, after = str(uuid.uuid4()), str(uuid.uuid4())
    await publish(settings, outgoing(settings, successful_job(before)))
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await publish(settings, outgoing(settings, successful_job(after)))
    async with running(settings) as projector:
        await consumed(projector, 2 * len(successful_job(after)))

    done = await replay(settings, default_codec(), "replay_since", since=since)
    assert (done.events, done.skipped) == (len(successful_job(after)), 0)
    conn = await asyncpg.connect(settings.require_database())
    try:
        jobs = await conn.fetch("SELECT job_id::text, status FROM replay_since.jobs")
        archived = await conn.fetchval("SELECT count(*) FROM replay_since.event_archive")
    finally:
        await conn.close()
    assert [tuple(row) for row in jobs] == [(after, "SUCCEEDED")]
    assert archived == len(successful_job(after))
