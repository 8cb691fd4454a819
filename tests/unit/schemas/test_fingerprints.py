"""Both fingerprints of a schema: the spec's, and the one Apache avro-python computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from schemas.codec import BUNDLED_DIRECTORY
from schemas.fingerprints import (
    avro_python_canonical_form,
    avro_python_fingerprint_of,
    fingerprint_of,
)
from tests.unit.schemas.schema_files import declared, history_paths

EVERY_SCHEMA = sorted(BUNDLED_DIRECTORY.glob("*.avsc")) + history_paths()

# Shapes our own schemas do not use (yet), so the rules are checked beyond them.
SHAPES: dict[str, dict[str, Any]] = {
    "annotated primitives everywhere": {
        "type": "record",
        "name": "A",
        "namespace": "x.y",
        "fields": [
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {
                "name": "ids",
                "type": {"type": "array", "items": {"type": "string", "logicalType": "uuid"}},
            },
            {
                "name": "at",
                "type": {
                    "type": "map",
                    "values": {"type": "long", "logicalType": "timestamp-micros"},
                },
            },
            {"name": "maybe", "type": ["null", {"type": "long", "logicalType": "time-micros"}]},
            {"name": "custom", "type": {"type": "string", "connect.name": "text"}},
            {"name": "unknown", "type": {"type": "bytes", "logicalType": "no-such-type"}},
            {"name": "documented", "type": {"type": "double", "doc": "a reserved attribute"}},
            {"name": "plain", "type": {"type": "boolean"}},
        ],
    },
    "named types reused and namespaced": {
        "type": "record",
        "name": "Outer",
        "namespace": "a.b",
        "doc": "dropped",
        "aliases": ["Old"],
        "fields": [
            {"name": "h", "type": {"type": "fixed", "name": "Hash", "size": 16}, "default": "x"},
            {"name": "c", "type": {"type": "enum", "name": "c.d.Colour", "symbols": ["R", "G"]}},
            {"name": "c2", "type": "c.d.Colour"},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "namespace": "e",
                    "fields": [{"name": "back", "type": ["null", "a.b.Outer"]}],
                },
            },
            {"name": "inner2", "type": "e.Inner", "order": "descending"},
        ],
    },
    "a fixed type used twice": {
        "type": "record",
        "name": "Digests",
        "fields": [
            {"name": "first", "type": {"type": "fixed", "name": "Hash", "size": 16}},
            {"name": "second", "type": "Hash"},
        ],
    },
}


@pytest.mark.parametrize("path", EVERY_SCHEMA, ids=lambda path: path.name)
def test_avro_python_fingerprint_is_the_one_avro_python_computes(path: Path) -> None:
    apache = avro.schema.parse(path.read_text())
    assert avro_python_fingerprint_of(declared(path)) == apache.fingerprint("CRC-64-AVRO")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.filterwarnings("ignore:Unknown no-such-type")
def test_avro_python_canonical_form_is_avro_pythons_own(shape: str) -> None:
    schema = SHAPES[shape]
    apache = avro.schema.parse(json.dumps(schema))
    assert avro_python_canonical_form(schema) == apache.canonical_form
    assert avro_python_fingerprint_of(schema) == apache.fingerprint("CRC-64-AVRO")


def test_annotated_primitives_are_where_the_two_forms_part() -> None:
    canonical = avro_python_canonical_form(SHAPES["annotated primitives everywhere"])
    assert '{"name":"day","type":{"type":"int"}}' in canonical
    assert '{"name":"documented","type":"double"}' in canonical
    assert '{"name":"plain","type":"boolean"}' in canonical


def test_a_fixed_type_used_again_is_written_out_again() -> None:
    schema = SHAPES["a fixed type used twice"]
    assert avro_python_canonical_form(schema).count('"type":"fixed"') == 2
    assert avro_python_fingerprint_of(schema) != fingerprint_of(schema)


def test_without_annotated_primitives_or_reused_fixed_both_fingerprints_agree() -> None:
    schema = SHAPES["named types reused and namespaced"]
    assert avro_python_fingerprint_of(schema) == fingerprint_of(schema)


@pytest.mark.parametrize("path", EVERY_SCHEMA, ids=lambda path: path.name)
def test_every_event_schema_has_two_distinct_fingerprints(path: Path) -> None:
    # event_id is an annotated string in every event type, so the two always differ.
    assert avro_python_fingerprint_of(declared(path)) != fingerprint_of(declared(path))


@pytest.mark.parametrize(
    "schema",
    [{"type": "record"}, {"type": {"type": "string"}}, {"type": "tuple"}, {"name": "NoType"}],
    ids=str,
)
def test_what_is_not_a_schema_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not an Avro schema"):
        avro_python_canonical_form(schema)
