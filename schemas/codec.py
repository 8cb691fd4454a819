"""Avro single-object encoding of stagecast events: marker, schema fingerprint, Avro body.

Decoding also takes Confluent's framing (magic byte 0, 4-byte big-endian schema id, body),
with the ids fixed by `confluent_ids.json`; encoding always writes single-object encoding.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas.fingerprints import avro_python_fingerprint_of, fingerprint_of

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = len(CONFLUENT_MAGIC) + 4
BUNDLED_DIRECTORY = Path(__file__).resolve().parent
CONFLUENT_IDS = "confluent_ids.json"

DecodeErrorCode = Literal[
    "BAD_MARKER",
    "UNKNOWN_FINGERPRINT",
    "UNKNOWN_SCHEMA_ID",
    "TRUNCATED",
    "TRAILING_BYTES",
    "INVALID",
]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DESCRIPTION_LIMIT = 200
# A dead letter may hold a message whose job could not be read at all.
_JOB_ID_MAY_BE_EMPTY = frozenset({"DeadLetter"})


class DecodeError(Exception):
    """Bytes that are not a valid stagecast event; `code` says which way they failed."""

    def __init__(self, code: DecodeErrorCode, reason: str) -> None:
        super().__init__(code, reason)
        self.code: DecodeErrorCode = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _EventSchema:
    """One event type's schema, compiled for fastavro, with the checks Avro cannot express."""

    event_type: str
    parsed: Any
    fingerprint: bytes
    avro_python_fingerprint: bytes
    job_id_may_be_empty: bool
    has_attempt: bool
    has_percent: bool

    @classmethod
    def compile(cls, declared: Mapping[str, Any]) -> _EventSchema:
        event_type = str(declared["name"])
        names = {field["name"] for field in declared["fields"]}
        return cls(
            event_type=event_type,
            parsed=parse_schema(_without_logical_types(declared)),
            fingerprint=fingerprint_of(declared),
            avro_python_fingerprint=avro_python_fingerprint_of(declared),
            job_id_may_be_empty=event_type in _JOB_ID_MAY_BE_EMPTY,
            has_attempt="attempt" in names,
            has_percent="percent" in names,
        )

    def semantic_problem(self, record: Mapping[str, Any]) -> str | None:
        """Why a type-correct record is still not a valid event, or None if it is."""
        if not _UUID.fullmatch(record["event_id"]):
            return f"event_id {reprlib.repr(record['event_id'])} is not a UUID"
        job_id = record["job_id"]
        if (job_id or not self.job_id_may_be_empty) and not _UUID.fullmatch(job_id):
            return f"job_id {reprlib.repr(job_id)} is not a UUID"
        if not record["tenant"]:
            return "tenant is empty"
        if not record["source"]:
            return "source is empty"
        if record["occurred_at"] <= 0:
            return f"occurred_at {record['occurred_at']} is not a positive epoch millisecond"
        if self.has_attempt and record["attempt"] < 1:
            return f"attempt {record['attempt']} is below 1"
        if self.has_percent and not 0 <= record["percent"] <= 100:
            return f"percent {record['percent']} is outside 0..100"
        return None


@dataclass(frozen=True, slots=True)
class _Reader:
    """How to read a body written with one known fingerprint into the current schema."""

    current: _EventSchema
    writer: Any
    resolve_into: Any


def _without_logical_types(schema: Any) -> Any:
    """A copy of the schema without logicalType, so timestamps stay ints and UUIDs stay strings."""
    if isinstance(schema, dict):
        return {
            key: _without_logical_types(value)
            for key, value in schema.items()
            if key != "logicalType"
        }
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


