"""Warnings for suspicious but compilable designs, and silence for sound ones."""

from __future__ import annotations

from typing import Any

from consumers.compile.logic import compile_ir
from streams.stage import StageResult

from .network import layer, network

FLATTEN_FIRST = (
    "Dense applied to a 3-D input acts on the last axis only — did you mean to Flatten first?"
)


def warnings_of(ir: dict[str, Any]) -> list[dict[str, Any]]:
    outcome = compile_ir(ir)
    assert isinstance(outcome, StageResult), outcome
    assert [warning.as_dict() for warning in outcome.warnings] == outcome.output["warnings"]
    assert outcome.summary["warnings"] == len(outcome.warnings)
    return list(outcome.output["warnings"])


def test_dense_on_a_sequence_suggests_flatten() -> None:
    ir = network(
        [10, 4],
        layer("Dense", line=6, units=8),
        layer("GlobalAveragePooling1D"),
        layer("Output", units=2, activation="softmax"),
    )
    assert warnings_of(ir) == [
        {
            "code": "DSL_SUSPICIOUS",
            "message": FLATTEN_FIRST,
            "line": 6,
            "column": 5,
            "hint": "add Flatten() before Dense",
        }
    ]


def test_a_sound_classifier_has_no_warnings() -> None:
    ir = network(
        [8, 8, 1],
        layer("Conv2D", filters=4, kernel_size=[3, 3], activation="relu"),
        layer("Flatten"),
        layer("Dense", units=16, activation="relu"),
        layer("Dropout", rate=0.5),
        layer("Output", units=10, activation="softmax"),
    )
    assert warnings_of(ir) == []


def test_a_sound_regression_and_binary_classifier_have_no_warnings() -> None:
    regression = network(
        [5], layer("Dense", units=4), layer("Output", units=1), loss="mse", metrics=["mae"]
    )
    binary = network(
        [5], layer("Output", units=1, activation="sigmoid"), loss="binary_crossentropy"
    )
    assert warnings_of(regression) == warnings_of(binary) == []


def test_softmax_trained_with_binary_crossentropy_is_flagged() -> None:
    ir = network(
        [5], layer("Output", line=9, units=3, activation="softmax"), loss="binary_crossentropy"
    )
    [warning] = warnings_of(ir)
    assert warning["line"] == 9 and "binary_crossentropy" in warning["message"]


def test_single_unit_cross_entropy_and_softmax_are_flagged() -> None:
    single = network([5], layer("Output", units=1, activation="softmax"))
    assert ["always 0" in w["message"] for w in warnings_of(single)] == [True]
    sigmoid_pair = network([5], layer("Output", units=2, activation="sigmoid"))
    assert "logits" in warnings_of(sigmoid_pair)[0]["message"]
    lonely_softmax = network(
        [5], layer("Output", units=1, activation="softmax"), loss="mse", metrics=[]
    )
    assert "always outputs 1" in warnings_of(lonely_softmax)[0]["message"]


def test_metrics_that_do_not_fit_the_loss_are_flagged() -> None:
    ir = network([5], layer("Output", units=1), loss="mse", metrics=["accuracy", "mae", "f1"])
    messages = [w["message"] for w in warnings_of(ir)]
    assert len(messages) == 2
    assert "'accuracy'" in messages[0] and "'f1'" in messages[1]


def test_nesterov_without_momentum_is_flagged() -> None:
    optimizer = {"type": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.0, "nesterov": True}}
    ir = network([5], layer("Output", units=2), optimizer=optimizer)
    assert "nesterov" in warnings_of(ir)[0]["message"]
