"""A consumer's fetch wait: short while messages flow, the resting one otherwise."""

from __future__ import annotations

from streams.fetch_pace import FetchPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_is_short_while_messages_flow_and_rests_after() -> None:
    clock = Clock()
    pace = FetchPace(10, 2, busy_for_s=1.0, clock=clock)
    assert pace.wait_ms(received=False) == 10
    assert pace.wait_ms(received=True) == 2
    clock.now += 0.9
    assert pace.wait_ms(received=False) == 2
    clock.now += 0.2
    assert pace.wait_ms(received=False) == 10
    assert pace.wait_ms(received=True) == 2


def test_without_a_busy_wait_the_resting_wait_stays() -> None:
    pace = FetchPace(500, None, clock=Clock())
    assert pace.wait_ms(received=True) == 500


def test_a_busy_wait_longer_than_the_resting_one_is_not_used() -> None:
    assert FetchPace(10, 50, clock=Clock()).wait_ms(received=True) == 10


def test_a_consumer_behind_fetches_with_the_resting_wait_until_it_catches_up() -> None:
    clock = Clock()
    pace = FetchPace(10, 2, busy_for_s=1.0, clock=clock)
    assert pace.wait_ms(received=True) == 2
    # A backlog: long fetches at once, though something came a moment ago.
    assert pace.wait_ms(received=True, behind=True) == 10
    clock.now += 0.1
    assert pace.wait_ms(received=False) == 10
    # Caught up and events trickle in: short fetches again.
    assert pace.wait_ms(received=True) == 2
