"""Whatever bytes arrive, decode answers with an event or a DecodeError, never anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, default_codec
from schemas.codec import CONFLUENT_MAGIC, MARKER
from tests.unit.schemas.sample_events import EVENT_TYPES, sample

CODEC = default_codec()
VALID_MESSAGES = [CODEC.encode(event_type, sample(event_type)) for event_type in EVENT_TYPES]
# Unit tests do no I/O, so hypothesis keeps no example database on disk.
FUZZ = settings(max_examples=600, database=None, suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_refuses(data: bytes) -> None:
    try:
        event_type, record = CODEC.decode(data)
    except DecodeError as error:
        assert error.code in {
            "BAD_MARKER",
            "UNKNOWN_FINGERPRINT",
            "UNKNOWN_SCHEMA_ID",
            "TRUNCATED",
            "TRAILING_BYTES",
            "INVALID",
        }
        assert str(error).startswith(f"{error.code}: ")
    else:
        assert event_type in CODEC.event_types
        assert isinstance(record, dict)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(sorted(CODEC.event_types)), st.binary(max_size=300))
def test_random_bodies_behind_a_known_header_never_raise_anything_else(
    event_type: str, body: bytes
) -> None:
    _decodes_or_refuses(MARKER + CODEC.fingerprint(event_type) + body)


@FUZZ
@given(st.integers(min_value=0, max_value=20), st.binary(max_size=300))
def test_random_bodies_behind_a_confluent_header_never_raise_anything_else(
    schema_id: int, body: bytes
) -> None:
    _decodes_or_refuses(CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + body)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes overwritten, inserted or deleted."""
    message = bytearray(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(message)))
        action = draw(st.sampled_from(["overwrite", "insert", "delete"]))
        byte = draw(st.integers(min_value=0, max_value=255))
        if action == "insert" or at == len(message):
            message.insert(at, byte)
        elif action == "overwrite":
            message[at] = byte
        else:
            del message[at]
    return bytes(message)


@FUZZ
@given(mutated_messages())
def test_mutated_valid_messages_never_raise_anything_but_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(VALID_MESSAGES), st.integers(min_value=10), st.binary(min_size=1))
def test_spliced_messages_never_raise_anything_but_decode_error(
    message: bytes, cut: int, tail: bytes
) -> None:
    _decodes_or_refuses(message[: min(cut, len(message))] + tail)
