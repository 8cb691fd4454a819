"""Turning consumed events into staging rows, without a database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from projections.batch import STAGED_COLUMNS, Batch, MalformedEvent, jsonb_text, staged_row
from schemas.codec import default_codec


def common(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "tenant": "acme",
        "occurred_at": 1_700_000_000_000,
        "source": "test",
    }
    return base | fields


def column(row: tuple[Any, ...], name: str) -> Any:
    return row[STAGED_COLUMNS.index(name)]


def test_jsonb_text_is_text_postgres_accepts() -> None:
    text = jsonb_text({"nan": float("nan"), "inf": float("inf"), "nul": "a\x00b", "raw": b"\x01"})
    assert json.loads(text) == {"nan": None, "inf": None, "nul": "a\ufffdb", "raw": "AQ=="}
    assert "\\u0000" not in text


def test_artifact_bytes_stay_out_of_the_feed_payload() -> None:
    record = common(
        stage="codegen",
        attempt=1,
        name="model.py",
        media_type="text/x-python",
        uri=None,
        size_bytes=3,
        sha256="abc",
        content=b"abc",
    )
    row = staged_row(0, "t", 0, 5, "ArtifactStored", record)
    assert "content" not in json.loads(column(row, "payload"))
    assert column(row, "content") == b"abc"
    assert column(row, "offset") == 5


def test_a_request_is_not_in_the_feed_but_its_spec_is_kept() -> None:
    record = common(
        kind="MODEL",
        dsl="network X {}",
        code=None,
        target="pytorch",
        stages=[],
        train=None,
        limits=None,
        labels={"team": "ml"},
        idempotency_key="k",
    )
    row = staged_row(0, "t", 0, 0, "JobRequested", record)
    assert column(row, "payload") is None
    assert json.loads(column(row, "spec"))["dsl"] == "network X {}"
    assert column(row, "idempotency_key") == "k"


def test_stage_summaries_and_error_details_become_json_documents() -> None:
    error = {"code": "DSL_SHAPE", "message": "too small", "details": '{"line": 7}'}
    record = common(
        stage="compile",
        attempt=1,
        status="FAILED",
        summary='{"total_params": 3}',
        error=error,
        duration_ms=4,
    )
    row = staged_row(0, "t", 0, 0, "StageChanged", record)
    assert json.loads(column(row, "summary")) == {"total_params": 3}
    assert json.loads(column(row, "error"))["details"] == {"line": 7}


def test_an_impossible_timestamp_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        staged_row(0, "t", 0, 0, "CancelRequested", common(occurred_at=10**20, reason=""))


def test_batch_skips_undecodable_bytes_and_repeats_but_moves_every_offset() -> None:
    codec = default_codec()
    value = codec.encode("CancelRequested", common(reason="stop"))
    batch = Batch(codec)
    batch.add("events", 0, 10, value)
    batch.add("events", 0, 11, value)
    batch.add("events", 1, 3, b"garbage")
    batch.add("events", 1, 4, None)
    assert len(batch) == 4
    assert len(batch.rows) == 1
    assert (batch.repeated, batch.undecodable) == (1, 2)
    assert batch.next_offsets == {("events", 0): 12, ("events", 1): 5}
