"""The stage watchdog: an attempt that went silent (its worker died) ends STAGE_TIMEOUT."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from schemas.codec import default_codec
from streams.envelope import envelope
from tests.conftest import RunningStack, api_alone
from tests.integration.test_cancel import control_messages
from tests.integration.test_control import accepted_bytes, produce
from tests.integration.test_projector import eventually, running

pytestmark = pytest.mark.integration


def started_bytes(job_id: str, stage: str) -> bytes:
    record = envelope(job_id, "acme", "stagecast.stage.execute", str(uuid.uuid4()))
    record.update(
        stage=stage,
        attempt=1,
        status="STARTED",
        summary="{}",
        error=None,
        duration_ms=None,
        reported=0,
    )
    return default_codec().encode("StageChanged", record)


async def test_a_stage_attempt_that_went_silent_fails_with_stage_timeout(
    stack: RunningStack, tmp_path: Path
) -> None:
    settings = await asyncio.to_thread(stack.isolated, stage_timeout_s=2.0)
    silent, lively = str(uuid.uuid4()), str(uuid.uuid4())
    events = settings.topics.events
    # What a worker that died after STARTED leaves behind; and a job whose stage still talks.
    await produce(
        settings,
        (events, accepted_bytes(silent, ["execute"])),
        (events, started_bytes(silent, "execute")),
        (events, accepted_bytes(lively, ["execute"])),
        (events, started_bytes(lively, "execute")),
    )
    conn = await asyncpg.connect(settings.require_database())
    try:
        async with running(settings):
            with api_alone(settings, tmp_path / "api"):

                async def timed_out() -> bool:
                    status = await conn.fetchval(
                        "SELECT status FROM jobs WHERE job_id = $1", uuid.UUID(silent)
                    )
                    return bool(status == "FAILED")

                async def keep_talking() -> None:
                    while True:
                        await produce(settings, (events, started_bytes(lively, "execute")))
                        await asyncio.sleep(0.5)

                talking = asyncio.create_task(keep_talking())
                try:
                    await eventually(timed_out, within_s=30)
                finally:
                    talking.cancel()
            feed = await conn.fetch(
                "SELECT type, payload FROM job_events WHERE job_id = $1 ORDER BY seq",
                uuid.UUID(silent),
            )
            lively_status = await conn.fetchval(
                "SELECT status FROM jobs WHERE job_id = $1", uuid.UUID(lively)
            )
    finally:
        await conn.close()
    steps = [(row["type"], json.loads(row["payload"]).get("status")) for row in feed]
    assert steps == [
        ("JobAccepted", None),
        ("StageChanged", "STARTED"),
        ("StageChanged", "FAILED"),
        ("JobFinished", "FAILED"),
    ]
    error = json.loads(feed[-1]["payload"])["error"]
    assert error["code"] == "STAGE_TIMEOUT"
    assert lively_status == "RUNNING"
    cancels = [m for m in await control_messages(settings) if m["job_id"] == silent]
    assert cancels and all(str(m["source"]).endswith(".watchdog") for m in cancels)
