"""A StageCommand's documents read and write the values the standard library's json would."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.document import document_of, document_text

IR = {
    "name": "digits_cnn",
    "layers": [{"op": "conv2d", "filters": 32, "shape": [1, 28, 28]}, {"op": "dense", "units": 10}],
    "params": 1_234_567,
    "ratio": 0.25,
    "note": "ünïcode ✓",
    "nothing": None,
}


@pytest.mark.parametrize(
    "value",
    [
        IR,
        {"loss": math.nan, "best": math.inf, "worst": -math.inf},
        {"big": 2**70, "small": -(2**70)},
        {1: "one", 2.5: "two and a half", None: "none"},
        [],
        "text",
    ],
)
def test_written_documents_read_back_as_the_standard_library_reads_them(value: Any) -> None:
    text = document_text(value)
    expected = json.loads(json.dumps(value))
    read = document_of(text)
    assert json.dumps(read) == json.dumps(expected)
    assert json.dumps(json.loads(text)) == json.dumps(expected)


def test_text_with_nan_and_big_integers_is_read_as_the_standard_library_reads_it() -> None:
    text = '{"loss": NaN, "big": 123456789012345678901234567890, "s": "\\ud800"}'
    read = document_of(text)
    assert math.isnan(read["loss"])
    assert read["big"] == 123456789012345678901234567890
    assert read["s"] == json.loads(text)["s"]
    # A lone surrogate in the text itself, as a str may hold one.
    assert document_of('["\ud800"]') == json.loads('["\ud800"]')


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", '{"a": 1} trailing', "[1, 2,]"])
def test_text_that_is_not_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        document_of(text)


@dataclasses.dataclass
class Layer:
    units: int


@pytest.mark.parametrize("value", [{"at": datetime.now(UTC)}, {"layer": Layer(3)}, {1j: 1}])
def test_what_json_cannot_hold_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        document_text(value)
