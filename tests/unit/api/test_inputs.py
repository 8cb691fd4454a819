"""What the API takes from the wire, checked without a server."""

from __future__ import annotations

import uuid

import pytest

from api.feed import FeedNotifier
from api.inputs import ascii_int


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("42", 42), ("007", 7), ("9" * 19, 10**19 - 1)]
)
def test_ascii_digits_are_integers(text: str, value: int) -> None:
    assert ascii_int(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "²", "\u0661", "1\u0661", "-1", "+1", " 1", "1 ", "1_000", "0x1", "1" * 20, "1" * 5000],
)
def test_anything_else_is_not(text: str) -> None:
    assert ascii_int(text) is None


@pytest.mark.parametrize(
    ("head", "woken"), [("12", True), ("²", False), ("\u0661", False), ("x", False)]
)
def test_a_notify_wakes_a_feed_only_under_an_ascii_seq(head: str, woken: bool) -> None:
    notifier = FeedNotifier("postgresql://unused")
    job_id = uuid.uuid4()
    with notifier.watch(job_id) as changed:
        notifier._on_notify(None, 0, "stagecast_events", f"{head} {job_id}")
        assert changed.is_set() is woken
