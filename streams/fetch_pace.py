"""A consumer's fetch wait: short while messages flow, the configured one at rest.

The embedded broker holds a fetch over several partitions for its whole max wait even when
data is there, so every hop of a job waits half of it on average (about 5 ms at 10 ms). A
shorter wait makes each hop faster but polls the broker more: at rest that is CPU spent on
nothing (1 ms roughly doubles the idle stack's CPU). So a consumer uses the short wait only
for a while after it last received something, which is when a job's next hop is due.

A consumer reading a backlog says it is behind: then it fetches with the resting wait at once,
because the embedded broker answers short fetches with little data, and a catch-up read in
small fetches is several times slower (bench/projector.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

# How long after the last message a consumer keeps the short wait.
BUSY_FOR_S = 1.0


class FetchPace:
    """Chooses the wait of a consumer's next fetch from when it last received something."""

    def __init__(
        self,
        resting_ms: int,
        busy_ms: int | None,
        busy_for_s: float = BUSY_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resting_ms = resting_ms
        # None: always the resting wait (a real Kafka answers as soon as data arrives).
        self.busy_ms = busy_ms
        self.busy_for_s = busy_for_s
        self._clock = clock
        self._last_received: float | None = None

    def wait_ms(self, received: bool, behind: bool = False) -> int:
        """The wait for the next fetch, after a fetch that `received` something or not;
        `behind` when more is already waiting on the broker."""
        now = self._clock()
        if behind:
            self._last_received = None
            return self.resting_ms
        if received:
            self._last_received = now
        if self.busy_ms is None or self._last_received is None:
            return self.resting_ms
        if now - self._last_received <= self.busy_for_s:
            return min(self.busy_ms, self.resting_ms)
        return self.resting_ms

    def pace(self, consumer: AIOKafkaConsumer, received: bool, behind: bool = False) -> None:
        """Set the wait of `consumer`'s next fetch (aiokafka reads it for every request)."""
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = self.wait_ms(received, behind)
