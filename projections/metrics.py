"""What the projector process shows Prometheus: the projector's running totals and batch
times, the dead-letter recorder's totals, and the latest lag sample of the projectors.

The totals are read from the stats objects at scrape time (nothing is counted twice); only
the batch time is observed as it happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from projections.dead_letters import RecorderStats
    from projections.lag import LagSampler
    from projections.projector import ProjectorStats

# A batch commits in milliseconds when small, in a second or two when full and cut.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProjectorMetrics(Collector):
    """One projector's totals (from its ProjectorStats) and its batch write times."""

    def __init__(self, name: str, stats: ProjectorStats) -> None:
        self.name = name
        self.stats = stats
        self._batch_seconds = Histogram(
            "stagecast_projector_batch_seconds",
            "Time to write one batch: its rows, archive and offsets in one transaction.",
            ["projector"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=None,
        )
        self.batch_seconds = self._batch_seconds.labels(name)

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        totals = (
            ("messages", "Messages read from requests, events and progress.", stats.messages),
            ("events", "Events projected (new to the projections).", stats.applied),
            ("duplicates", "Events read again and dropped by event id.", stats.duplicates),
            ("undecodable", "Messages that could not be decoded or stored.", stats.undecodable),
            ("dead_letters_sent", "Dead letters this projector sent.", stats.dead_lettered),
            ("batches", "Batches committed.", stats.batches),
        )
        for name, documentation, value in totals:
            family = CounterMetricFamily(
                f"stagecast_projector_{name}", documentation, labels=["projector"]
            )
            family.add_metric([self.name], value)
            yield family
        yield from self._batch_seconds.collect()


class RecorderMetrics(Collector):
    """The dead-letter recorder's totals."""

    def __init__(self, stats: RecorderStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "stagecast_dead_letters_recorded",
            "Dead letters written to the dead_letters table (a letter read again is not).",
            value=self.stats.recorded,
        )
        yield CounterMetricFamily(
            "stagecast_dead_letters_unreadable",
            "Dead letters that could not be decoded themselves (recorded as far as possible).",
            value=self.stats.unreadable,
        )


class LagMetrics(Collector):
    """The latest lag sample of the given consumer groups, per partition."""

    def __init__(self, sampler: LagSampler, groups: Sequence[str]) -> None:
        self.sampler = sampler
        self.groups = frozenset(groups)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "stagecast_consumer_lag",
            "Messages between a consumer's committed offset and the end of a partition, at "
            "the latest sample.",
            labels=["consumer_group", "topic", "partition"],
        )
        for sample in self.sampler.latest:
            if sample.consumer_group in self.groups:
                family.add_metric(
                    [sample.consumer_group, sample.topic, str(sample.partition)], sample.lag
                )
        yield family
