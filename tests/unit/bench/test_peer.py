"""The peer bench's pure parts: what it requires, and how it prints its figures."""

from __future__ import annotations

import pytest
from e2e_latency import percentile
from peer import (
    MISSING_REQUIREMENT_EXIT,
    Latencies,
    Throughput,
    latency_table,
    missing_requirements,
    ratio_lines,
    render_table,
    require,
)


def test_percentile_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.95) == 7.0


def test_missing_redis_server_names_the_install_command() -> None:
    missing = missing_requirements(lambda _: None, lambda _: True)
    assert len(missing) == 1
    assert "apt-get install redis-server" in missing[0]
    assert "make bench-deps" in missing[0]


def test_missing_python_packages_name_the_bench_extra() -> None:
    missing = missing_requirements(lambda name: f"/usr/bin/{name}", lambda name: name != "celery")
    assert missing == [
        "the Python package celery is not installed: run `make bench-deps` "
        "(or `.venv/bin/pip install -e '.[bench]'`)"
    ]


def test_nothing_missing_when_every_part_is_there() -> None:
    assert missing_requirements(lambda name: f"/usr/bin/{name}", lambda _: True) == []


def test_require_exits_non_zero_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        require(missing_requirements(lambda _: None, lambda _: True))
    assert exited.value.code == MISSING_REQUIREMENT_EXIT != 0
    assert "apt-get install redis-server" in capsys.readouterr().err


def test_require_returns_when_nothing_is_missing() -> None:
    require([])


def test_table_aligns_figures_right_and_names_left() -> None:
    table = render_table(("system", "jobs/s"), [("celery", "104.0"), ("stagecast API", "47.5")])
    assert table.splitlines() == [
        "system         jobs/s",
        "celery          104.0",
        "stagecast API    47.5",
    ]


def test_latency_table_has_one_row_per_system_with_percentiles() -> None:
    rows = latency_table([Latencies("peer", (10.0, 11.0, 12.0)), Latencies("sc", (70.0,))])
    header, peer, stagecast = rows.splitlines()
    assert header.split()[-8:] == ["p50", "ms", "p95", "ms", "p99", "ms", "mean", "ms"]
    assert peer.split() == ["peer", "3", "11.0", "12.0", "12.0", "11.0"]
    assert stagecast.split() == ["sc", "1", "70.0", "70.0", "70.0", "70.0"]


def test_ratios_divide_stagecast_by_the_peer() -> None:
    lines = ratio_lines(
        Latencies("sc", (20.0,)),
        Latencies("peer", (10.0,)),
        [Throughput("sc API", 100, 0.5)],
        Throughput("peer", 100, 1.0),
    )
    assert lines == [
        "latency p50 stagecast / Celery: 2.00x",
        "latency p95 stagecast / Celery: 2.00x",
        "latency p99 stagecast / Celery: 2.00x",
        "jobs/s sc API / Celery: 2.00x",
    ]
