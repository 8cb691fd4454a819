"""Turning consumed events into staging rows, without a database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from projections.batch import STAGED_COLUMNS, Batch, MalformedEvent, jsonb_text, staged_row
from schemas.codec import default_codec
from tests.unit.schemas.sample_events import sample


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


def test_what_the_fast_json_path_refuses_is_written_as_before() -> None:
    # orjson refuses lone surrogates, integers past 64 bits and keys that are not strings;
    # the json module's path writes them, and PostgreSQL takes what it writes.
    value = {"lone": "a\ud800b", "big": 2**70, "nan": float("nan"), 1: "one"}
    assert json.loads(jsonb_text(value)) == {
        "lone": "a?b",
        "big": 2**70,
        "nan": None,
        "1": "one",
    }
    assert json.loads(jsonb_text({"ok": [1.5, "é", None]})) == {"ok": [1.5, "é", None]}


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


def test_copies_of_a_request_under_other_event_ids_keep_the_first_body_once() -> None:
    codec = default_codec()
    first = common(
        kind="MODEL",
        dsl="network A {}",
        code=None,
        target="pytorch",
        stages=[],
        train=None,
        limits=None,
        labels={},
        idempotency_key=None,
    )
    copy = first | {"event_id": str(uuid.uuid4()), "dsl": "network B {}"}
    batch = Batch(codec)
    for offset, record in enumerate((first, copy, first)):
        batch.add("requests", 0, offset, codec.encode("JobRequested", record))
    # One outbox row per job id: the batch's upsert may not touch a row twice.
    assert [(job, body) for job, _, body in batch.requests] == [
        (first["job_id"], codec.encode("JobRequested", first))
    ]
    assert (len(batch.rows), batch.repeated) == (2, 1)


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


def test_batch_keeps_what_it_cannot_store_with_its_key_and_a_code() -> None:
    codec = default_codec()
    valid = codec.encode("CancelRequested", common(reason="stop"))
    far_future = codec.encode("CancelRequested", common(occurred_at=10**17, reason=""))
    unknown = b"\xc3\x01" + b"\x00" * 8 + b"body"
    batch = Batch(codec)
    batch.add("events", 0, 0, b"garbage", b"k0")
    batch.add("events", 0, 1, valid[:-3], b"k1")
    batch.add("progress", 2, 7, unknown, None)
    batch.add("progress", 2, 8, far_future, b"k3")
    batch.add("progress", 2, 9, valid, b"k4")
    batch.add("events", 0, 2, None)
    kept = [
        (item.origin.topic, item.origin.partition, item.origin.offset, item.origin.key, item.code)
        for item in batch.unstorable
    ]
    assert kept == [
        ("events", 0, 0, b"k0", "BAD_MARKER"),
        ("events", 0, 1, b"k1", "TRUNCATED"),
        ("progress", 2, 7, None, "UNKNOWN_FINGERPRINT"),
        ("progress", 2, 8, b"k3", "MALFORMED_EVENT"),
        ("events", 0, 2, None, "TRUNCATED"),
    ]
    values = [item.origin.value for item in batch.unstorable]
    assert values == [b"garbage", valid[:-3], unknown, far_future, b""]
    assert "out of range" in batch.unstorable[3].reason
    assert all(item.reason for item in batch.unstorable)
    assert (len(batch.rows), batch.undecodable) == (1, 5)


def feed_of(batch: Batch) -> list[str]:
    rows = batch.in_feed_order()
    assert [column(row, "ord") for row in rows] == list(range(len(rows)))
    return [f"{column(row, 'type')} {column(row, 'status') or ''}".strip() for row in rows]


def add(batch: Batch, topic: str, offset: int, event_type: str, record: dict[str, Any]) -> None:
    batch.add(topic, 0, offset, default_codec().encode(event_type, record))


def stage_changed(job_id: str, at: int, status: str) -> dict[str, Any]:
    return common(
        job_id=job_id,
        occurred_at=at,
        stage="codegen",
        attempt=1,
        status=status,
        summary="{}",
        error=None,
        duration_ms=None,
    )


def artifact(job_id: str, at: int) -> dict[str, Any]:
    return common(
        job_id=job_id,
        occurred_at=at,
        stage="codegen",
        attempt=1,
        name="model.py",
        media_type="text/x-python",
        uri=None,
        size_bytes=1,
        sha256="x",
        content=b"x",
    )


def finished(job_id: str, at: int) -> dict[str, Any]:
    return common(
        job_id=job_id,
        occurred_at=at,
        status="SUCCEEDED",
        error=None,
        stages_completed=["codegen"],
        duration_ms=None,
    )


def test_progress_sent_before_an_outcome_comes_before_it_in_the_feed() -> None:
    job = str(uuid.uuid4())
    batch = Batch(default_codec())
    # Consumed partition by partition: the events topic first, the progress topic after.
    add(batch, "events", 0, "StageChanged", stage_changed(job, 1000, "STARTED"))
    add(batch, "events", 1, "StageChanged", stage_changed(job, 1005, "SUCCEEDED"))
    add(batch, "events", 2, "JobFinished", finished(job, 1005))
    add(batch, "progress", 0, "ArtifactStored", artifact(job, 1005))
    assert feed_of(batch) == [
        "StageChanged STARTED",
        "ArtifactStored",
        "StageChanged SUCCEEDED",
        "JobFinished SUCCEEDED",
    ]


def test_the_order_of_one_partition_stands_whatever_the_clocks_say() -> None:
    job = str(uuid.uuid4())
    batch = Batch(default_codec())
    # A worker whose clock runs behind the one that finished the previous stage.
    add(batch, "events", 0, "StageChanged", stage_changed(job, 2000, "SUCCEEDED"))
    add(batch, "events", 1, "StageChanged", stage_changed(job, 1500, "STARTED"))
    assert feed_of(batch) == ["StageChanged SUCCEEDED", "StageChanged STARTED"]


def test_batch_reports_each_event_time_and_its_latest() -> None:
    codec = default_codec()
    batch = Batch(codec)
    assert batch.latest is None
    late_value = codec.encode("CancelRequested", common(occurred_at=2_000))
    early_value = codec.encode("CancelRequested", common(occurred_at=1_000))
    late = batch.stage("events", 0, 0, late_value).occurred_at
    early = batch.stage("events", 0, 1, early_value).occurred_at
    assert early is not None and late is not None and early < late
    assert batch.stage("events", 0, 2, b"junk").occurred_at is None
    batch.add("events", 0, 0, late_value)
    batch.add("events", 0, 1, early_value)
    assert batch.latest == late


def test_only_events_with_neighbours_on_another_topic_ask_for_a_cut() -> None:
    job = str(uuid.uuid4())
    quiet = Batch(default_codec())
    add(quiet, "events", 0, "StageChanged", stage_changed(job, 1000, "STARTED"))
    add(quiet, "events", 1, "StageChanged", stage_changed(job, 1001, "SUCCEEDED"))
    assert not quiet.needs_cut
    counted = Batch(default_codec())
    add(
        counted,
        "events",
        0,
        "StageChanged",
        stage_changed(job, 1001, "SUCCEEDED") | {"reported": 1},
    )
    assert counted.needs_cut
    progress = Batch(default_codec())
    add(progress, "progress", 0, "ArtifactStored", artifact(job, 1000))
    assert progress.needs_cut


def test_trimming_at_a_cut_keeps_each_partition_up_to_its_first_event_at_or_past_it() -> None:
    job = str(uuid.uuid4())
    batch = Batch(default_codec())
    add(batch, "events", 0, "StageChanged", stage_changed(job, 1000, "STARTED"))
    batch.add("events", 0, 1, b"garbage", b"k")
    add(batch, "events", 2, "StageChanged", stage_changed(job, 1010, "SUCCEEDED"))
    add(batch, "events", 3, "JobFinished", finished(job, 1004))
    add(batch, "progress", 0, "ArtifactStored", artifact(job, 1003))
    cut = batch.stage(
        "events", 9, 0, default_codec().encode("JobFinished", finished(job, 1010))
    ).occurred_at
    assert cut is not None
    assert batch.starts_before(cut)
    kept, resume = batch.trimmed(cut)
    # The finish at 1004 follows the outcome at 1010 in its partition: it waits with it.
    assert feed_of(kept) == ["StageChanged STARTED", "ArtifactStored"]
    assert resume == {("events", 0): 2}
    assert kept.next_offsets == {("events", 0): 2, ("progress", 0): 1}
    assert (len(kept), kept.undecodable, len(kept.unstorable)) == (3, 1, 1)
    first = batch.stage(
        "events", 9, 1, default_codec().encode("JobFinished", finished(job, 1000))
    ).occurred_at
    assert first is not None and not batch.starts_before(first)
    assert batch.reached[("events", 0)] == cut  # the latest time read, not the last one


def test_trimming_keeps_the_partitions_of_whole_topics_as_read() -> None:
    job = str(uuid.uuid4())
    request = sample("JobRequested") | common(job_id=job, occurred_at=1050)
    batch = Batch(default_codec())
    add(batch, "events", 0, "StageChanged", stage_changed(job, 1000, "STARTED"))
    add(batch, "events", 1, "StageChanged", stage_changed(job, 1010, "SUCCEEDED"))
    # A request stamped by a clock ahead of the others: past the cut, yet it follows nothing.
    add(batch, "requests", 0, "JobRequested", request)
    cut = batch.reached[("events", 0)]
    trimmed, resume = batch.trimmed(cut)
    assert feed_of(trimmed) == ["StageChanged STARTED"]
    assert resume == {("events", 0): 1, ("requests", 0): 0}
    kept, resume = batch.trimmed(cut, whole={"requests"})
    assert sorted(feed_of(kept)) == ["JobRequested", "StageChanged STARTED"]
    assert resume == {("events", 0): 1}
