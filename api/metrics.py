"""`GET /metrics`: the API's Prometheus metrics.

Counted as they happen: HTTP requests by route template, method and status, and SSE clients
connected. Read from PostgreSQL at scrape time: jobs by status (a GROUP BY over the status
index), the latest consumer-lag sample and the dead letters recorded (both written by the
projector process). A scrape while the database is away still answers, with
`stagecast_database_up 0` and without the database's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import TypeVar

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import DATABASE_UNAVAILABLE_ERRORS

JOB_STATUSES = ("QUEUED", "ACCEPTED", "RUNNING", "SUCCEEDED", "FAILED", "REJECTED", "CANCELLED")
# The route label of a request no route matched: paths are not labels (unbounded).
UNMATCHED = "unmatched"
# Any other method token a client makes up is counted as one label value, not a new series each.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
_QUERY_TIMEOUT_S = 2.0

_JOBS = "SELECT status, count(*) AS jobs FROM jobs GROUP BY status"
_LAG = "SELECT consumer_group, topic, partition, lag, sampled_at FROM consumer_lag"
_DEAD_LETTERS = (
    "SELECT origin_topic, error_code, count(*) AS letters FROM dead_letters "
    "GROUP BY origin_topic, error_code"
)

# A scrape answers without the database's figures rather than fail.
_UNREADABLE: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE_ERRORS, asyncpg.PostgresError)

T = TypeVar("T")

log = logging.getLogger(__name__)


class DatabaseFigures(Collector):
    """What the latest scrape read from PostgreSQL."""

    def __init__(self) -> None:
        self.families: list[Metric] = []
        self.up = False

    async def read(self, pool: asyncpg.Pool) -> None:
        try:
            async with asyncio.timeout(_QUERY_TIMEOUT_S), pool.acquire() as conn:
                jobs = await conn.fetch(_JOBS)
                lag = await conn.fetch(_LAG)
                letters = await conn.fetch(_DEAD_LETTERS)
        except _UNREADABLE as error:
            log.warning("metrics without the database's figures (%s)", type(error).__name__)
            self.families, self.up = [], False
            return
        self.families, self.up = _families(jobs, lag, letters), True

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "stagecast_database_up",
            "1 when this scrape could read PostgreSQL's figures, 0 when not.",
            value=int(self.up),
        )
        yield from self.families


def _families(
    jobs: list[asyncpg.Record], lag: list[asyncpg.Record], letters: list[asyncpg.Record]
) -> list[Metric]:
    by_status = dict.fromkeys(JOB_STATUSES, 0) | {row["status"]: row["jobs"] for row in jobs}
    job_family = GaugeMetricFamily("stagecast_jobs", "Jobs by status.", labels=["status"])
    for status, count in by_status.items():
        job_family.add_metric([status], count)
    lag_family = GaugeMetricFamily(
        "stagecast_consumer_lag",
        "Messages between a consumer's committed offset and the end of a partition, at the "
        "latest sample (consumer_lag).",
        labels=["consumer_group", "topic", "partition"],
    )
    sampled = GaugeMetricFamily(
        "stagecast_consumer_lag_sampled_timestamp_seconds",
        "When a consumer group's lag was last sampled (Unix time).",
        labels=["consumer_group"],
    )
    latest: dict[str, float] = {}
    for row in lag:
        group = row["consumer_group"]
        lag_family.add_metric([group, row["topic"], str(row["partition"])], row["lag"])
        latest[group] = max(latest.get(group, 0.0), row["sampled_at"].timestamp())
    for group, moment in sorted(latest.items()):
        sampled.add_metric([group], moment)
    letter_family = CounterMetricFamily(
        "stagecast_dead_letters",
        "Dead letters recorded (dead_letters), by the topic they were refused on and code.",
        labels=["origin_topic", "error_code"],
    )
    for row in letters:
        letter_family.add_metric([row["origin_topic"], row["error_code"]], row["letters"])
    return [job_family, lag_family, sampled, letter_family]


class ApiMetrics:
    """The API process's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "stagecast_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.sse_clients = Gauge(
            "stagecast_sse_clients",
            "SSE feeds open now, by feed.",
            ["feed"],
            registry=self.registry,
        )
        self.database = DatabaseFigures()
        self.registry.register(self.database)

    async def connected(
        self, feed: str, events: AsyncGenerator[T, None]
    ) -> AsyncGenerator[T, None]:
        """The events of an SSE feed, counted as a connected client while they stream."""
        gauge = self.sse_clients.labels(feed)
        gauge.inc()
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            gauge.dec()


async def metrics_page(request: Request) -> Response:
    """The exposition, in the format the scraper asks for (text or OpenMetrics)."""
    metrics: ApiMetrics = request.app.state.metrics
    await metrics.database.read(request.app.state.pool)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(metrics.registry), headers={"Content-Type": content_type})


class HttpMetricsMiddleware:
    """Counts every HTTP request once it is answered, under its route's template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router leaves the route it chose in the scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
            self.metrics.http_requests.labels(route, method, str(status)).inc()
