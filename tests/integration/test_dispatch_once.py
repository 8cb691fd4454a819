"""A job id is dispatched once: copies of a request are dropped, another body is a conflict."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

from schemas.codec import default_codec
from streams.envelope import envelope
from streams.producer import EventPublisher, Outgoing, event_id_for
from tests.conftest import EXAMPLES, Pipeline

pytestmark = pytest.mark.integration

TINY = (EXAMPLES / "tiny.neural").read_text()


def request(job_id: str, dsl: str) -> dict[str, Any]:
    record = envelope(job_id, "acme", "other-system", event_id_for(job_id, uuid.uuid4()))
    record.update(
        kind="MODEL",
        dsl=dsl,
        code=None,
        target="pytorch",
        stages=[],
        train=None,
        limits=None,
        labels={},
        idempotency_key=None,
    )
    return record


async def produce(pipeline: Pipeline, *records: dict[str, Any]) -> None:
    publisher = EventPublisher(pipeline.settings, default_codec())
    await publisher.start()
    try:
        topic = pipeline.settings.topics.requests
        await publisher.publish([Outgoing(topic, "JobRequested", r) for r in records])
    finally:
        await publisher.stop()


async def feed_when_quiet(pipeline: Pipeline, job_id: str) -> list[tuple[str, Any]]:
    """The job's feed once it has ended and nothing more came for a second."""
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        deadline = time.monotonic() + 60
        last, quiet_since = -1, time.monotonic()
        while True:
            count = await conn.fetchval(
                "SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(job_id)
            )
            ended = await conn.fetchval(
                "SELECT status FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
            ) in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELLED")
            if count != last:
                last, quiet_since = count, time.monotonic()
            elif ended and time.monotonic() - quiet_since > 1.5:
                break
            assert time.monotonic() < deadline, "the job did not settle"
            await asyncio.sleep(0.1)
        rows = await conn.fetch(
            "SELECT type, payload FROM job_events WHERE job_id = $1 ORDER BY seq",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    return [(row["type"], json.loads(row["payload"])) for row in rows]


async def test_copies_of_a_dispatched_request_do_not_run_the_job_again(
    pipeline: Pipeline,
) -> None:
    job_id = str(uuid.uuid4())
    first = request(job_id, TINY)
    copy = {**first, "event_id": str(uuid.uuid4()), "occurred_at": first["occurred_at"] + 5}
    await produce(pipeline, first, copy, first)
    feed = await feed_when_quiet(pipeline, job_id)
    kinds = [kind for kind, _ in feed]
    assert kinds.count("JobAccepted") == 1
    assert kinds.count("JobFinished") == 1
    assert kinds.count("StageChanged") == 6
    assert feed[-1][1]["status"] == "SUCCEEDED"
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        dispatched = await conn.fetchval(
            "SELECT dispatched FROM job_dispatches WHERE job_id = $1", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    assert dispatched is True


async def test_another_body_under_a_dispatched_job_id_is_rejected_on_its_feed(
    pipeline: Pipeline,
) -> None:
    job_id = str(uuid.uuid4())
    await produce(pipeline, request(job_id, TINY))
    await produce(pipeline, request(job_id, TINY.replace("Tiny", "Other")))
    feed = await feed_when_quiet(pipeline, job_id)
    kinds = [kind for kind, _ in feed]
    rejections = [data for kind, data in feed if kind == "JobRejected"]
    assert len(rejections) == 1
    assert rejections[0]["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert kinds.count("JobFinished") == 1
    assert kinds.count("StageChanged") == 6
    finished = next(data for kind, data in feed if kind == "JobFinished")
    assert finished["status"] == "SUCCEEDED"
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        job = await conn.fetchrow(
            "SELECT status, error FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
        )
        artifacts = await conn.fetchval(
            "SELECT count(*) FROM artifacts WHERE job_id = $1", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    assert job is not None and (job["status"], job["error"]) == ("SUCCEEDED", None)
    assert artifacts == 1
