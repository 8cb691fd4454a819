"""Lag per partition from where partitions end and where a consumer is."""

from __future__ import annotations

from projections.lag import PROJECTOR_GROUP_PREFIX, LagSample, consumers, lag_samples
from streams.settings import STAGES, Settings


def test_lag_is_what_lies_past_the_committed_offset() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("u", 0): 0}
    committed: dict[tuple[str, int], int | None] = {("t", 0): 4, ("t", 1): 5}
    assert lag_samples("g", ends, committed) == [
        LagSample("g", "t", 0, 10, 4, 6),
        LagSample("g", "t", 1, 5, 5, 0),
        LagSample("g", "u", 0, 0, None, 0),
    ]


def test_a_partition_never_committed_lags_by_all_of_it() -> None:
    assert lag_samples("g", {("t", 0): 7}, {("t", 0): None}) == [LagSample("g", "t", 0, 7, None, 7)]


def test_an_offset_past_the_end_is_no_negative_lag() -> None:
    # An offset from an older log, before the consumer reads the new one again.
    assert lag_samples("g", {("t", 0): 3}, {("t", 0): 40})[0].lag == 0


def test_the_workers_group_and_each_projector_read_their_own_topics() -> None:
    settings = Settings(_env_file=None, topic_prefix="p", app_id="workers")  # type: ignore[call-arg]
    found = {c.group: set(c.topics) for c in consumers(settings, ["main", "deadletters"])}
    assert found == {
        "workers": {"p.requests", *(f"p.stage.{stage}" for stage in STAGES)},
        PROJECTOR_GROUP_PREFIX + "main": {"p.requests", "p.events", "p.progress"},
        PROJECTOR_GROUP_PREFIX + "deadletters": {"p.deadletter"},
    }
