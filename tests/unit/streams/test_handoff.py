"""What a worker remembers of the stages it ran from a hand-off, and what it may hand off."""

from __future__ import annotations

import asyncio

from streams.handoff import HandedOff, Handoff


async def taker(record: object) -> None:
    return None


async def test_a_handed_off_run_is_found_once_by_its_delivery() -> None:
    handed = HandedOff()
    run = handed.started("job-1", 1)
    assert handed.arrived("job-1", 2) is None  # another attempt is another command
    assert handed.arrived("job-1", 1) is run
    assert handed.arrived("job-1", 1) is None  # a second copy runs the usual way


async def test_deliveries_that_never_come_are_forgotten_beyond_the_capacity() -> None:
    handed = HandedOff(capacity=2)
    for job in ("a", "b", "c"):
        handed.started(job, 1)
    assert len(handed) == 2
    assert handed.arrived("a", 1) is None
    assert isinstance(handed.arrived("c", 1), asyncio.Future)


def test_only_an_owned_partition_of_an_accepting_topic_is_handed_off() -> None:
    handoff = Handoff()
    handoff.accept("stage.compile", taker)
    handoff.ownership.assigned([("stage.compile", 0), ("stage.parse", 1)])
    assert handoff.taker("stage.compile", 0) is taker
    assert handoff.taker("stage.compile", 1) is None  # another worker reads it
    assert handoff.taker("stage.parse", 1) is None  # nothing here takes that topic
    handoff.ownership.revoked()
    assert handoff.taker("stage.compile", 0) is None  # mid-rebalance: through the broker


def test_the_partitions_read_of_a_topic_are_where_its_commands_are_placed() -> None:
    handoff = Handoff()
    handoff.accept("stage.compile", taker)
    handoff.ownership.assigned([("stage.compile", 0), ("stage.compile", 3), ("stage.parse", 1)])
    assert handoff.ownership.partitions("stage.compile") == {0, 3}
    assert handoff.ownership.partitions("stage.codegen") == frozenset()
    assert handoff.accepts("stage.compile") and not handoff.accepts("stage.parse")
    assert handoff.taker("stage.compile", None) is None  # not placed: the producer chooses
