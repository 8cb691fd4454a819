"""Prometheus metrics of the API, the worker and the projector, scraped from the running
stack and read with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.client import StagecastClient
from projections.lag import PROJECTOR_GROUP_PREFIX
from streams.exposition import MetricsServer
from streams.launcher import Launcher
from tests.conftest import WARMUP_DSL, Pipeline
from tests.integration.test_projector import eventually

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def urls(pipeline: Pipeline) -> dict[str, str]:
    return pipeline.launcher.metrics_urls()


async def test_each_process_counts_a_job_that_went_through(pipeline: Pipeline) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(WARMUP_DSL)
        async for event in client.events(accepted["job_id"]):
            if event.type == "JobFinished":
                assert event.data["status"] == "SUCCEEDED"
    where = urls(pipeline)
    api = await scrape(where["api"])
    assert value(api, "stagecast_jobs", status="SUCCEEDED") >= 1
    assert value(api, "stagecast_database_up") == 1
    posted = value(api, "stagecast_http_requests_total", route="/jobs", method="POST", status="202")
    assert posted >= 1
    worker = await scrape(where["worker"])
    for stage in ("parse", "compile", "codegen"):
        ran = value(worker, "stagecast_stage_runs_total", stage=stage, outcome="SUCCEEDED")
        assert ran >= 1
        assert value(worker, "stagecast_stage_duration_seconds_count", stage=stage) >= 1
        assert value(worker, "stagecast_stage_runs_in_flight", stage=stage) == 0
    projector = await scrape(where["projector"])
    assert value(projector, "stagecast_projector_events_total", projector="main") > 0
    assert value(projector, "stagecast_projector_batches_total", projector="main") > 0
    assert value(projector, "stagecast_projector_batch_seconds_count", projector="main") > 0

    def lagging_groups(samples: Samples) -> set[str]:
        return {
            dict(labels)["consumer_group"]
            for name, labels in samples
            if name == "stagecast_consumer_lag"
        }

    async def lag_shown() -> bool:
        projector = lagging_groups(await scrape(where["projector"]))
        api = lagging_groups(await scrape(where["api"]))
        return PROJECTOR_GROUP_PREFIX + "main" in projector and pipeline.settings.app_id in api

    await eventually(lag_shown, within_s=30)


async def test_dead_letters_are_counted_where_they_are_sent_and_recorded(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    events, requests = settings.topics.events, settings.topics.requests
    where = urls(pipeline)
    before = {name: await scrape(url) for name, url in where.items()}
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    try:
        for topic in (events, requests):
            await producer.send_and_wait(topic, f"garbage {uuid.uuid4()}".encode())
    finally:
        await producer.stop()

    def moved(process: str, now: Samples, name: str, **labels: str) -> bool:
        return value(now, name, **labels) > value(before[process], name, **labels)

    async def counted() -> bool:
        now = {name: await scrape(url) for name, url in where.items()}
        return (
            moved(
                "worker",
                now["worker"],
                "stagecast_worker_dead_letters_sent_total",
                topic=requests,
                error_code="BAD_MARKER",
            )
            and moved(
                "projector",
                now["projector"],
                "stagecast_projector_dead_letters_sent_total",
                projector="main",
            )
            and value(now["projector"], "stagecast_dead_letters_recorded_total")
            >= value(before["projector"], "stagecast_dead_letters_recorded_total") + 2
            and all(
                moved(
                    "api",
                    now["api"],
                    "stagecast_dead_letters_total",
                    origin_topic=topic,
                    error_code="BAD_MARKER",
                )
                for topic in (events, requests)
            )
        )

    await eventually(counted, within_s=60)


async def test_an_open_feed_counts_as_an_sse_client_until_it_closes(pipeline: Pipeline) -> None:
    api = urls(pipeline)["api"]

    async def clients(feed: str) -> float:
        return value(await scrape(api), "stagecast_sse_clients", feed=feed)

    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(kind="CODE", code="import time\ntime.sleep(6)\n")
    for feed, path in (("job", f"/jobs/{accepted['job_id']}/events"), ("all", "/events")):
        baseline = await clients(feed)
        async with (
            httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http,
            http.stream("GET", path) as stream,
        ):
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("id:")
            assert await clients(feed) == baseline + 1

        async def closed(feed: str = feed, baseline: float = baseline) -> bool:
            return await clients(feed) == baseline

        await eventually(closed)


async def test_a_bad_scrape_path_or_method_is_a_4xx(pipeline: Pipeline) -> None:
    where = urls(pipeline)
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(where["api"])
        assert refused.status_code == 405
        assert refused.json()["error_code"] == "METHOD_NOT_ALLOWED"
        for process in ("worker", "projector"):
            missing = await http.get(where[process].replace("/metrics", "/metricz"))
            assert missing.status_code == 404
            assert missing.json()["error_code"] == "NOT_FOUND"
            refused = await http.delete(where[process])
            assert refused.status_code == 405
            assert refused.json()["error_code"] == "METHOD_NOT_ALLOWED"


async def test_the_stack_file_says_where_each_process_serves_metrics(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    launcher = Launcher(pipeline.settings.model_copy(update={"state_dir": tmp_path}))
    launcher.api_url = pipeline.api_url
    launcher.write_stack_file()
    written = json.loads((tmp_path / "stack.json").read_text())["metrics"]
    settings = pipeline.settings
    assert written == {
        "api": f"{pipeline.api_url}/metrics",
        "worker": f"http://{settings.metrics_host}:{settings.worker_metrics_port}/metrics",
        "projector": f"http://{settings.metrics_host}:{settings.projector_metrics_port}/metrics",
        "webhooks": f"http://{settings.metrics_host}:{settings.webhooks_metrics_port}/metrics",
    }
    assert await scrape(written["worker"])


def test_a_metrics_connection_that_sends_nothing_is_closed() -> None:
    """Each connection holds a thread of the metrics server: an idle one must not keep it."""
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, idle_timeout_s=0.5)
    port = server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            started = time.monotonic()
            # recv returns b"" once the server closes; a timeout here would raise instead.
            assert idle.recv(1) == b""
            assert time.monotonic() - started < 4
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert scraped.status_code == 200
    finally:
        server.stop()
