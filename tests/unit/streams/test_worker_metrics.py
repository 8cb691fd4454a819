"""A worker's stage-run metrics: runs in flight go back down whatever happens in the run."""

from __future__ import annotations

import pytest

from streams.worker_metrics import WorkerMetrics

ASSIGNED = "stagecast_worker_assigned_partitions"


def value(metrics: WorkerMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_run_in_flight_is_counted_until_it_ends_even_by_an_exception() -> None:
    metrics = WorkerMetrics()
    with metrics.running("parse"):
        assert value(metrics, "stagecast_stage_runs_in_flight", {"stage": "parse"}) == 1
    with pytest.raises(RuntimeError), metrics.running("parse"):
        raise RuntimeError("the stage crashed")
    assert value(metrics, "stagecast_stage_runs_in_flight", {"stage": "parse"}) == 0


def test_a_run_counts_its_outcome_and_duration_in_seconds() -> None:
    metrics = WorkerMetrics()
    metrics.ran("compile", "FAILED", 1500)
    labels = {"stage": "compile", "outcome": "FAILED"}
    assert value(metrics, "stagecast_stage_runs_total", labels) == 1
    assert value(metrics, "stagecast_stage_duration_seconds_sum", {"stage": "compile"}) == 1.5
    assert (
        value(metrics, "stagecast_stage_duration_seconds_bucket", {"stage": "compile", "le": "1.0"})
        == 0
    )


def test_a_new_assignment_replaces_the_partitions_counted_before() -> None:
    metrics = WorkerMetrics()
    metrics.assigned([("stagecast.requests", 0), ("stagecast.requests", 3), ("stagecast.x", 1)])
    assert value(metrics, ASSIGNED, {"topic": "stagecast.requests"}) == 2
    metrics.assigned([("stagecast.requests", 5)])
    assert value(metrics, ASSIGNED, {"topic": "stagecast.requests"}) == 1
    # A topic the worker no longer reads is not left at its old count.
    assert value(metrics, ASSIGNED, {"topic": "stagecast.x"}) is None
