"""The event archive on the real broker and database: chained as it is written, checked after
an UPDATE and a DELETE, and a job's invariants read back from its archived bytes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from projections.audit import audit_job, verify_archive
from schemas.codec import default_codec
from streams.settings import Settings
from tests.conftest import RunningStack
from tests.integration.test_projector import consumed, outgoing, publish, running, successful_job

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def audit_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=settings.require_database())
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "audit", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_archive_holds_every_applied_event_chained_and_names_tampering(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    jobs = [str(uuid.uuid4()) for _ in range(3)]
    history = [event for job_id in jobs for event in successful_job(job_id)]
    # A copy of one event under its own id: consumed, not applied, not archived twice.
    await publish(settings, outgoing(settings, [*history, history[3]]))
    async with running(settings) as projector:
        await consumed(projector, len(history) + 1)
    conn = await asyncpg.connect(settings.require_database())
    try:
        rows = await conn.fetch("SELECT position, seq, type, value FROM event_archive ORDER BY 1")
        fed = await conn.fetchval("SELECT count(*) FROM job_events")
        report = await verify_archive(conn)
        audited = await audit_job(conn, default_codec(), uuid.UUID(jobs[0]))
        assert [row["position"] for row in rows] == list(range(1, len(history) + 1))
        # Every event is there as it arrived; JobRequested too (it is not in the feed).
        assert sum(row["seq"] is None for row in rows) == len(jobs) == len(rows) - fed
        assert {default_codec().decode(bytes(row["value"]))[0] for row in rows} == {
            t for t, _ in history
        }
        assert report.intact and report.rows == len(history)
        assert audited is not None and audited.problems == []
        assert len(audited.timeline) == len(successful_job(jobs[0]))
        assert "JobRequested" in audited.timeline[0] and "JobFinished" in audited.timeline[-1]
        clean = audit_cli(settings, "verify")
        assert clean.returncode == 0 and f"intact: {len(history)} events" in clean.stdout

        # An UPDATE of one row: the walk stops at that row.
        await conn.execute("UPDATE event_archive SET value = value || '\\x00' WHERE position = 7")
        changed = audit_cli(settings, "verify")
        assert changed.returncode == 1
        assert "BROKEN at position 7" in changed.stdout and "changed" in changed.stdout
        await conn.execute(
            "UPDATE event_archive SET value = substring(value from 1 for length(value) - 1) "
            "WHERE position = 7"
        )
        assert (await verify_archive(conn)).intact

        # A DELETE: the row after the gap no longer chains to the one before it.
        await conn.execute("DELETE FROM event_archive WHERE position = 12")
        deleted = await verify_archive(conn)
        assert deleted.broken is not None and deleted.broken.position == 13
        assert "deleted" in deleted.broken.reason

        # Cutting off the newest rows leaves a chain that holds, short of the feed's end.
        await conn.execute("DELETE FROM event_archive WHERE position >= 12")
        cut = await verify_archive(conn)
        assert cut.broken is None and cut.missing_tail == fed
        truncated = audit_cli(settings, "verify", "--json")
        assert truncated.returncode == 1 and '"missing_tail"' in truncated.stdout
    finally:
        await conn.close()


async def test_a_job_audit_names_a_broken_invariant_and_bad_input_gets_one_line(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    job_id = str(uuid.uuid4())
    history = successful_job(job_id)
    without_finish = [event for event in history if event[0] != "JobFinished"]
    await publish(settings, outgoing(settings, without_finish))
    async with running(settings) as projector:
        await consumed(projector, len(without_finish))
    unfinished = audit_cli(settings, "job", job_id)
    assert unfinished.returncode == 1
    assert "PROBLEM: 0 JobFinished events, not exactly one" in unfinished.stdout
    assert "JobAccepted" in unfinished.stdout
    for wrong, code in ((str(uuid.uuid4()), 5), ("not-a-uuid", 2)):
        done = audit_cli(settings, "job", wrong)
        assert done.returncode == code
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
