"""Every layer of the subset: positional params, defaults and the normalised forms of IR.md."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.parse.sources import network, only, parsed


def first_layer(line: str, input_shape: str = "(10,)") -> dict[str, Any]:
    ir = parsed(network(f"    {line}\n    Flatten()\n    Output(2)", input_shape=input_shape))
    layer: dict[str, Any] = ir["layers"][0]
    return layer


@pytest.mark.parametrize(
    ("line", "params"),
    [
        ("Dense(8)", {"units": 8, "activation": "linear", "use_bias": True}),
        (
            "Conv1D(4, 3)",
            {
                "filters": 4,
                "kernel_size": 3,
                "strides": 1,
                "padding": "valid",
                "dilation_rate": 1,
                "activation": "linear",
                "use_bias": True,
            },
        ),
        (
            "Conv2D(4, (3, 5))",
            {
                "filters": 4,
                "kernel_size": [3, 5],
                "strides": [1, 1],
                "padding": "valid",
                "dilation_rate": [1, 1],
                "activation": "linear",
                "use_bias": True,
            },
        ),
        ("MaxPooling1D()", {"pool_size": 2, "strides": 2, "padding": "valid"}),
        ("AveragePooling1D(3)", {"pool_size": 3, "strides": 3, "padding": "valid"}),
        ("MaxPooling2D()", {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}),
        (
            "AveragePooling2D(3, strides=1, padding='same')",
            {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"},
        ),
        (
            "MaxPooling2D((2, 3), strides=None)",
            {"pool_size": [2, 3], "strides": [2, 3], "padding": "valid"},
        ),
        ("GlobalAveragePooling1D()", {}),
        ("GlobalMaxPooling1D()", {}),
        ("GlobalAveragePooling2D()", {}),
        ("GlobalMaxPooling2D()", {}),
        ("Flatten()", {}),
        ("Dropout(0.5)", {"rate": 0.5}),
        ("BatchNormalization()", {"momentum": 0.99, "epsilon": 0.001}),
        ("BatchNormalization(momentum=0.9, epsilon=1e-5)", {"momentum": 0.9, "epsilon": 1e-5}),
        ("LayerNormalization()", {"epsilon": 0.001}),
        ("Activation('relu')", {"activation": "relu"}),
        ("Activation(activation='swish')", {"activation": "silu"}),
        ("Activation(None)", {"activation": "linear"}),
        ("Reshape((2, 5))", {"target_shape": [2, 5]}),
        ("SimpleRNN(4)", {"units": 4, "return_sequences": False}),
        ("LSTM(4, return_sequences=True)", {"units": 4, "return_sequences": True}),
        ("GRU(units=4)", {"units": 4, "return_sequences": False}),
        ("TransformerEncoder(2, 16)", {"num_heads": 2, "ff_dim": 16, "dropout": 0.1}),
        (
            "TransformerEncoder(num_heads=2, ff_dim=16, dropout=0)",
            {"num_heads": 2, "ff_dim": 16, "dropout": 0.0},
        ),
    ],
)
def test_layer_params_are_normalised_with_defaults(line: str, params: dict[str, Any]) -> None:
    layer = first_layer(line)
    assert layer["params"] == params
    assert layer["type"] == line.split("(")[0]


def test_conv1d_accepts_a_one_element_tuple_kernel() -> None:
    assert first_layer("Conv1D(4, kernel_size=(5,), strides=(2,))")["params"]["kernel_size"] == 5


def test_embedding_first_takes_input_and_output_dims() -> None:
    ir = parsed(network("    Embedding(100, 8)\n    Flatten()\n    Output(2)"))
    assert ir["layers"][0]["params"] == {"input_dim": 100, "output_dim": 8}


def test_output_keeps_units_and_activation() -> None:
    ir = parsed(network("    Output(units=3, activation='sigmoid', use_bias=False)"))
    assert ir["layers"][-1]["params"] == {"units": 3, "activation": "sigmoid", "use_bias": False}


@pytest.mark.parametrize(
    "name",
    [
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "gelu",
        "elu",
        "selu",
        "leaky_relu",
        "silu",
        "softplus",
        "linear",
    ],
)
def test_every_activation_name_is_known(name: str) -> None:
    assert first_layer(f"Activation('{name}')")["params"] == {"activation": name}


def test_layer_names_are_case_sensitive() -> None:
    problem = only(network("    dense(8)\n    Output(2)"))
    assert problem.code == "DSL_UNKNOWN_LAYER"
    assert problem.hint == "did you mean 'Dense'?"
