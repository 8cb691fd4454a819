"""What the API takes from the wire, checked without a server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.feed import FeedNotifier
from api.inputs import ascii_int, is_tenant, nested_deeper_than, unstorable_strings


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


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


# Strings full of what the depth scan must see through: brackets, quotes, backslashes.
_TRICKY = st.text(alphabet='[]{}"\\ a\u00e9\u2028', max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TRICKY,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_TRICKY, children, max_size=4)
    ),
    max_leaves=40,
)


@given(_JSON, st.integers(min_value=0, max_value=12), st.booleans())
def test_the_depth_scan_agrees_with_the_parsed_value(
    value: Any, limit: int, ensure_ascii: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert nested_deeper_than(text, limit) is (_depth(value) > limit)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'"[[[{{{"', 0),
        (b'["\\"[[[{"]', 1),  # an escaped quote does not end the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does not escape the quote after it
    ],
)
def test_the_depth_scan_counts_only_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert not nested_deeper_than(text, depth)
    assert nested_deeper_than(text, depth - 1) is (depth > 0)


def test_the_depth_scan_stops_at_the_limit() -> None:
    assert nested_deeper_than(b"[" * 1_000_000, 32)


def test_strings_utf8_and_postgres_can_hold_are_storable() -> None:
    clean = {"dsl": "caf\u00e9 \U0001f600 \u2028", "labels": {"k": "v"}, "n": [1, None, 2.5]}
    assert unstorable_strings(clean) == []


def test_nul_and_unpaired_surrogates_are_found_wherever_they_are() -> None:
    value = {
        "dsl": "\ud800",
        "labels": {"\udfff": "x", "team": "a\x00b"},
        "train": {"layers": [{"name": "ok"}, {"name": "\ud83d"}]},
        "\x00": 1,
    }
    assert unstorable_strings(value) == [
        {"field": "dsl", "problem": "contains an unpaired surrogate, which is not Unicode text"},
        {
            "field": "labels.\\udfff",
            "problem": "the key contains an unpaired surrogate, which is not Unicode text",
        },
        {
            "field": "labels.team",
            "problem": "contains NUL (\\u0000), which cannot be stored as text",
        },
        {
            "field": "train.layers.1.name",
            "problem": "contains an unpaired surrogate, which is not Unicode text",
        },
        {
            "field": "\\u0000",
            "problem": "the key contains NUL (\\u0000), which cannot be stored as text",
        },
    ]


def test_one_answer_lists_at_most_twenty_unstorable_strings() -> None:
    problems = unstorable_strings(["\x00"] * 1000)
    assert [p["field"] for p in problems] == [str(i) for i in range(20)]


@pytest.mark.parametrize("tenant", ["default", "acme corp", "caf\u00e9", "t" * 100])
def test_tenants_are_printable(tenant: str) -> None:
    assert is_tenant(tenant)


@pytest.mark.parametrize("tenant", ["", "t" * 101, "\x00", "a\x01b", "a\x7f", "a\x85", "\ud800"])
def test_control_characters_and_lone_surrogates_are_no_tenant(tenant: str) -> None:
    assert not is_tenant(tenant)
