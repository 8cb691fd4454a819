"""The language's shared words: what DSL.md lists, once."""

from __future__ import annotations

from consumers.vocabulary import ACTIVATIONS, LOSSES, OPTIMIZERS, known_metric


def test_the_lists_are_those_of_the_language() -> None:
    assert {"relu", "softmax", "silu", "linear"} <= set(ACTIVATIONS)
    assert set(LOSSES) == {
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_crossentropy",
        "mse",
        "mae",
        "huber",
    }
    assert set(OPTIMIZERS) == {"Adam", "AdamW", "SGD", "RMSprop"}


def test_metric_aliases_resolve_and_unknown_metrics_do_not() -> None:
    assert known_metric("acc") == "accuracy"
    assert known_metric("accuracy") == "accuracy"
    assert known_metric("mean_squared_error") == "mse"
    assert known_metric("f1") is None
