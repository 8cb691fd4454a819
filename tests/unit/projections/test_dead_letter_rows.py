"""A message on the dead-letter topic becomes one `dead_letters` row, whatever it holds."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from projections.dead_letters import WRONG_EVENT, recorded_letter
from schemas.codec import default_codec
from streams.envelope import Origin, dead_letter
from streams.settings import Settings
from tests.unit.schemas.sample_events import sample

TOPIC = "stagecast.deadletter"


def letter_bytes(**changes: Any) -> tuple[bytes, dict[str, Any]]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    origin = Origin("stagecast.events", 2, 41, b"job-key", b"not avro at all")
    outgoing = dead_letter(settings, origin, "BAD_MARKER", "message starts with '6e6f'")
    record = {**outgoing.record, **changes}
    return default_codec().encode("DeadLetter", record), record


def test_a_letter_keeps_its_origin_code_reason_and_the_refused_bytes() -> None:
    value, record = letter_bytes()
    row = recorded_letter(default_codec(), TOPIC, 1, 7, b"job-key", value)
    assert row.readable
    assert row.event_id == record["event_id"]
    assert (row.origin_topic, row.origin_partition, row.origin_offset) == (
        "stagecast.events",
        2,
        41,
    )
    assert (row.error_code, row.reason) == ("BAD_MARKER", "message starts with '6e6f'")
    assert (row.key, row.value) == (b"job-key", b"not avro at all")
    assert (row.letter_topic, row.letter_partition, row.letter_offset) == (TOPIC, 1, 7)
    assert row.occurred_at is not None and row.occurred_at.tzinfo is not None
    columns = row.row()
    assert columns[9:11] == (15, hashlib.sha256(b"not avro at all").hexdigest())


def test_the_same_letter_read_twice_is_the_same_row() -> None:
    value, _ = letter_bytes()
    first = recorded_letter(default_codec(), TOPIC, 0, 3, None, value)
    again = recorded_letter(default_codec(), TOPIC, 2, 90, None, value)
    assert first.event_id == again.event_id


def test_an_undecodable_letter_is_recorded_at_its_own_place() -> None:
    row = recorded_letter(default_codec(), TOPIC, 3, 12, b"k", b"\x01garbage")
    assert not row.readable
    assert (row.origin_topic, row.origin_partition, row.origin_offset) == (TOPIC, 3, 12)
    assert row.error_code == "BAD_MARKER"
    assert row.reason.startswith("the dead letter itself could not be read: BAD_MARKER")
    assert (row.key, row.value, row.source, row.occurred_at) == (b"k", b"\x01garbage", "", None)
    same = recorded_letter(default_codec(), TOPIC, 3, 12, b"k", b"\x01garbage")
    elsewhere = recorded_letter(default_codec(), TOPIC, 3, 13, b"k", b"\x01garbage")
    assert same.event_id == row.event_id != elsewhere.event_id


def test_an_empty_or_truncated_letter_is_recorded_too() -> None:
    value, _ = letter_bytes()
    assert recorded_letter(default_codec(), TOPIC, 0, 0, None, None).error_code == "TRUNCATED"
    truncated = recorded_letter(default_codec(), TOPIC, 0, 1, None, value[:-4])
    assert truncated.error_code == "TRUNCATED"
    assert truncated.value == value[:-4]


def test_another_event_type_on_the_dead_letter_topic_is_a_wrong_event() -> None:
    value = default_codec().encode("JobFinished", sample("JobFinished"))
    row = recorded_letter(default_codec(), TOPIC, 0, 5, None, value)
    assert (row.readable, row.error_code) == (False, WRONG_EVENT)
    assert "JobFinished" in row.reason


def test_text_a_column_cannot_hold_and_a_time_out_of_range_are_kept_storable() -> None:
    value, _ = letter_bytes(reason="nul \x00 inside", error_code="X\x00", occurred_at=10**17)
    row = recorded_letter(default_codec(), TOPIC, 0, 0, None, value)
    assert "\x00" not in row.reason + row.error_code
    assert row.reason == "nul \ufffd inside"
    assert row.occurred_at is None


def test_a_letter_time_is_kept() -> None:
    moment = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    value, _ = letter_bytes(occurred_at=int(moment.timestamp() * 1000))
    assert recorded_letter(default_codec(), TOPIC, 0, 0, None, value).occurred_at == moment
