"""Confluent's wire format (magic 0, 4-byte schema id, body) with stagecast's fixed ids."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer

from schemas import Codec, DecodeError, default_codec
from schemas.codec import BUNDLED_DIRECTORY, CONFLUENT_IDS, MARKER
from schemas.fingerprints import fingerprint_of
from tests.unit.schemas.sample_events import EVENT_TYPES, sample
from tests.unit.schemas.schema_files import current, declared, history_paths, without_logical_types

CODEC = default_codec()
IDS: dict[int, str] = {
    int(schema_id): version
    for schema_id, version in json.loads((BUNDLED_DIRECTORY / CONFLUENT_IDS).read_text()).items()
}


def current_id(event_type: str) -> int:
    """The id of the published version that is the current schema."""
    (found,) = [
        schema_id
        for schema_id, version in IDS.items()
        if version.startswith(f"{event_type}.")
        and fingerprint_of(_history(version)) == fingerprint_of(current(event_type))
    ]
    return found


def _history(version: str) -> dict[str, object]:
    return declared(BUNDLED_DIRECTORY / "history" / f"{version}.avsc")


def framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def body_of(path: Path) -> bytes:
    """The sample of the version's event type, written with that version's schema."""
    out = io.BytesIO()
    writer = parse_schema(without_logical_types(declared(path)))
    schemaless_writer(out, writer, sample(path.name.split(".")[0]))
    return out.getvalue()


def _decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(data)
    return caught.value


def test_ids_name_every_published_version_once_numbered_from_one() -> None:
    assert sorted(IDS.values()) == sorted(
        path.name.removesuffix(".avsc") for path in history_paths()
    )
    # New versions take the next id; an id, once published, keeps its schema.
    assert sorted(IDS) == list(range(1, len(IDS) + 1))


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    """confluent-kafka's in-process registry, given stagecast's schemas in id order: it numbers
    schemas as a fresh registry does, so each must land on the id the table gives it."""
    client = SchemaRegistryClient.new_client({"url": "mock://stagecast"})
    for schema_id, version in sorted(IDS.items()):
        text = (BUNDLED_DIRECTORY / "history" / f"{version}.avsc").read_text()
        subject = f"stagecast.events.{version.split('.')[0]}"
        assert client.register_schema(subject, Schema(text, "AVRO")) == schema_id
    return client


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_decodes_what_confluent_kafkas_avro_serializer_writes(
    registry: SchemaRegistryClient, event_type: str
) -> None:
    serializer = AvroSerializer(
        registry,
        Schema((BUNDLED_DIRECTORY / f"{event_type}.avsc").read_text(), "AVRO"),
        # Looks the schema up under its record-name subject, as a producer that may not
        # register schemas does.
        conf={
            "auto.register.schemas": False,
            "subject.name.strategy": record_subject_name_strategy,
        },
    )
    value = serializer(sample(event_type), SerializationContext("t", MessageField.VALUE))
    assert value is not None
    assert value[:5] == framed(current_id(event_type), b"")
    assert CODEC.decode(value) == (event_type, sample(event_type))


@pytest.mark.parametrize("path", history_paths(), ids=lambda path: path.name)
def test_every_published_version_reads_under_its_id_as_under_its_fingerprint(path: Path) -> None:
    version = path.name.removesuffix(".avsc")
    (schema_id,) = [i for i, v in IDS.items() if v == version]
    body = body_of(path)
    from_fingerprint = CODEC.decode(MARKER + fingerprint_of(declared(path)) + body)
    assert CODEC.decode(framed(schema_id, body)) == from_fingerprint


def test_an_unknown_schema_id_is_refused_with_the_id() -> None:
    body = body_of(BUNDLED_DIRECTORY / "history" / "JobRequested.v2.avsc")
    error = _decode_error(framed(4242, body))
    assert error.code == "UNKNOWN_SCHEMA_ID"
    assert "4242" in error.reason
    assert _decode_error(framed(0, body)).code == "UNKNOWN_SCHEMA_ID"


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x00\x00\x00"], ids=len)
def test_a_header_cut_short_is_truncated(data: bytes) -> None:
    error = _decode_error(data)
    assert error.code == "TRUNCATED"
    assert "Confluent header" in error.reason


def test_a_body_cut_short_or_followed_by_bytes_is_refused_as_such() -> None:
    message = framed(current_id("CancelRequested"), body_of(_path("CancelRequested.v1")))
    assert _decode_error(message[:-3]).code == "TRUNCATED"
    assert _decode_error(message + b"\x00").code == "TRAILING_BYTES"


def _path(version: str) -> Path:
    return BUNDLED_DIRECTORY / "history" / f"{version}.avsc"


def test_an_id_for_a_schema_the_codec_does_not_know_is_refused_at_construction() -> None:
    stranger = current("CancelRequested") | {"name": "Stranger"}
    with pytest.raises(ValueError, match="Confluent schema id 3: Stranger"):
        Codec([current("CancelRequested")], confluent_ids={3: stranger})


@pytest.mark.parametrize("schema_id", [0, -1, 2**31])
def test_an_id_outside_the_registrys_range_is_refused_at_construction(schema_id: int) -> None:
    cancel = current("CancelRequested")
    with pytest.raises(ValueError, match="outside"):
        Codec([cancel], confluent_ids={schema_id: cancel})
