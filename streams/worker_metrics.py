"""What a worker counts for Prometheus: stage runs and their durations, runs in flight, the
dead letters it sends, and the partitions its consumer group gives it. One registry per
worker, served on its metrics port."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a parse of a few milliseconds to a training of half an hour.
STAGE_SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)


class WorkerMetrics:
    """The worker's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_runs = Counter(
            "stagecast_stage_runs",
            "Stage attempts run by this worker, by stage and outcome (SUCCEEDED, FAILED, "
            "CANCELLED; ENDED_ELSEWHERE when the watchdog had already ended the attempt).",
            ["stage", "outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "stagecast_stage_duration_seconds",
            "How long stage attempts ran here (the duration their outcome event carries).",
            ["stage"],
            buckets=STAGE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.runs_in_flight = Gauge(
            "stagecast_stage_runs_in_flight",
            "Stage attempts running on this worker now.",
            ["stage"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "stagecast_worker_dead_letters_sent",
            "Messages this worker's agents could not decode or handle and dead-lettered, by "
            "the topic they were read from and the error code.",
            ["topic", "error_code"],
            registry=self.registry,
        )

        self.assigned_partitions = Gauge(
            "stagecast_worker_assigned_partitions",
            "Partitions of each topic the consumer group gives this worker since its latest "
            "rebalance (the workers of one group share every topic's partitions).",
            ["topic"],
            registry=self.registry,
        )

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The group's latest assignment to this worker replaces the one before."""
        counts = collections.Counter(topic for topic, _ in partitions)
        # No await in between: a scrape never sees the gauge half rewritten.
        self.assigned_partitions.clear()
        for topic, count in counts.items():
            self.assigned_partitions.labels(topic).set(count)

    @contextlib.contextmanager
    def running(self, stage: str) -> Iterator[None]:
        """Counts a stage attempt in flight while the block runs."""
        gauge = self.runs_in_flight.labels(stage)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def ran(self, stage: str, outcome: str, duration_ms: int) -> None:
        self.stage_runs.labels(stage, outcome).inc()
        self.stage_seconds.labels(stage).observe(duration_ms / 1000)

    def dead_lettered(self, topic: str, error_code: str) -> None:
        self.dead_letters.labels(topic, error_code).inc()
