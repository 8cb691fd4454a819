"""Each construct of the model language parses to the IR that consumers/IR.md describes."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from consumers.parse.logic import parse_source
from streams.stage import StageResult
from tests.unit.parse.sources import network, parsed


def layer_params(line: str) -> dict[str, Any]:
    """The params of the first layer of a network made of `line` then an Output."""
    ir = parsed(network(f"    {line}\n    Output(2)"))
    params: dict[str, Any] = ir["layers"][0]["params"]
    return params


def test_hash_and_slash_comments_are_ignored() -> None:
    source = (
        "# a model\n// about digits\nnetwork Net { # opens\n  input: (4,) // shape\n"
        "  layers:\n    Output(2) # head\n}\n// the end"
    )
    assert parsed(source)["layers"][0]["type"] == "Output"


def test_single_and_double_quoted_strings_are_the_same() -> None:
    assert layer_params("Dense(3, 'relu')") == layer_params('Dense(3, "relu")')


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("True", True), ("true", True), ("False", False), ("false", False)],
)
def test_booleans_in_both_spellings(literal: str, expected: bool) -> None:
    assert layer_params(f"Dense(3, use_bias={literal})")["use_bias"] is expected


def test_none_activation_means_linear() -> None:
    assert layer_params("Dense(3, activation=None)")["activation"] == "linear"


def test_colon_and_equals_both_name_a_parameter() -> None:
    assert layer_params("Dense(units: 3, activation: 'tanh')") == layer_params(
        "Dense(units=3, activation='tanh')"
    )


def test_positional_and_named_params_fill_the_same_slots() -> None:
    assert layer_params("Dense(3, 'relu')") == layer_params("Dense(units=3, activation='relu')")


def test_tuples_and_lists_both_give_lists() -> None:
    source = network("    Reshape([5, 2])\n    Flatten()\n    Output(2)")
    assert parsed(source)["layers"][0]["params"]["target_shape"] == [5, 2]
    assert layer_params("Reshape((5, -1))") == {"target_shape": [5, -1]}


def test_a_layer_may_span_lines_inside_its_parentheses() -> None:
    params = layer_params("Dense(\n      units=3,\n      activation='relu',\n    )")
    assert params == {"units": 3, "activation": "relu", "use_bias": True}


def test_leading_none_is_the_batch_dimension_and_is_dropped() -> None:
    ir = parsed(network("    Flatten()\n    Output(2)", input_shape="(None, 28, 28, 1)"))
    assert ir["input_shape"] == [28, 28, 1]


def test_trailing_comma_tuple_is_a_one_dimensional_shape() -> None:
    assert parsed(network("    Output(2)", input_shape="(100,)"))["input_shape"] == [100]


def test_repeat_expands_into_consecutive_layers_on_the_same_line() -> None:
    ir = parsed(network("    Dense(8) * 3\n    Output(2)"))
    dense = ir["layers"][:3]
    assert [layer["type"] for layer in dense] == ["Dense"] * 3
    assert [layer["index"] for layer in ir["layers"]] == [0, 1, 2, 3]
    assert {(layer["line"], layer["column"]) for layer in dense} == {(4, 5)}
    dense[0]["params"]["units"] = 99
    assert dense[1]["params"]["units"] == 8


def test_repeated_layers_do_not_share_list_params() -> None:
    ir = parsed(
        network("    Conv2D(4, 3) * 2\n    Flatten()\n    Output(2)", input_shape="(8, 8, 1)")
    )
    first, second = ir["layers"][0]["params"], ir["layers"][1]["params"]
    assert first["kernel_size"] == second["kernel_size"] == [3, 3]
    assert first["kernel_size"] is not second["kernel_size"]


def test_sections_are_optional_and_get_their_defaults() -> None:
    ir = parsed(network("    Output(10, 'softmax')"))
    assert ir["loss"] == "sparse_categorical_crossentropy"
    assert ir["optimizer"] == {"type": "Adam", "params": {"learning_rate": 0.001}}
    assert ir["metrics"] == ["accuracy"]
    assert ir["train"] == {
        "epochs": 1,
        "batch_size": 32,
        "validation_split": 0.0,
        "dataset": None,
        "seed": None,
        "shuffle": True,
    }


def test_train_block_takes_every_key() -> None:
    train = """  train {
    epochs: 4
    batch_size: 8
    validation_split: 0.1
    dataset: "file:data/train.csv"
    seed: 0
    shuffle: False
  }"""
    ir = parsed(network("    Output(2)", extra=train))
    assert ir["train"] == {
        "epochs": 4,
        "batch_size": 8,
        "validation_split": 0.1,
        "dataset": "file:data/train.csv",
        "seed": 0,
        "shuffle": False,
    }


def test_train_block_on_one_line_with_commas_and_a_colon() -> None:
    ir = parsed(network("    Output(2)", extra="  train: { epochs: 2, batch_size: 4 }"))
    assert (ir["train"]["epochs"], ir["train"]["batch_size"]) == (2, 4)


def test_sections_may_come_in_any_order() -> None:
    source = (
        "network Net {\n  metrics: ['mae']\n  loss: mse\n  layers:\n    Output(1)\n  input: (3,)\n}"
    )
    ir = parsed(source)
    assert (ir["loss"], ir["metrics"], ir["input_shape"]) == ("mse", ["mae"], [3])


def test_source_sha256_is_of_the_exact_source_text() -> None:
    source = network("    Output(2)")
    assert parsed(source)["source_sha256"] == hashlib.sha256(source.encode()).hexdigest()


def test_summary_names_the_network_its_layer_count_and_input_shape() -> None:
    outcome = parse_source(network("    Dense(4) * 2\n    Output(2)", input_shape="(None, 6)"))
    assert isinstance(outcome, StageResult)
    assert outcome.summary == {"name": "Net", "layers": 3, "input_shape": [6]}
    assert outcome.warnings == ()


def test_windows_line_endings_parse_like_unix_ones() -> None:
    source = network("    Dense(4)\n    Output(2)")
    windows = parsed(source.replace("\n", "\r\n"))
    unix = parsed(source)
    assert windows["layers"] == unix["layers"]


def test_numbers_in_every_notation() -> None:
    assert layer_params("LayerNormalization(epsilon=1e-5)") == {"epsilon": 1e-5}
    assert layer_params("LayerNormalization(epsilon=.5)") == {"epsilon": 0.5}
    assert layer_params("LayerNormalization(epsilon=2.5E-3)") == {"epsilon": 0.0025}
    assert layer_params("Dropout(0)") == {"rate": 0.0}
    assert isinstance(layer_params("Dropout(0)")["rate"], float)


def test_two_thousand_layers_parse_quickly() -> None:
    layers = "\n".join(
        ["    Dense(64, activation='relu')  # hidden"] * 1000 + ["    Dropout(0.1)"] * 999
    )
    source = network(layers + "\n    Output(10, 'softmax')")
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        outcome = parse_source(source)
        best = min(best, time.perf_counter() - started)
    assert isinstance(outcome, StageResult)
    assert len(outcome.output["layers"]) == 2000
    assert best < 0.5
