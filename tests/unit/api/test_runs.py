"""Parsing and shaping for metrics, run comparison and label filters, without a server."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.errors import ApiError
from api.jobs import MAX_LABEL_FILTERS, label_filters
from api.runs import (
    MAX_COMPARED,
    compared_job_ids,
    duration_ms,
    flat_params,
    json_number,
    metric_names,
)


def refused(error: pytest.ExceptionInfo[ApiError], code: str) -> None:
    assert (error.value.status, error.value.code) == (400, code)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.25, 0.25),
        (-3.0, -3.0),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_doubles_as_json_can_hold_them(value: float, shown: float | str) -> None:
    assert json_number(value) == shown


def test_metric_name_filters() -> None:
    assert metric_names([]) is None
    assert metric_names(["loss", "val_loss", "loss"]) == ["loss", "val_loss"]
    for bad in ([""], ["a\x00"], ["x" * 501], ["n"] * 101):
        with pytest.raises(ApiError) as error:
            metric_names(bad)
        refused(error, "INVALID_QUERY")


def test_compared_ids_come_in_order_once_each() -> None:
    a, b, c = (uuid.uuid4() for _ in range(3))
    assert compared_job_ids([f"{a},{b}"]) == [a, b]
    assert compared_job_ids([f"{c}, {a}", str(b)]) == [c, a, b]
    assert compared_job_ids([f"{a},{b},{a}", str(a).upper()]) == [a, b]


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ([], "INVALID_QUERY"),
        ([""], "INVALID_JOB_ID"),
        (["{a}"], "INVALID_QUERY"),
        (["{a},{a}"], "INVALID_QUERY"),
        (["{a},not-a-uuid"], "INVALID_JOB_ID"),
        (["{a},{b},"], "INVALID_JOB_ID"),
        ([",".join(str(uuid.uuid4()) for _ in range(MAX_COMPARED + 1))], "INVALID_QUERY"),
    ],
)
def test_bad_or_too_many_compared_ids_are_refused(values: list[str], code: str) -> None:
    ids = {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())}
    with pytest.raises(ApiError) as error:
        compared_job_ids([value.format(**ids) for value in values])
    refused(error, code)
    if code == "INVALID_JOB_ID":
        assert error.value.details["invalid"] == [
            part for part in ",".join(values).split(",") if "{" not in part
        ]


def test_twenty_ids_are_fine() -> None:
    ids = [uuid.uuid4() for _ in range(MAX_COMPARED)]
    assert compared_job_ids([",".join(map(str, ids))]) == ids


@pytest.mark.parametrize(
    ("train", "params"),
    [
        (None, {}),
        ({}, {}),
        (
            {"epochs": 3, "optimizer": {"name": "adam", "lr": 0.001}, "layers": [1, 2]},
            {"epochs": 3, "optimizer.name": "adam", "optimizer.lr": 0.001, "layers": [1, 2]},
        ),
        ({"a": {"b": {"c": 1}}, "empty": {}}, {"a.b.c": 1, "empty": {}}),
        ("not json", {"train": "not json"}),
        ([1, 2], {"train": [1, 2]}),
    ],
)
def test_train_settings_become_flat_params(train: Any, params: dict[str, Any]) -> None:
    assert flat_params(train) == params


def test_a_duration_needs_both_ends() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert duration_ms(start, start + timedelta(seconds=5, microseconds=1500)) == 5002
    assert duration_ms(start, None) is None
    assert duration_ms(None, start) is None


def test_label_filters_split_at_the_first_colon() -> None:
    assert label_filters([]) == []
    assert label_filters(["team:vision", "url:http://x:1", "empty:"]) == [
        {"team": "vision"},
        {"url": "http://x:1"},
        {"empty": ""},
    ]


@pytest.mark.parametrize(
    "values",
    [["team"], [":vision"], ["team\x00:x"], ["team:x\x00"], ["k:v"] * (MAX_LABEL_FILTERS + 1)],
)
def test_bad_label_filters_are_refused(values: list[str]) -> None:
    with pytest.raises(ApiError) as error:
        label_filters(values)
    refused(error, "INVALID_QUERY")
