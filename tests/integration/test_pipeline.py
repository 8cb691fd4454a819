"""The whole pipeline on the real embedded broker and database, driven through the HTTP API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from api.client import ApiRequestError, FeedEvent, StagecastClient
from schemas.codec import default_codec
from streams.demo import expectation
from tests.conftest import EXAMPLES, RESTRICTED_STAGES, Pipeline
from tests.topics import Decoded, events_from_start

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
FEED_TIMEOUT = 60


async def follow(client: StagecastClient, job_id: str, after: int | None = None) -> list[FeedEvent]:
    async def collect() -> list[FeedEvent]:
        return [event async for event in client.events(job_id, after)]

    return await asyncio.wait_for(collect(), FEED_TIMEOUT)


LIFECYCLE = {"JobAccepted", "JobRejected", "StageChanged", "JobFinished"}


def steps(events: list[FeedEvent]) -> list[str]:
    """The job's lifecycle on its feed (progress events, on their own topic, are left out)."""
    out = []
    for event in events:
        if event.type not in LIFECYCLE:
            continue
        if event.type == "StageChanged":
            out.append(f"{event.data['stage']} {event.data['status']}")
        elif event.type == "JobFinished":
            out.append(f"JobFinished {event.data['status']}")
        else:
            out.append(event.type)
    return out


COMPILE_JOB = [
    "JobAccepted",
    "parse STARTED",
    "parse SUCCEEDED",
    "compile STARTED",
    "compile SUCCEEDED",
    "codegen STARTED",
    "codegen SUCCEEDED",
    "JobFinished SUCCEEDED",
]


async def test_digits_cnn_feed_shows_every_stage_in_order(pipeline: Pipeline) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(DIGITS)
        events = await follow(client, accepted["job_id"])
        view = await client.job(accepted["job_id"])
    assert steps(events) == COMPILE_JOB
    # The generated module, sent on the progress topic, sits inside its stage on the feed.
    everything = [f"{e.type} {e.data.get('status', '')}".strip() for e in events]
    assert everything.index("ArtifactStored") == everything.index("JobFinished SUCCEEDED") - 2
    seqs = [event.seq for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert view["status"] == "SUCCEEDED"
    assert [(s["stage"], s["status"]) for s in view["stages"]] == [
        ("parse", "SUCCEEDED"),
        ("compile", "SUCCEEDED"),
        ("codegen", "SUCCEEDED"),
    ]
    assert all(s["duration_ms"] is not None for s in view["stages"])
    compiled = view["stages"][1]["summary"]
    assert compiled["total_params"] == 13706

    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        job_id = uuid.UUID(accepted["job_id"])
        status = await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id)
        rows = await conn.fetch(
            "SELECT type, stage, payload->>'status' AS status FROM job_events "
            "WHERE job_id = $1 AND topic = $2 ORDER BY seq",
            job_id,
            pipeline.settings.topics.events,
        )
        stage_rows = await conn.fetch(
            "SELECT stage, status FROM job_stages WHERE job_id = $1 ORDER BY started_at", job_id
        )
    finally:
        await conn.close()
    assert status == "SUCCEEDED"
    from_db = [
        f"{r['stage']} {r['status']}"
        if r["type"] == "StageChanged"
        else (f"JobFinished {r['status']}" if r["type"] == "JobFinished" else r["type"])
        for r in rows
    ]
    assert from_db == COMPILE_JOB
    artifacts = await _artifacts(pipeline, job_id)
    assert artifacts == [("model.py", "text/x-python")]
    assert [(r["stage"], r["status"]) for r in stage_rows] == [
        ("parse", "SUCCEEDED"),
        ("compile", "SUCCEEDED"),
        ("codegen", "SUCCEEDED"),
    ]


async def _artifacts(pipeline: Pipeline, job_id: uuid.UUID) -> list[tuple[str, str]]:
    """The artifacts projected for a job (progress events may land after JobFinished)."""
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        for _ in range(100):
            rows = await conn.fetch(
                "SELECT name, media_type FROM artifacts WHERE job_id = $1", job_id
            )
            if rows:
                return [(r["name"], r["media_type"]) for r in rows]
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return []


INVALID = sorted((EXAMPLES / "invalid").glob("*.neural"))
SOURCES = {path.stem: path.read_text() for path in INVALID}


@pytest.mark.parametrize("name", sorted(SOURCES))
async def test_invalid_example_fails_with_its_code_and_line(pipeline: Pipeline, name: str) -> None:
    source = SOURCES[name]
    codes, line = expectation(source)
    assert codes, f"{name} has no '# expect:' comment"
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(source)
        events = await follow(client, accepted["job_id"])
        view = await client.job(accepted["job_id"])
    assert events[-1].type == "JobFinished"
    assert events[-1].data["status"] == "FAILED"
    assert view["status"] == "FAILED"
    assert view["error"]["code"] in codes
    details = view["error"]["details"]
    assert details["problems"], "a failed DSL job lists its problems"
    assert details["line"] is not None and details["column"] is not None
    if line is not None:
        assert details["line"] == line


async def _dead_letters(pipeline: Pipeline, wanted: bytes) -> dict[str, Any]:
    """The dead letter of the message `wanted`, once it is on the topic."""

    def letters(found: list[Decoded]) -> list[dict[str, Any]]:
        return [record for kind, record in found if kind == "DeadLetter"]

    found = await events_from_start(
        pipeline.settings,
        [pipeline.settings.topics.deadletter],
        lambda got: any(letter["value"] == wanted for letter in letters(got)),
        FEED_TIMEOUT,
    )
    return next(letter for letter in letters(found) if letter["value"] == wanted)


