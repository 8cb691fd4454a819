"""What an Intake takes for an outage (retried) and what for the message's fault (dead letter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from schemas.codec import default_codec
from streams import intake as intake_module
from streams.envelope import Origin, envelope
from streams.intake import Intake
from streams.producer import EventPublisher, Outgoing
from streams.settings import Settings

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


class Letters:
    """Where the Intake would publish dead letters: kept in a list (no broker in unit tests)."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def publish(self, items: list[Outgoing]) -> None:
        self.sent.extend(items)


def cancel_origin() -> Origin:
    record = envelope(
        "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
        "acme",
        "test",
        "0b6a6c1e-0000-4000-8000-000000000099",
    )
    record["reason"] = ""
    return Origin("control", 0, 1, None, default_codec().encode("CancelRequested", record))


@pytest.mark.parametrize(
    "outage",
    [
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError(111, "Connection refused"),
        OSError(113, "No route to host"),
        TimeoutError(),
        KafkaConnectionError("broker gone"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_outage_is_waited_out_and_the_message_handled_after_it(
    outage: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "_RETRY_FIRST_S", 0.0)
    calls: list[Mapping[str, Any]] = []

    async def handler(record: Mapping[str, Any]) -> None:
        calls.append(record)
        if len(calls) < 3:
            raise outage

    letters = Letters()
    intake = Intake(
        "CancelRequested", handler, cast(EventPublisher, letters), default_codec(), SETTINGS
    )
    await intake.receive(cancel_origin())
    assert len(calls) == 3
    assert letters.sent == []


async def test_a_handler_bug_is_dead_lettered_once() -> None:
    async def handler(record: Mapping[str, Any]) -> None:
        raise KeyError("no such field")

    letters = Letters()
    intake = Intake(
        "CancelRequested", handler, cast(EventPublisher, letters), default_codec(), SETTINGS
    )
    await intake.receive(cancel_origin())
    assert [letter.record["error_code"] for letter in letters.sent] == ["HANDLER_CRASHED"]