def _describe(exc: Exception) -> str:
    """A reader error in one short line; some errors carry the whole input with them."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _DESCRIPTION_LIMIT else text[:_DESCRIPTION_LIMIT] + "..."


def _unknown_field(schema: Any, datum: Any, path: str) -> str | None:
    """The first record key the schema does not declare; fastavro would drop it silently."""
    if isinstance(schema, list):
        for branch in schema:
            if isinstance(branch, dict) and branch.get("type") == "record":
                return _unknown_field(branch, datum, path)
        return None
    if not isinstance(schema, dict) or not isinstance(datum, Mapping):
        return None
    if schema.get("type") != "record":
        return _unknown_field(schema.get("type"), datum, path)
    fields = {field["name"]: field["type"] for field in schema["fields"]}
    for key, value in datum.items():
        if key not in fields:
            return f"{path}.{key}"
        nested = _unknown_field(fields[key], value, f"{path}.{key}")
        if nested:
            return nested
    return None


class Codec:
    """Encodes and decodes events of every known type; the fingerprint says which type."""

    def __init__(
        self,
        schemas: Iterable[Mapping[str, Any]],
        history: Iterable[Mapping[str, Any]] = (),
        confluent_ids: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        self._schemas: dict[str, _EventSchema] = {}
        for declared in schemas:
            compiled = _EventSchema.compile(declared)
            if compiled.event_type in self._schemas:
                raise ValueError(f"event type {compiled.event_type} is declared twice")
            self._schemas[compiled.event_type] = compiled
        # The registry: every fingerprint a writer may put in the header, the spec's and
        # Apache avro-python's alike (schemas/fingerprints.py says how they differ).
        self._readers: dict[bytes, _Reader] = {}
        for schema in self._schemas.values():
            reader = _Reader(schema, schema.parsed, None)
            self._readers[schema.fingerprint] = reader
            self._readers.setdefault(schema.avro_python_fingerprint, reader)
        # Earlier versions stay readable: their bodies are resolved into the current schema.
        for declared in history:
            event_type = str(declared["name"])
            if event_type not in self._schemas:
                raise ValueError(f"history schema {event_type} has no current version")
            writer = parse_schema(_without_logical_types(declared))
            current = self._schemas[event_type]
            for previous in (fingerprint_of(declared), avro_python_fingerprint_of(declared)):
                self._readers.setdefault(previous, _Reader(current, writer, current.parsed))
        # Confluent's framing names the writer by an id; each id is one of the schemas above.
        self._confluent: dict[int, _Reader] = {}
        for schema_id, declared in (confluent_ids or {}).items():
            if not 0 < schema_id < 2**31:
                raise ValueError(f"Confluent schema id {schema_id} is outside 1..2^31-1")
            named = self._readers.get(fingerprint_of(declared))
            if named is None:
                raise ValueError(
                    f"Confluent schema id {schema_id}: {declared.get('name')} is neither a "
                    "current nor a published schema"
                )
            self._confluent[schema_id] = named
        self.event_types: frozenset[str] = frozenset(self._schemas)

    @classmethod
    def load(cls, directory: Path | None = None) -> Codec:
        """Every .avsc in the directory (the bundled schemas by default), plus its history/
        and the Confluent schema ids of its confluent_ids.json, if it has one."""
        directory = BUNDLED_DIRECTORY if directory is None else directory
        schemas = [json.loads(path.read_text()) for path in sorted(directory.glob("*.avsc"))]
        history = [
            json.loads(path.read_text()) for path in sorted(directory.glob("history/*.avsc"))
        ]
        ids_path = directory / CONFLUENT_IDS
        versions: dict[str, str] = json.loads(ids_path.read_text()) if ids_path.exists() else {}
        confluent_ids = {
            int(schema_id): json.loads((directory / "history" / f"{version}.avsc").read_text())
            for schema_id, version in versions.items()
        }
        return cls(schemas, history, confluent_ids)

    def _schema(self, event_type: str) -> _EventSchema:
        try:
            return self._schemas[event_type]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}") from None

    def fingerprint(self, event_type: str) -> bytes:
        """The 8-byte little-endian fingerprint that heads every message of this type."""
        return self._schema(event_type).fingerprint

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        """One message: marker, fingerprint, Avro body; ValueError if the record is not valid."""
        schema = self._schema(event_type)
        unknown = _unknown_field(schema.parsed, record, event_type)
        if unknown:
            raise ValueError(f"invalid {event_type}: {unknown} is not a field of the schema")
        try:
            validate(record, schema.parsed, raise_errors=True)
        except ValidationError as exc:
            problems = "; ".join(str(error) for error in exc.errors)
            raise ValueError(f"invalid {event_type}: {problems}") from None
        problem = schema.semantic_problem(record)
        if problem:
            raise ValueError(f"invalid {event_type}: {problem}")
        out = io.BytesIO()
        out.write(MARKER)
        out.write(schema.fingerprint)
        schemaless_writer(out, schema.parsed, dict(record))
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(event_type, record) from one message; DecodeError, and nothing else, on bad bytes."""
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                raise DecodeError("INVALID", f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        reader, start = self._writer(data)
        schema = reader.current
        body = io.BytesIO(data)
        body.seek(start)
        try:
            # Every event schema is a record, which fastavro always reads as a dict.
            record = cast(
                dict[str, Any], schemaless_reader(body, reader.writer, reader.resolve_into)
            )
        # Arbitrary bytes can trip any error inside the Avro reader (EOFError, IndexError,
        # UnicodeDecodeError, ...); all of them mean the bytes are not this schema's record.
        except Exception as exc:
            if body.tell() >= len(data) and self._ran_out(reader, data, start):
                raise DecodeError(
                    "TRUNCATED",
                    f"{schema.event_type} body ends before the record does ({_describe(exc)})",
                ) from None
            raise DecodeError(
                "INVALID", f"{schema.event_type} body is not valid Avro ({_describe(exc)})"
            ) from None
        if body.tell() != len(data):
            raise DecodeError(
                "TRAILING_BYTES",
                f"{len(data) - body.tell()} bytes follow the {schema.event_type} record",
            )
        problem = schema.semantic_problem(record)
        if problem:
            raise DecodeError("INVALID", f"{schema.event_type}: {problem}")
        return schema.event_type, record

    def _writer(self, data: bytes) -> tuple[_Reader, int]:
        """The reader for the schema the header names, and where the body starts."""
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER_SIZE:
                raise DecodeError(
                    "TRUNCATED",
                    f"message is {len(data)} bytes, shorter than the Confluent header",
                )
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
            confluent = self._confluent.get(schema_id)
            if confluent is None:
                raise DecodeError(
                    "UNKNOWN_SCHEMA_ID",
                    f"Confluent schema id {schema_id} is not one of stagecast's "
                    "(schemas/README.md lists them)",
                )
            return confluent, CONFLUENT_HEADER_SIZE
        if data[:2] != MARKER:
            if len(data) < len(MARKER) and MARKER.startswith(data):
                raise DecodeError(
                    "TRUNCATED", f"message is {len(data)} bytes, shorter than the header"
                )
            raise DecodeError(
                "BAD_MARKER",
                f"message starts with {data[:2].hex()!r}, not 'c301' (single-object "
                "encoding) or '00' (Confluent framing)",
            )
        if len(data) < HEADER_SIZE:
            raise DecodeError("TRUNCATED", f"message is {len(data)} bytes, shorter than the header")
        reader = self._readers.get(data[2:HEADER_SIZE])
        if reader is None:
            raise DecodeError(
                "UNKNOWN_FINGERPRINT",
                f"schema fingerprint {data[2:HEADER_SIZE].hex()} matches no known event type",
            )
        return reader, HEADER_SIZE

    @staticmethod
    def _ran_out(reader: _Reader, data: bytes, start: int) -> bool:
        """Whether a failed read lacked bytes: given one more, the reader gets past the end."""
        padded = io.BytesIO(data + b"\x00")
        padded.seek(start)
        with contextlib.suppress(Exception):
            schemaless_reader(padded, reader.writer, reader.resolve_into)
        return padded.tell() > len(data)


@functools.cache
def default_codec() -> Codec:
    """The codec for the schemas bundled with stagecast, loaded once."""
    return Codec.load()