async def test_garbage_on_requests_is_dead_lettered_and_the_next_job_completes(
    pipeline: Pipeline,
) -> None:
    garbage = b"\xc3\x01not an avro message " + uuid.uuid4().bytes
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.settings.require_kafka())
    await producer.start()
    try:
        await producer.send_and_wait(pipeline.settings.topics.requests, garbage, key=b"junk")
    finally:
        await producer.stop()
    letter = await _dead_letters(pipeline, garbage)
    assert letter["source_topic"] == pipeline.settings.topics.requests
    assert letter["reason"]
    assert letter["error_code"] in {"UNKNOWN_FINGERPRINT", "TRUNCATED", "INVALID"}
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(DIGITS)
        events = await follow(client, accepted["job_id"])
    assert steps(events)[-1] == "JobFinished SUCCEEDED"


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    pipeline: Pipeline,
) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(DIGITS)
        job_id = accepted["job_id"]
        first: FeedEvent | None = None
        async for event in client.events(job_id):
            first = event
            break  # drop the connection after the first event
        assert first is not None
        everything = await follow(client, job_id)
        rest = await follow(client, job_id, after=first.seq)
        tail = await follow(client, job_id, after=everything[4].seq)
    assert everything[0] == first
    assert rest == everything[1:]
    assert tail == everything[5:]


async def test_same_idempotency_key_gives_one_job(pipeline: Pipeline) -> None:
    key = f"key-{uuid.uuid4()}"
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        # Concurrent retries, long before the first one is projected.
        answers = await asyncio.gather(
            *(http.post("/jobs", json={"dsl": DIGITS, "idempotency_key": key}) for _ in range(6))
        )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 200, 202]
    job_ids = {a.json()["job_id"] for a in answers}
    assert len(job_ids) == 1
    assert all(a.json()["duplicate"] for a in answers if a.status_code == 200)
    async with StagecastClient(pipeline.api_url) as client:
        first = {"job_id": job_ids.pop()}
        await follow(client, first["job_id"])
        later = await client.submit(DIGITS, idempotency_key=key)
    assert later["job_id"] == first["job_id"]
    assert later["status"] == "SUCCEEDED"
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        jobs = await conn.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key)
        accepted = await conn.fetchval(
            "SELECT count(*) FROM job_events WHERE job_id = $1 AND type = 'JobAccepted'",
            uuid.UUID(first["job_id"]),
        )
    finally:
        await conn.close()
    assert jobs == 1
    assert accepted == 1


async def test_same_idempotency_key_with_another_body_is_a_conflict(pipeline: Pipeline) -> None:
    key = f"key-{uuid.uuid4()}"
    async with StagecastClient(pipeline.api_url) as client:
        first = await client.submit(DIGITS, idempotency_key=key)
        await follow(client, first["job_id"])
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        other_dsl = await http.post(
            "/jobs", json={"dsl": DIGITS + "\n# changed", "idempotency_key": key}
        )
        other_labels = await http.post(
            "/jobs", json={"dsl": DIGITS, "idempotency_key": key, "labels": {"a": "b"}}
        )
    for response in (other_dsl, other_labels):
        assert response.status_code == 409
        assert response.json()["error_code"] == "IDEMPOTENCY_CONFLICT"


async def test_stages_a_deployment_does_not_run_are_refused_with_stage_unavailable(
    restricted: Pipeline,
) -> None:
    async with httpx.AsyncClient(base_url=restricted.api_url) as http:
        for stages, unavailable in (
            (["execute"], ["execute"]),
            (["execute", "train"], ["execute", "train"]),
            (["train"], ["train"]),
        ):
            response = await http.post("/jobs", json={"dsl": DIGITS, "stages": stages})
            assert response.status_code == 422
            assert response.json()["error_code"] == "STAGE_UNAVAILABLE"
            assert response.json()["details"]["unavailable"] == unavailable
            assert response.json()["details"]["available"] == list(RESTRICTED_STAGES)


async def test_kafka_request_for_unavailable_stage_is_rejected_on_the_feed(
    restricted: Pipeline,
) -> None:
    """Another system producing straight into Kafka gets a JobRejected, not silence."""
    from api.jobs import job_requested
    from api.models import JobSubmission

    record = job_requested(JobSubmission(dsl=DIGITS, stages=["train"]), "default", "other-system")
    value = default_codec().encode("JobRequested", record)
    producer = AIOKafkaProducer(bootstrap_servers=restricted.settings.require_kafka())
    await producer.start()
    try:
        await producer.send_and_wait(
            restricted.settings.topics.requests, value, key=record["job_id"].encode()
        )
    finally:
        await producer.stop()
    async with StagecastClient(restricted.api_url) as client:
        # Produced straight into Kafka: the job is known (its feed opens) once projected.
        for _ in range(100):
            try:
                view = await client.job(record["job_id"])
                break
            except ApiRequestError:
                await asyncio.sleep(0.1)
        events = await follow(client, record["job_id"])
        view = await client.job(record["job_id"])
    assert [e.type for e in events] == ["JobRejected"]
    assert events[0].data["error"]["code"] == "STAGE_UNAVAILABLE"
    assert view["status"] == "REJECTED"
