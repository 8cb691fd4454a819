"""The memory bench's pure parts: reading /proc texts, process trees, growth and the report."""

from __future__ import annotations

import pytest
from memory import (
    Sample,
    descendants,
    growth_per_thousand,
    parent_of,
    progress_line,
    report,
    resident_kib,
)

STATUS = """Name:\tpostgres
VmRSS:\t  150000 kB
RssAnon:\t    4000 kB
RssFile:\t    9000 kB
RssShmem:\t  137000 kB
"""


def test_resident_memory_leaves_shared_memory_out() -> None:
    assert resident_kib(STATUS) == 13000


def test_a_status_without_rss_lines_is_zero() -> None:
    assert resident_kib("Name:\tkthreadd\nState:\tS (sleeping)\n") == 0


def test_parent_is_read_after_a_command_name_with_spaces_and_parentheses() -> None:
    assert parent_of("4242 (postgres: (checkpointer) x) S 4100 4242 4242 0 -1") == 4100


def test_descendants_follow_the_whole_tree_and_nothing_else() -> None:
    parents = {10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert sorted(descendants(10, parents)) == [10, 11, 12, 13]


def test_growth_is_the_slope_per_thousand_jobs() -> None:
    samples = [Sample(jobs, {"api": 50_000 + jobs // 10}) for jobs in (2000, 3000, 4000, 5000)]
    assert growth_per_thousand(samples, "api") == pytest.approx(100.0)


def test_flat_memory_has_no_growth() -> None:
    samples = [Sample(jobs, {"worker": 80_000}) for jobs in (1000, 2000, 3000)]
    assert growth_per_thousand(samples, "worker") == 0.0


def test_growth_needs_two_job_counts() -> None:
    with pytest.raises(ValueError, match="two job counts"):
        growth_per_thousand([Sample(1000, {"api": 1})], "api")


def test_report_fits_only_after_the_warm_up() -> None:
    samples = [
        Sample(0, {"api": 10_240}),
        Sample(1000, {"api": 40_960}),  # the warm-up's jump is not growth per job
        Sample(2000, {"api": 40_960}),
        Sample(3000, {"api": 40_960}),
    ]
    lines = report(samples, warm_up=1000).splitlines()
    assert lines[0].split()[-5:] == ["1000", "2000", "3000", "KiB/1000", "jobs"]
    assert lines[1].split() == ["api", "10.0", "40.0", "40.0", "40.0", "0.0"]
    assert "from 1000 jobs on" in lines[2]
    assert "broker" in lines[2]


def test_each_sample_is_printed_as_it_is_taken() -> None:
    line = progress_line(Sample(3000, {"worker": 61_440, "api": 52_736}), 12.34)
    assert line == "  3000 jobs done (12.3 jobs/s); MiB: worker 60.0, api 51.5"
