"""Requests from other systems: librdkafka (confluent-kafka), Apache avro-python's framing and
Confluent's (its AvroSerializer, with stagecast's fixed schema ids)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import avro.io
import avro.schema
import confluent_kafka
import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from api.client import ApiRequestError, StagecastClient
from schemas.codec import BUNDLED_DIRECTORY, CONFLUENT_IDS, default_codec
from tests.conftest import EXAMPLES, Pipeline
from tests.integration.test_pipeline import _dead_letters, follow, steps

pytestmark = pytest.mark.integration

TINY = (EXAMPLES / "tiny.neural").read_text()
BUILD = ["parse", "compile", "codegen"]
BUILT = [
    "JobAccepted",
    "parse STARTED",
    "parse SUCCEEDED",
    "compile STARTED",
    "compile SUCCEEDED",
    "codegen STARTED",
    "codegen SUCCEEDED",
    "JobFinished SUCCEEDED",
]


def job_requested(source: str) -> dict[str, Any]:
    """A JobRequested as another system builds it from the schema, without stagecast's code."""
    return {
        "event_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "tenant": "default",
        "occurred_at": int(time.time() * 1000),
        "source": source,
        "kind": "MODEL",
        "dsl": TINY,
        "code": None,
        "language": None,
        "stdin": None,
        "target": "pytorch",
        "stages": BUILD,
        "train": None,
        "limits": None,
        "labels": {"producer": source},
        "idempotency_key": None,
    }


def produce_with_librdkafka(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """One message through confluent-kafka (librdkafka), waiting for the broker's ack."""
    reports: list[confluent_kafka.KafkaError | None] = []
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "message.timeout.ms": 20000, "acks": "all"}
    )
    producer.produce(topic, value, key, on_delivery=lambda error, _: reports.append(error))
    assert producer.flush(30) == 0, "the message was still queued after 30 s"
    assert reports == [None], f"delivery failed: {reports}"


def avro_python_single_object(record: dict[str, Any]) -> bytes:
    """Single-object encoding written with Apache avro-python only: marker, the library's own
    fingerprint of the schema, its binary body."""
    schema = avro.schema.parse((BUNDLED_DIRECTORY / "JobRequested.avsc").read_text())
    body = io.BytesIO()
    held = record | {"occurred_at": _as_datetime(record["occurred_at"])}
    avro.io.DatumWriter(schema).write(held, avro.io.BinaryEncoder(body))
    return b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + body.getvalue()


def _as_datetime(millis: int) -> datetime:
    """occurred_at as avro-python holds a timestamp-millis: a timezone-aware datetime."""
    return datetime.fromtimestamp(millis / 1000, UTC)


async def followed_to_the_end(pipeline: Pipeline, job_id: str) -> tuple[list[str], dict[str, Any]]:
    """The job's lifecycle on its feed, and its view, once it is known and finished."""
    async with StagecastClient(pipeline.api_url) as client:
        # Produced straight into Kafka: the job is known (its feed opens) once projected.
        for _ in range(200):
            try:
                await client.job(job_id)
                break
            except ApiRequestError:
                await asyncio.sleep(0.1)
        events = await follow(client, job_id)
        return steps(events), await client.job(job_id)


async def test_a_job_produced_with_confluent_kafka_reaches_succeeded(pipeline: Pipeline) -> None:
    record = job_requested("confluent-kafka")
    value = default_codec().encode("JobRequested", record)
    await asyncio.to_thread(
        produce_with_librdkafka,
        pipeline.settings.require_kafka(),
        pipeline.settings.topics.requests,
        record["job_id"].encode(),
        value,
    )
    lifecycle, view = await followed_to_the_end(pipeline, record["job_id"])
    assert lifecycle == BUILT
    assert view["status"] == "SUCCEEDED"
    assert view["labels"] == {"producer": "confluent-kafka"}


