"""The control topic and the stages this deployment does not run, on the real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from api.client import ApiRequestError, StagecastClient
from schemas.codec import default_codec
from streams.control import ControlFeed, ControlListener
from streams.envelope import envelope
from streams.intake import Intake
from streams.producer import EventPublisher
from streams.settings import Settings
from tests.conftest import Pipeline, RunningStack
from tests.integration.test_dead_letters import Letter, dead_letters, where
from tests.integration.test_projector import eventually

pytestmark = pytest.mark.integration


def cancel_bytes(job_id: str) -> bytes:
    record = envelope(job_id, "acme", "test", str(uuid.uuid4()))
    record.update(reason="changed my mind")
    return default_codec().encode("CancelRequested", record)


def command_bytes(job_id: str, stage: str) -> bytes:
    record = envelope(job_id, "acme", "test", str(uuid.uuid4()))
    record.update(
        stage=stage,
        attempt=1,
        plan=[stage],
        spec=json.dumps({"dsl": "network X {}"}),
        input="{}",
        deadline_ms=None,
    )
    return default_codec().encode("StageCommand", record)


def accepted_bytes(job_id: str, stages: list[str]) -> bytes:
    record = envelope(job_id, "acme", "test", str(uuid.uuid4()))
    record.update(kind="MODEL", target="pytorch", stages=stages, idempotency_key=None)
    return default_codec().encode("JobAccepted", record)


async def produce(settings: Settings, *messages: tuple[str, bytes]) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    try:
        landed = [await producer.send_and_wait(topic, value, key=b"k") for topic, value in messages]
    finally:
        await producer.stop()
    return [(meta.topic, meta.partition, meta.offset) for meta in landed]


@pytest.fixture
async def publisher(stack: RunningStack) -> AsyncIterator[EventPublisher]:
    settings = await asyncio.to_thread(stack.isolated)
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    yield publisher
    await publisher.stop()


async def test_every_worker_hears_every_cancel_sent_before_and_after_it_started(
    publisher: EventPublisher,
) -> None:
    settings = publisher.settings
    before, after = str(uuid.uuid4()), str(uuid.uuid4())
    await produce(settings, (settings.topics.control, cancel_bytes(before)))
    listeners = [ControlListener(), ControlListener()]
    feeds = [
        ControlFeed(
            settings, Intake("CancelRequested", x.handle, publisher, default_codec(), settings)
        )
        for x in listeners
    ]
    for feed in feeds:
        await feed.start()
    try:
        # What was on the topic before is known once start() returns.
        assert all(listener.cancelled(before) for listener in listeners)
        cancel, garbage = cancel_bytes(after), f"garbage {uuid.uuid4()}".encode()
        landed = await produce(
            settings, (settings.topics.control, cancel), (settings.topics.control, garbage)
        )

        async def both_heard() -> bool:
            return all(listener.cancelled(after) for listener in listeners)

        await eventually(both_heard)
        # Each worker dead-letters the garbage it read: the same letter (one event id) twice.
        letters = await dead_letters(settings, 2)
    finally:
        for feed in feeds:
            await feed.stop()
    assert [where(letter) for letter in letters] == [landed[1], landed[1]]
    assert {letter["value"] for letter in letters} == {garbage}
    assert len({letter["event_id"] for letter in letters}) == 1
    assert letters[0]["error_code"] == "BAD_MARKER"


async def letters_for(pipeline: Pipeline, spots: set[tuple[str, int, int]]) -> list[Letter]:
    """The dead letters of messages at `spots`, once each of them has one."""
    while True:
        found = [x for x in await dead_letters(pipeline.settings, 0) if where(x) in spots]
        if {where(letter) for letter in found} == spots:
            return found
        await asyncio.sleep(0.2)


async def test_the_worker_reads_control_and_dead_letters_what_is_not_a_cancel(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    job_id = str(uuid.uuid4())
    control = settings.topics.control
    garbage = f"garbage {uuid.uuid4()}".encode()
    accepted = accepted_bytes(job_id, ["parse"])  # well-formed, but not a cancel
    landed = await produce(settings, (control, cancel_bytes(job_id)), (control, garbage))
    landed += await produce(settings, (control, accepted))
    letters = await asyncio.wait_for(letters_for(pipeline, set(landed[1:])), 30)
    codes = {where(letter): letter["error_code"] for letter in letters}
    assert codes == {landed[1]: "BAD_MARKER", landed[2]: "WRONG_EVENT"}
    # The cancel, read before both, is no dead letter: the worker logged it and reads on.
    assert landed[0] not in {where(x) for x in await dead_letters(settings, 0)}
    assert pipeline.launcher.children["worker"].poll() is None
    log = (pipeline.launcher.state_dir / "worker.log").read_text(errors="replace")
    assert f"cancel requested for job {job_id}" in log


async def test_commands_for_stages_not_run_here_fail_the_job_or_are_dead_lettered(
    restricted: Pipeline,
) -> None:
    settings = restricted.settings
    job_id = str(uuid.uuid4())
    train = settings.topics.stage("train")
    garbage = [(train, f"garbage {uuid.uuid4()}".encode()), (train, b"\xc3\x01" + bytes(8))]
    landed = await produce(settings, *garbage)
    await produce(
        settings,
        (settings.topics.events, accepted_bytes(job_id, ["train"])),
        (train, command_bytes(job_id, "train")),
    )
    letters = await asyncio.wait_for(letters_for(restricted, set(landed)), 30)
    assert {where(x): x["error_code"] for x in letters} == {
        landed[0]: "BAD_MARKER",
        landed[1]: "UNKNOWN_FINGERPRINT",
    }

    async with StagecastClient(restricted.api_url) as client:

        async def failed() -> bool:
            try:
                return bool((await client.job(job_id))["status"] == "FAILED")
            except ApiRequestError:  # not projected yet
                return False

        await eventually(failed, within_s=60)
        feed = [event async for event in client.events(job_id)]
        view = await client.job(job_id)
    steps = [
        " ".join(str(e.data[k]) for k in ("stage", "status") if k in e.data) or e.type
        for e in feed
        if e.type != "JobAccepted"
    ]
    assert [e.type for e in feed] == ["JobAccepted", "StageChanged", "StageChanged", "JobFinished"]
    assert steps == ["train STARTED", "train FAILED", "FAILED"]
    assert feed[2].data["error"]["code"] == feed[3].data["error"]["code"] == "STAGE_UNAVAILABLE"
    assert view["error"]["code"] == "STAGE_UNAVAILABLE"
    assert [(s["stage"], s["status"]) for s in view["stages"]] == [("train", "FAILED")]
