"""What a worker remembers from the control topic, and how it reads it (no group, all of it)."""

from __future__ import annotations

import asyncio
import uuid

from streams.control import ControlListener, consumer_options
from streams.settings import Settings


async def test_listener_remembers_the_jobs_it_was_asked_to_cancel() -> None:
    listener = ControlListener()
    asked, other = str(uuid.uuid4()), str(uuid.uuid4())
    await listener.handle({"job_id": asked, "reason": "user asked"})
    await listener.handle({"job_id": asked, "reason": ""})
    assert listener.cancelled(asked)
    assert listener.reason(asked) == "user asked"  # the first reason stays
    assert not listener.cancelled(other)
    assert listener.reason(other) == ""


async def test_a_watched_job_is_stopped_by_its_cancel_and_no_other() -> None:
    listener = ControlListener()
    job, other = str(uuid.uuid4()), str(uuid.uuid4())
    with listener.watch(job) as stop, listener.watch(other) as other_stop:
        assert not stop.is_set()
        await listener.handle({"job_id": job, "reason": ""})
        await asyncio.wait_for(stop.wait(), 1)
        assert not other_stop.is_set()
    # A stage that starts after the cancel sees it at once.
    with listener.watch(job) as late:
        assert late.is_set()


def test_control_consumer_has_no_group_and_reads_the_topic_from_its_start() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers="broker:9092",
        app_id="workers",
        fetch_max_wait_ms=25,
        fetch_background_wait_ms=300,
    )
    options = consumer_options(settings)
    # In a group each message would reach one worker; every worker must see every cancel.
    assert options["group_id"] is None
    assert options["enable_auto_commit"] is False
    # A job cancelled before this worker started must not be started by it either.
    assert options["auto_offset_reset"] == "earliest"
    assert options["bootstrap_servers"] == "broker:9092"
    # Cancels are off a job's path: they wait as the other background readers do.
    assert options["fetch_max_wait_ms"] == 300


async def test_a_cancel_from_the_watchdog_marks_the_job_as_ended_elsewhere() -> None:
    listener = ControlListener()
    user, watchdog = str(uuid.uuid4()), str(uuid.uuid4())
    await listener.handle({"job_id": user, "reason": "", "source": "stagecast.api"})
    await listener.handle({"job_id": watchdog, "reason": "", "source": "stagecast.watchdog"})
    assert listener.cancelled(user) and not listener.ended_elsewhere(user)
    assert listener.cancelled(watchdog) and listener.ended_elsewhere(watchdog)
