"""The .avsc files keep the shape every producer relies on."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.codec import BUNDLED_DIRECTORY
from tests.unit.schemas.sample_events import EVENT_TYPES
from tests.unit.schemas.schema_files import current

COMMON_FIELDS: list[tuple[str, Any]] = [
    ("event_id", {"type": "string", "logicalType": "uuid"}),
    ("job_id", "string"),
    ("tenant", "string"),
    ("occurred_at", {"type": "long", "logicalType": "timestamp-millis"}),
    ("source", "string"),
]


def test_there_is_one_schema_file_per_event_type() -> None:
    assert sorted(path.stem for path in BUNDLED_DIRECTORY.glob("*.avsc")) == EVENT_TYPES


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_is_a_documented_record_in_the_events_namespace(event_type: str) -> None:
    schema = current(event_type)
    assert schema["type"] == "record"
    assert schema["name"] == event_type
    assert schema["namespace"] == "stagecast.events"
    assert schema["doc"]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_starts_with_the_common_fields(event_type: str) -> None:
    fields = current(event_type)["fields"]
    assert [(f["name"], f["type"]) for f in fields[: len(COMMON_FIELDS)]] == COMMON_FIELDS


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_optional_fields_default_to_null(event_type: str) -> None:
    for field in current(event_type)["fields"]:
        if isinstance(field["type"], list) and field["type"][0] == "null":
            assert field.get("default", "missing") is None, field["name"]
