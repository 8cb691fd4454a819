"""Dead letters: what they keep, how they are identified, and that they always fit the broker."""

from __future__ import annotations

import hashlib

from schemas.codec import default_codec
from streams.envelope import Origin, dead_letter
from streams.settings import Settings


def settings(max_message_bytes: int = 1_000_000) -> Settings:
    return Settings(_env_file=None, max_message_bytes=max_message_bytes)  # type: ignore[call-arg]


def test_a_dead_letter_keeps_the_bytes_the_key_and_where_they_came_from() -> None:
    origin = Origin("stagecast.events", 3, 41, b"job-key", b"\x00garbage")
    letter = dead_letter(settings(), origin, "BAD_MARKER", "not an event")
    record = letter.record
    assert letter.topic == "stagecast.deadletter"
    assert letter.key == b"job-key"
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "stagecast.events",
        3,
        41,
    )
    assert (record["key"], record["value"]) == (b"job-key", b"\x00garbage")
    assert (record["error_code"], record["reason"]) == ("BAD_MARKER", "not an event")
    event_type, decoded = default_codec().decode(default_codec().encode(letter.event_type, record))
    assert event_type == "DeadLetter"
    assert decoded["value"] == b"\x00garbage"


def test_the_same_message_gives_the_same_letter_id_and_another_offset_another() -> None:
    first = dead_letter(settings(), Origin("t", 0, 1, None, b"x"), "BAD_MARKER", "a")
    again = dead_letter(settings(), Origin("t", 0, 1, None, b"x"), "BAD_MARKER", "b")
    elsewhere = dead_letter(settings(), Origin("t", 0, 2, None, b"x"), "BAD_MARKER", "a")
    assert first.record["event_id"] == again.record["event_id"]
    assert first.record["event_id"] != elsewhere.record["event_id"]


def test_a_long_reason_is_cut() -> None:
    letter = dead_letter(settings(), Origin("t", 0, 1, None, b"x"), "INVALID", "why " * 1000)
    assert len(letter.record["reason"]) == 500


def test_a_value_too_big_to_forward_is_replaced_by_its_size_and_hash() -> None:
    small = settings(max_message_bytes=4096)
    big = b"\xc3\x01" + b"z" * 3000
    letter = dead_letter(small, Origin("t", 0, 1, b"k", big), "INVALID", "bad body")
    assert letter.record["value"] == b""
    assert letter.record["key"] == b"k"
    reason = letter.record["reason"]
    assert reason.startswith("bad body")
    assert f"{len(big)}-byte" in reason
    assert hashlib.sha256(big).hexdigest() in reason
    assert len(default_codec().encode(letter.event_type, letter.record)) <= 4096
    fits = b"\xc3\x01" + b"z" * 1000
    assert dead_letter(small, Origin("t", 0, 1, b"k", fits), "INVALID", "x").record["value"] == fits
