"""When a session asks the broker its generation: after a fetch only over connections it has not
seen the broker answer on, and every IDLE_GENERATION_CHECK_S while nothing is fetched."""

from __future__ import annotations

from projections.session import IDLE_GENERATION_CHECK_S, GenerationWatch


class Conn:
    def __init__(self) -> None:
        self.open = True

    def connected(self) -> bool:
        return self.open


def answered(watch: GenerationWatch, connections: dict[object, Conn]) -> None:
    """What check() records once the broker answered in the watch's generation."""
    watch._answered_over = dict(connections)


def test_the_first_fetch_asks() -> None:
    watch = GenerationWatch("g1")
    assert watch.needs_asking({(0, "default"): Conn()}, fetched=True, clock=0.0)
    # With no connection at all there is nothing it has seen the broker answer on either.
    assert GenerationWatch("g1").needs_asking({}, fetched=True, clock=0.0)


def test_fetches_over_the_connections_that_answered_do_not_ask() -> None:
    watch = GenerationWatch("g1")
    connections: dict[object, Conn] = {(0, "default"): Conn(), (1, "default"): Conn()}
    answered(watch, connections)
    assert not watch.needs_asking(connections, fetched=True, clock=0.0)
    assert not watch.needs_asking(dict(connections), fetched=True, clock=100.0)


def test_a_new_closed_or_added_connection_asks() -> None:
    watch = GenerationWatch("g1")
    first = Conn()
    answered(watch, {(0, "default"): first})
    # The broker restarted: the client connected again, to whatever listens there now.
    assert watch.needs_asking({(0, "default"): Conn()}, fetched=True, clock=0.0)
    # A connection to another node.
    assert watch.needs_asking({(0, "default"): first, (1, "default"): Conn()}, True, 0.0)
    # The same connection, closed: the next fetch will come over a new one.
    first.open = False
    assert watch.needs_asking({(0, "default"): first}, fetched=True, clock=0.0)
    # One that went away.
    assert watch.needs_asking({}, fetched=True, clock=0.0)


def test_idle_sessions_ask_every_few_seconds_whatever_their_connections() -> None:
    watch = GenerationWatch("g1")
    connections: dict[object, Conn] = {(0, "default"): Conn()}
    answered(watch, connections)
    assert not watch.needs_asking(connections, fetched=False, clock=10.0)
    assert not watch.needs_asking(connections, fetched=False, clock=10.0 + 0.5)
    # After a restart, fetches at the old positions may bring nothing at all.
    assert watch.needs_asking(connections, False, 10.0 + IDLE_GENERATION_CHECK_S)
