"""The codec's contract: round trips, header layout, and a typed error for every bad message."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from schemas import Codec, DecodeError, default_codec
from schemas.codec import MARKER
from tests.unit.schemas.sample_events import EVENT_TYPES, sample

CODEC = default_codec()


def _decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(data)
    return caught.value


def test_knows_every_bundled_event_type() -> None:
    assert set(EVENT_TYPES) == CODEC.event_types


def test_default_codec_is_loaded_once() -> None:
    assert default_codec() is default_codec()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_round_trips_a_realistic_record(event_type: str) -> None:
    record = sample(event_type)
    assert CODEC.decode(CODEC.encode(event_type, record)) == (event_type, record)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_message_is_marker_then_fingerprint_then_body(event_type: str) -> None:
    message = CODEC.encode(event_type, sample(event_type))
    assert message[:2] == b"\xc3\x01"
    assert message[2:10] == CODEC.fingerprint(event_type)


def test_every_event_type_has_its_own_fingerprint() -> None:
    fingerprints = {CODEC.fingerprint(event_type) for event_type in EVENT_TYPES}
    assert len(fingerprints) == len(EVENT_TYPES)
    assert all(len(fingerprint) == 8 for fingerprint in fingerprints)


def test_timestamps_and_ids_stay_plain_ints_and_strings() -> None:
    _, record = CODEC.decode(CODEC.encode("CancelRequested", sample("CancelRequested")))
    assert type(record["occurred_at"]) is int
    assert type(record["event_id"]) is str


def test_encode_fills_defaults_for_fields_left_out() -> None:
    record = sample("JobRequested")
    for field in ("dsl", "code", "target", "train", "limits", "labels", "idempotency_key"):
        del record[field]
    _, decoded = CODEC.decode(CODEC.encode("JobRequested", record))
    assert decoded["target"] == "pytorch"
    assert decoded["labels"] == {}
    assert decoded["limits"] is None


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"job_id": ""}, "job_id"),
        ({"job_id": "job-42"}, "job_id"),
        ({"tenant": ""}, "tenant"),
        ({"source": ""}, "source"),
        ({"occurred_at": 0}, "occurred_at"),
        ({"attempt": 0}, "attempt"),
        ({"percent": 100.5}, "percent"),
        ({"percent": -1.0}, "percent"),
        ({"percent": float("nan")}, "percent"),
        ({"percent": "half"}, "percent"),
        ({"message": None}, "message"),
        ({"attempt": 2**31}, "attempt"),
        ({"precent": 50.0}, "precent"),
    ],
)
def test_encode_refuses_a_bad_record_naming_the_field(
    change: dict[str, Any], complaint: str
) -> None:
    record = sample("ProgressReported") | change
    with pytest.raises(ValueError, match=complaint):
        CODEC.encode("ProgressReported", record)


def test_encode_refuses_a_missing_field_without_default() -> None:
    record = sample("ProgressReported")
    del record["percent"]
    with pytest.raises(ValueError, match="percent"):
        CODEC.encode("ProgressReported", record)


def test_encode_refuses_an_unknown_field_inside_a_nested_record() -> None:
    record = sample("JobRejected")
    record["error"]["detail"] = "{}"
    with pytest.raises(ValueError, match=r"error\.detail"):
        CODEC.encode("JobRejected", record)


def test_encode_refuses_a_datetime_timestamp() -> None:
    record = sample("CancelRequested") | {"occurred_at": datetime.now(UTC)}
    with pytest.raises(ValueError, match="occurred_at"):
        CODEC.encode("CancelRequested", record)


def test_encode_refuses_an_unknown_event_type() -> None:
    with pytest.raises(ValueError, match="JobExploded"):
        CODEC.encode("JobExploded", sample("CancelRequested"))
    with pytest.raises(ValueError, match="JobExploded"):
        CODEC.fingerprint("JobExploded")


def test_dead_letter_may_have_an_empty_job_id_but_other_events_may_not() -> None:
    CODEC.encode("DeadLetter", sample("DeadLetter") | {"job_id": ""})
    with pytest.raises(ValueError, match="job_id"):
        CODEC.encode("CancelRequested", sample("CancelRequested") | {"job_id": ""})


def test_dead_letter_job_id_must_still_be_a_uuid_when_known() -> None:
    with pytest.raises(ValueError, match="job_id"):
        CODEC.encode("DeadLetter", sample("DeadLetter") | {"job_id": "unknown"})


def test_decode_error_reads_as_code_then_reason() -> None:
    error = _decode_error(b"\x01\x00" + bytes(8))
    assert error.code == "BAD_MARKER"
    assert str(error) == f"BAD_MARKER: {error.reason}"
    assert error.reason


def test_wrong_marker_is_bad_marker() -> None:
    message = CODEC.encode("CancelRequested", sample("CancelRequested"))
    assert _decode_error(b"\xc3\x02" + message[2:]).code == "BAD_MARKER"
    assert _decode_error(b"{" + message[1:]).code == "BAD_MARKER"
    assert _decode_error(b"\x01").code == "BAD_MARKER"


def test_unknown_fingerprint_is_reported_as_such() -> None:
    message = CODEC.encode("CancelRequested", sample("CancelRequested"))
    error = _decode_error(MARKER + bytes(8) + message[10:])
    assert error.code == "UNKNOWN_FINGERPRINT"
    assert "0000000000000000" in error.reason


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_message_cut_at_any_byte_is_truncated(event_type: str) -> None:
    message = CODEC.encode(event_type, sample(event_type))
    for cut in range(len(message)):
        assert _decode_error(message[:cut]).code == "TRUNCATED", cut


@pytest.mark.parametrize("extra", [b"\x00", b"\x02ok", bytes(100)])
def test_bytes_after_the_record_are_trailing_bytes(extra: bytes) -> None:
    message = CODEC.encode("ProgressReported", sample("ProgressReported"))
    assert _decode_error(message + extra).code == "TRAILING_BYTES"


COMMON_FIELDS = [
    ("event_id", "string"),
    ("job_id", "string"),
    ("tenant", "string"),
    ("occurred_at", "long"),
    ("source", "string"),
]


def _forged(event_type: str, fields: list[tuple[str, Any]], record: dict[str, Any]) -> bytes:
    """A message written by fastavro alone, as a producer that skips our checks would."""
    writer = parse_schema(
        {
            "type": "record",
            "name": event_type,
            "fields": [{"name": name, "type": kind} for name, kind in COMMON_FIELDS + fields],
        }
    )
    body = io.BytesIO()
    schemaless_writer(body, writer, record)
    return MARKER + CODEC.fingerprint(event_type) + body.getvalue()


@pytest.mark.parametrize(
    ("field", "bad_value"),
    [
        ("event_id", "nope"),
        ("event_id", "6f1c2a7e3b4d4e5f8a9b0c1d2e3f4a5b"),
        ("job_id", ""),
        ("job_id", "{6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b}"),
        ("tenant", ""),
        ("source", ""),
        ("occurred_at", -5),
        ("attempt", 0),
        ("percent", 250.0),
    ],
)
def test_valid_avro_that_fails_validation_is_invalid(field: str, bad_value: object) -> None:
    fields: list[tuple[str, object]] = [
        ("stage", "string"),
        ("attempt", "int"),
        ("percent", "double"),
        ("message", "string"),
        *((name, ["null", "int"]) for name in ("epoch", "epochs", "step", "steps")),
        *((name, ["null", "double"]) for name in ("eta_s", "samples_per_s", "loss")),
    ]
    record = sample("ProgressReported") | {field: bad_value}
    error = _decode_error(_forged("ProgressReported", fields, record))
    assert error.code == "INVALID"
    assert field in error.reason


def test_an_enum_index_beyond_the_symbols_is_invalid() -> None:
    fields: list[tuple[str, Any]] = [
        ("kind", "int"),
        ("target", "string"),
        ("stages", {"type": "array", "items": "string"}),
        ("idempotency_key", ["null", "string"]),
    ]
    record = sample("JobAccepted") | {"kind": 63}
    assert _decode_error(_forged("JobAccepted", fields, record)).code == "INVALID"


def test_bad_utf8_in_a_string_is_invalid() -> None:
    record = sample("CancelRequested") | {"reason": "é"}
    message = CODEC.encode("CancelRequested", record)
    assert message.endswith("é".encode())
    assert _decode_error(message[:-2] + b"\xff\xfe").code == "INVALID"


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    message = CODEC.encode("CancelRequested", sample("CancelRequested"))
    assert CODEC.decode(bytearray(message)) == CODEC.decode(message)  # type: ignore[arg-type]
    assert CODEC.decode(memoryview(message)) == CODEC.decode(message)  # type: ignore[arg-type]


def test_a_missing_value_is_invalid_not_a_crash() -> None:
    assert _decode_error(None).code == "INVALID"  # type: ignore[arg-type]


def test_codec_refuses_two_schemas_for_one_event_type() -> None:
    schema = {"type": "record", "name": "X", "fields": []}
    with pytest.raises(ValueError, match="twice"):
        Codec([schema, schema])


def test_a_bad_union_index_in_the_last_byte_is_invalid_not_truncated() -> None:
    fields: list[tuple[str, Any]] = [
        ("kind", {"type": "enum", "name": "JobKind", "symbols": ["MODEL", "CODE"]}),
        ("target", "string"),
        ("stages", {"type": "array", "items": "string"}),
        ("idempotency_key", "int"),
    ]
    record = sample("JobAccepted") | {"idempotency_key": 63}
    assert _decode_error(_forged("JobAccepted", fields, record)).code == "INVALID"


def test_reason_stays_one_short_line_for_a_large_bad_message() -> None:
    record = sample("CancelRequested") | {"reason": "é" * 100_000}
    message = CODEC.encode("CancelRequested", record)
    error = _decode_error(message[:-2] + b"\xff\xfe")
    assert error.code == "INVALID"
    assert len(error.reason) < 400
