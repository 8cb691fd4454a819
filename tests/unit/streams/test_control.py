"""What a worker remembers from the control topic, and how it reads it (no group, from now on)."""

from __future__ import annotations

import uuid

from streams.control import ControlListener, consumer_options
from streams.settings import Settings


async def test_listener_remembers_the_jobs_it_was_asked_to_cancel() -> None:
    listener = ControlListener()
    asked, other = str(uuid.uuid4()), str(uuid.uuid4())
    await listener.handle({"job_id": asked, "reason": "user asked"})
    await listener.handle({"job_id": asked, "reason": ""})
    assert listener.cancelled(asked)
    assert not listener.cancelled(other)


def test_control_consumer_has_no_group_and_starts_at_the_end() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers="broker:9092",
        app_id="workers",
        fetch_max_wait_ms=25,
    )
    options = consumer_options(settings)
    # In a group each message would reach one worker; every worker must see every cancel.
    assert options["group_id"] is None
    assert options["enable_auto_commit"] is False
    # A cancel sent before this worker started is about work it never took on.
    assert options["auto_offset_reset"] == "latest"
    assert options["bootstrap_servers"] == "broker:9092"
    assert options["fetch_max_wait_ms"] == 25
