"""Topic layout and the reading of CreateTopics answers."""

from __future__ import annotations

from streams.settings import Settings
from streams.topics import creation_failures, topic_partitions


def test_every_topic_has_its_partition_count() -> None:
    settings = Settings(_env_file=None, partitions=6, stage_partitions=3)  # type: ignore[call-arg]
    counts = topic_partitions(settings)
    assert counts["stagecast.events"] == 6
    assert counts["stagecast.stage.parse"] == 3
    assert counts["stagecast.control"] == 1
    assert set(counts) == set(settings.topics.all())


def test_existing_topics_are_fine_and_refusals_are_reported() -> None:
    answer = [
        ("a", 0, None),
        ("b", 36, "Topic 'b' already exists."),
        ("c", 38, "Replication factor: 3 larger than available brokers: 1."),
        ("d", 41),
    ]
    assert creation_failures(answer) == [
        "c: Replication factor: 3 larger than available brokers: 1.",
        "d: error code 41",
    ]
