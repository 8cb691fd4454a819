"""Loss, optimizer, metrics and train settings: checked, aliases resolved, defaults filled."""

from __future__ import annotations

import pytest

from tests.unit.parse.sources import network, only, parsed


@pytest.mark.parametrize(
    ("output", "loss"),
    [
        ("Output(10, 'softmax')", "sparse_categorical_crossentropy"),
        ("Output(10)", "sparse_categorical_crossentropy"),
        ("Output(1, 'sigmoid')", "binary_crossentropy"),
        ("Output(4, 'sigmoid')", "binary_crossentropy"),
        ("Output(1)", "mse"),
    ],
)
def test_default_loss_follows_the_output_layer(output: str, loss: str) -> None:
    assert parsed(network(f"    {output}"))["loss"] == loss


@pytest.mark.parametrize(
    ("written", "loss"),
    [
        ('"categorical_crossentropy"', "categorical_crossentropy"),
        ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
        ("'binary_crossentropy'", "binary_crossentropy"),
        ("mse", "mse"),
        ("mean_squared_error", "mse"),
        ("'mean_absolute_error'", "mae"),
        ("huber", "huber"),
    ],
)
def test_loss_by_string_or_bare_name_with_aliases(written: str, loss: str) -> None:
    assert parsed(network("    Output(2)", extra=f"  loss: {written}"))["loss"] == loss


def test_unknown_loss_with_hint() -> None:
    problem = only(network("    Output(2)", extra="  loss: 'categorical_crossentropi'"))
    assert problem.code == "DSL_BAD_PARAM"
    assert problem.hint == "did you mean 'categorical_crossentropy'?"


def test_loss_must_be_a_name() -> None:
    assert only(network("    Output(2)", extra="  loss: 3")).code == "DSL_BAD_PARAM"


@pytest.mark.parametrize(
    ("written", "optimizer"),
    [
        ("Adam", {"type": "Adam", "params": {"learning_rate": 0.001}}),
        ("'adam'", {"type": "Adam", "params": {"learning_rate": 0.001}}),
        ("Adam(0.01)", {"type": "Adam", "params": {"learning_rate": 0.01}}),
        (
            "AdamW(learning_rate=0.0003)",
            {"type": "AdamW", "params": {"learning_rate": 0.0003, "weight_decay": 0.01}},
        ),
        (
            "SGD(learning_rate=0.1, momentum=0.9, nesterov=True)",
            {"type": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}},
        ),
        (
            '"sgd"',
            {"type": "SGD", "params": {"learning_rate": 0.001, "momentum": 0.0, "nesterov": False}},
        ),
        ("RMSprop(learning_rate=0.002)", {"type": "RMSprop", "params": {"learning_rate": 0.002}}),
    ],
)
def test_optimizer_by_name_string_or_call_with_defaults(written: str, optimizer: object) -> None:
    ir = parsed(network("    Output(2)", extra=f"  optimizer: {written}"))
    assert ir["optimizer"] == optimizer


def test_unknown_optimizer_with_hint() -> None:
    problem = only(network("    Output(2)", extra="  optimizer: Adamm(learning_rate=0.1)"))
    assert problem.code == "DSL_BAD_PARAM" and "Adamm" in problem.message
    assert problem.hint == "did you mean 'Adam'?"


@pytest.mark.parametrize(
    "written",
    ["Adam(learning_rate=0)", "SGD(momentum=2)", "Adam(lr=0.1)", "AdamW(weight_decay=-1)", "3"],
)
def test_bad_optimizer_params(written: str) -> None:
    assert only(network("    Output(2)", extra=f"  optimizer: {written}")).code == "DSL_BAD_PARAM"


def test_optimizer_param_near_miss_gets_a_hint() -> None:
    problem = only(network("    Output(2)", extra="  optimizer: Adam(learning_rat=0.1)"))
    assert problem.hint == "did you mean 'learning_rate'?"


def test_metrics_are_canonical_names() -> None:
    ir = parsed(network("    Output(2)", extra="  metrics: ['acc', mae, 'mean_squared_error']"))
    assert ir["metrics"] == ["accuracy", "mae", "mse"]


def test_empty_metrics_list_is_kept_empty() -> None:
    assert parsed(network("    Output(2)", extra="  metrics: []"))["metrics"] == []


def test_unknown_metric_with_hint() -> None:
    problem = only(network("    Output(2)", extra="  metrics: ['accuracy', 'acuracy']"))
    assert problem.code == "DSL_BAD_PARAM" and problem.hint == "did you mean 'accuracy'?"


def test_metrics_must_be_a_list() -> None:
    assert only(network("    Output(2)", extra="  metrics: 'accuracy'")).code == "DSL_BAD_PARAM"


@pytest.mark.parametrize(
    "dataset",
    [
        "sklearn:digits",
        "sklearn:iris",
        "sklearn:wine",
        "sklearn:breast_cancer",
        "synthetic:classification?shape=4&classes=2",
        "synthetic:regression?features=3",
        "synthetic:sequence?vocab=10&length=5",
        "file:data/x.npz",
        "file:rows.csv",
    ],
)
def test_known_datasets(dataset: str) -> None:
    ir = parsed(network("    Output(2)", extra=f"  train {{ dataset: '{dataset}' }}"))
    assert ir["train"]["dataset"] == dataset


@pytest.mark.parametrize(
    "dataset", ["'mnist'", "'sklearn:mnist'", "'file:data.txt'", "'synthetic:images'", "3"]
)
def test_unknown_datasets_are_bad_param(dataset: str) -> None:
    problem = only(network("    Output(2)", extra=f"  train {{ dataset: {dataset} }}"))
    assert problem.code == "DSL_BAD_PARAM" and "dataset" in problem.message


@pytest.mark.parametrize(
    "setting",
    [
        "epochs: 0",
        "epochs: 1.5",
        "batch_size: -2",
        "validation_split: 1",
        "validation_split: -0.1",
        "seed: -1",
        "shuffle: 'yes'",
    ],
)
def test_bad_train_settings(setting: str) -> None:
    problem = only(network("    Output(2)", extra=f"  train {{ {setting} }}"))
    assert problem.code == "DSL_BAD_PARAM"
    assert f"'{setting.split(':')[0]}'" in problem.message


def test_unknown_train_key_is_an_error_with_hint() -> None:
    problem = only(network("    Output(2)", extra="  train { epoch: 3 }"))
    assert problem.code == "DSL_BAD_PARAM" and "'epoch'" in problem.message
    assert problem.hint == "did you mean 'epochs'?"


def test_train_key_given_twice() -> None:
    problem = only(network("    Output(2)", extra="  train { epochs: 3 epochs: 4 }"))
    assert problem.code == "DSL_BAD_PARAM" and "twice" in problem.message
