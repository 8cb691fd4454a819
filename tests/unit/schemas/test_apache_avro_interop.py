"""Our wire format agrees with an independent implementation: the Apache `avro` package."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas import default_codec
from schemas.codec import BUNDLED_DIRECTORY
from tests.unit.schemas.sample_events import EVENT_TYPES, sample
from tests.unit.schemas.schema_files import (
    current,
    declared,
    history_paths,
    without_logical_types,
)

CODEC = default_codec()
CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        fingerprint = byte
        for _ in range(8):
            fingerprint = (fingerprint >> 1) ^ (CRC64_EMPTY & -(fingerprint & 1))
        table.append(fingerprint)
    return table


CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> bytes:
    """The Avro spec's 64-bit Rabin fingerprint, little-endian as the wire carries it."""
    fingerprint = CRC64_EMPTY
    for byte in data:
        fingerprint = (fingerprint >> 8) ^ CRC64_TABLE[(fingerprint ^ byte) & 0xFF]
    return fingerprint.to_bytes(8, "little")


def apache_schema(event_type: str) -> avro.schema.Schema:
    return avro.schema.parse((BUNDLED_DIRECTORY / f"{event_type}.avsc").read_text())


def apache_canonical_form(event_type: str) -> str:
    """Parsing Canonical Form as Apache `avro` writes it, once logicalType is stripped first.

    avro 1.12 for Python keeps `{"type":"long"}` for a primitive carrying a logicalType, while
    the spec's [PRIMITIVES] rule and Java's SchemaNormalization (what a Java producer's
    BinaryMessageEncoder fingerprints) write plain `"long"`. Stripping the attribute first,
    which Parsing Canonical Form drops anyway, makes avro produce the form Java produces.
    """
    return spec_canonical_form(current(event_type))


def spec_canonical_form(schema: dict[str, Any]) -> str:
    """Parsing Canonical Form by Apache `avro`, the spec's way (see apache_canonical_form)."""
    return str(avro.schema.parse(json.dumps(without_logical_types(schema))).canonical_form)


# Signed 64-bit fingerprints from the Avro project's shared test data (schema-tests.txt).
@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ],
)
def test_crc64_matches_the_avro_spec_test_vectors(canonical: str, expected: int) -> None:
    assert crc64_avro(canonical.encode()) == expected.to_bytes(8, "little", signed=True)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_fingerprint_is_crc64_of_the_parsing_canonical_form(event_type: str) -> None:
    canonical = apache_canonical_form(event_type)
    assert "doc" not in canonical
    assert "logicalType" not in canonical
    assert canonical.startswith(f'{{"name":"stagecast.events.{event_type}","type":"record"')
    assert CODEC.fingerprint(event_type) == crc64_avro(canonical.encode())


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_fingerprint_matches_apache_avros_own(event_type: str) -> None:
    canonical = avro.schema.parse(apache_canonical_form(event_type))
    assert CODEC.fingerprint(event_type) == canonical.fingerprint("CRC-64-AVRO")


def _apache_record(event_type: str) -> dict[str, Any]:
    """The sample as an Apache `avro` producer holds it: occurred_at is a datetime."""
    record = sample(event_type)
    record["occurred_at"] = datetime.fromtimestamp(record["occurred_at"] / 1000, UTC)
    return record


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_decodes_a_message_written_by_apache_avro(event_type: str) -> None:
    body = io.BytesIO()
    writer = avro.io.DatumWriter(apache_schema(event_type))
    writer.write(_apache_record(event_type), avro.io.BinaryEncoder(body))
    header = b"\xc3\x01" + crc64_avro(apache_canonical_form(event_type).encode())
    assert CODEC.decode(header + body.getvalue()) == (event_type, sample(event_type))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_apache_avro_reads_what_we_encode(event_type: str) -> None:
    message = CODEC.encode(event_type, sample(event_type))
    assert message[:10] == b"\xc3\x01" + crc64_avro(apache_canonical_form(event_type).encode())
    reader = avro.io.DatumReader(apache_schema(event_type))
    record = reader.read(avro.io.BinaryDecoder(io.BytesIO(message[10:])))
    assert record == _apache_record(event_type)


def avro_python_single_object(schema: avro.schema.Schema, record: dict[str, Any]) -> bytes:
    """Single-object encoding as a producer with avro-python alone writes it: the library has
    no encoder for it, so the header is the marker and the schema's own fingerprint."""
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(body))
    return b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + body.getvalue()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_decodes_avro_pythons_single_object_encoding(event_type: str) -> None:
    message = avro_python_single_object(apache_schema(event_type), _apache_record(event_type))
    assert message[2:10] != CODEC.fingerprint(event_type)
    assert CODEC.decode(message) == (event_type, sample(event_type))


def _as_published(path: Path) -> tuple[dict[str, Any], bytes]:
    """The sample cut down to a published version's fields, and its Avro body in that version."""
    event_type = path.name.split(".")[0]
    writer = parse_schema(without_logical_types(declared(path)))
    body = io.BytesIO()
    schemaless_writer(body, writer, sample(event_type))
    body.seek(0)
    record = schemaless_reader(body, writer, None)
    assert isinstance(record, dict)
    return record, body.getvalue()


@pytest.mark.parametrize("path", history_paths(), ids=lambda path: path.name)
def test_decodes_avro_pythons_single_object_encoding_of_every_published_version(
    path: Path,
) -> None:
    record, body = _as_published(path)
    record["occurred_at"] = datetime.fromtimestamp(record["occurred_at"] / 1000, UTC)
    apache = avro.schema.parse(path.read_text())
    from_avro_python = avro_python_single_object(apache, record)
    assert from_avro_python[10:] == body
    from_spec = b"\xc3\x01" + crc64_avro(spec_canonical_form(declared(path)).encode()) + body
    assert CODEC.decode(from_avro_python) == CODEC.decode(from_spec)
