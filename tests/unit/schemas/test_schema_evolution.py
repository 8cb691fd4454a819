"""Schemas evolve only backward-compatibly: data written with a published version stays readable."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas import Codec, DecodeError
from tests.unit.schemas.sample_events import EVENT_TYPES, sample
from tests.unit.schemas.schema_files import (
    current,
    declared,
    history_paths,
    without_logical_types,
)

HISTORY = history_paths()


def _event_type(path: Path) -> str:
    return path.name.split(".")[0]


def test_every_event_type_has_its_first_published_version() -> None:
    assert {path.name for path in HISTORY} >= {f"{name}.v1.avsc" for name in EVENT_TYPES}


@pytest.mark.parametrize("path", HISTORY, ids=lambda path: path.name)
def test_history_file_holds_the_event_type_it_is_named_for(path: Path) -> None:
    assert declared(path)["name"] == _event_type(path)
    assert declared(path)["namespace"] == "stagecast.events"


@pytest.mark.parametrize("path", HISTORY, ids=lambda path: path.name)
def test_fields_added_since_a_published_version_have_defaults(path: Path) -> None:
    published = {field["name"] for field in declared(path)["fields"]}
    added = [f for f in current(_event_type(path))["fields"] if f["name"] not in published]
    assert [f["name"] for f in added if "default" not in f] == []


@pytest.mark.parametrize("path", HISTORY, ids=lambda path: path.name)
def test_data_written_with_a_published_version_reads_with_the_current_schema(path: Path) -> None:
    event_type = _event_type(path)
    old = parse_schema(without_logical_types(declared(path)))
    new = parse_schema(without_logical_types(current(event_type)))
    old_fields = {field["name"] for field in declared(path)["fields"]}
    record = {k: v for k, v in sample(event_type).items() if k in old_fields}
    body = io.BytesIO()
    schemaless_writer(body, old, record)
    body.seek(0)
    read = schemaless_reader(body, old, new)
    assert isinstance(read, dict)
    expected = {
        field["name"]: record[field["name"]] if field["name"] in record else field["default"]
        for field in current(event_type)["fields"]
    }
    assert read == expected


def _cancel_requested_v2(extra_field: dict[str, Any]) -> dict[str, Any]:
    schema = current("CancelRequested")
    return schema | {"fields": [*schema["fields"], extra_field]}


def test_codec_reads_an_older_version_into_the_current_one() -> None:
    v1 = current("CancelRequested")
    v2 = _cancel_requested_v2({"name": "requested_by", "type": "string", "default": "system"})
    old_message = Codec([v1]).encode("CancelRequested", sample("CancelRequested"))
    codec = Codec([v2], history=[v1])
    assert codec.fingerprint("CancelRequested") != old_message[2:10]
    assert codec.decode(old_message) == (
        "CancelRequested",
        sample("CancelRequested") | {"requested_by": "system"},
    )


def test_a_field_added_without_default_makes_older_messages_unreadable() -> None:
    v1 = current("CancelRequested")
    v2 = _cancel_requested_v2({"name": "requested_by", "type": "string"})
    old_message = Codec([v1]).encode("CancelRequested", sample("CancelRequested"))
    with pytest.raises(DecodeError) as caught:
        Codec([v2], history=[v1]).decode(old_message)
    assert caught.value.code == "INVALID"


def test_codec_refuses_history_for_an_event_type_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="CancelRequested"):
        Codec([current("JobFinished")], history=[current("CancelRequested")])