async def test_a_job_framed_by_avro_python_reaches_succeeded(pipeline: Pipeline) -> None:
    record = job_requested("avro-python")
    value = avro_python_single_object(record)
    assert value[2:10] != default_codec().fingerprint("JobRequested")
    await asyncio.to_thread(
        produce_with_librdkafka,
        pipeline.settings.require_kafka(),
        pipeline.settings.topics.requests,
        record["job_id"].encode(),
        value,
    )
    lifecycle, view = await followed_to_the_end(pipeline, record["job_id"])
    assert lifecycle == BUILT
    assert view["status"] == "SUCCEEDED"


async def test_a_schema_stagecast_does_not_know_is_dead_lettered_unknown_fingerprint(
    pipeline: Pipeline,
) -> None:
    declared = json.loads((BUNDLED_DIRECTORY / "JobRequested.avsc").read_text())
    declared["fields"].append({"name": "priority", "type": "int"})
    schema = avro.schema.parse(json.dumps(declared))
    record = job_requested("avro-python") | {"priority": 1}
    record["occurred_at"] = _as_datetime(record["occurred_at"])
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(body))
    value = b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + body.getvalue()
    await asyncio.to_thread(
        produce_with_librdkafka,
        pipeline.settings.require_kafka(),
        pipeline.settings.topics.requests,
        record["job_id"].encode(),
        value,
    )
    letter = await _dead_letters(pipeline, value)
    assert letter["error_code"] == "UNKNOWN_FINGERPRINT"
    assert schema.fingerprint("CRC-64-AVRO").hex() in letter["reason"]
    assert letter["source_topic"] == pipeline.settings.topics.requests


def confluent_serialized(record: dict[str, Any], topic: str) -> bytes:
    """JobRequested as confluent-kafka's AvroSerializer frames it, the registry holding
    stagecast's schemas under their fixed ids (its in-process one numbers them in order)."""
    registry = SchemaRegistryClient.new_client({"url": "mock://stagecast-producers"})
    ids = json.loads((BUNDLED_DIRECTORY / CONFLUENT_IDS).read_text())
    for schema_id, version in sorted(ids.items(), key=lambda item: int(item[0])):
        text = (BUNDLED_DIRECTORY / "history" / f"{version}.avsc").read_text()
        subject = f"stagecast.events.{version.split('.')[0]}"
        assert registry.register_schema(subject, Schema(text, "AVRO")) == int(schema_id)
    serializer = AvroSerializer(
        registry,
        Schema((BUNDLED_DIRECTORY / "JobRequested.avsc").read_text(), "AVRO"),
        conf={
            "auto.register.schemas": False,
            "subject.name.strategy": record_subject_name_strategy,
        },
    )
    value = serializer(record, SerializationContext(topic, MessageField.VALUE))
    assert isinstance(value, bytes)
    return value


async def test_a_job_in_confluent_framing_reaches_succeeded(pipeline: Pipeline) -> None:
    record = job_requested("confluent-avro-serializer")
    requests = pipeline.settings.topics.requests
    value = confluent_serialized(record, requests)
    assert value[:1] == b"\x00"
    await asyncio.to_thread(
        produce_with_librdkafka,
        pipeline.settings.require_kafka(),
        requests,
        record["job_id"].encode(),
        value,
    )
    lifecycle, view = await followed_to_the_end(pipeline, record["job_id"])
    assert lifecycle == BUILT
    assert view["status"] == "SUCCEEDED"


async def test_a_confluent_frame_with_an_unknown_schema_id_is_dead_lettered(
    pipeline: Pipeline,
) -> None:
    record = job_requested("confluent-avro-serializer")
    requests = pipeline.settings.topics.requests
    # The body is a valid JobRequested; only the id is one no stagecast schema has.
    value = b"\x00" + (70_000).to_bytes(4, "big") + confluent_serialized(record, requests)[5:]
    await asyncio.to_thread(
        produce_with_librdkafka,
        pipeline.settings.require_kafka(),
        requests,
        record["job_id"].encode(),
        value,
    )
    letter = await _dead_letters(pipeline, value)
    assert letter["error_code"] == "UNKNOWN_SCHEMA_ID"
    assert "Confluent schema id 70000" in letter["reason"]
    assert letter["source_topic"] == requests
