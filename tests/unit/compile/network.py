"""Parse IR built by hand, with defaults filled in exactly as consumers/IR.md lists them."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "Dense": {"activation": "linear", "use_bias": True},
    "Output": {"activation": "linear", "use_bias": True},
    "Conv1D": {
        "strides": 1,
        "padding": "valid",
        "dilation_rate": 1,
        "activation": "linear",
        "use_bias": True,
    },
    "Conv2D": {
        "strides": [1, 1],
        "padding": "valid",
        "dilation_rate": [1, 1],
        "activation": "linear",
        "use_bias": True,
    },
    "MaxPooling1D": {"pool_size": 2, "padding": "valid"},
    "AveragePooling1D": {"pool_size": 2, "padding": "valid"},
    "MaxPooling2D": {"pool_size": [2, 2], "padding": "valid"},
    "AveragePooling2D": {"pool_size": [2, 2], "padding": "valid"},
    "BatchNormalization": {"momentum": 0.99, "epsilon": 0.001},
    "LayerNormalization": {"epsilon": 0.001},
    "SimpleRNN": {"return_sequences": False},
    "LSTM": {"return_sequences": False},
    "GRU": {"return_sequences": False},
    "TransformerEncoder": {"dropout": 0.1},
}


def layer(kind: str, line: int = 5, **params: Any) -> dict[str, Any]:
    """One IR layer; pooling strides default to the pool size, as the parser fills them."""
    filled = {**DEFAULTS.get(kind, {}), **params}
    if "pool_size" in filled and "strides" not in filled:
        filled["strides"] = filled["pool_size"]
    return {"index": 0, "type": kind, "line": line, "column": 5, "params": filled}


def network(
    input_shape: list[int],
    *layers: dict[str, Any],
    loss: str = "sparse_categorical_crossentropy",
    metrics: list[str] | None = None,
    optimizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A parse IR (ir_version 1) around `layers`, renumbering their indexes."""
    return {
        "ir_version": 1,
        "name": "Handmade",
        "input_shape": input_shape,
        "layers": [{**item, "index": index} for index, item in enumerate(layers)],
        "loss": loss,
        "optimizer": optimizer or {"type": "Adam", "params": {"learning_rate": 0.001}},
        "metrics": ["accuracy"] if metrics is None else metrics,
        "train": {
            "epochs": 1,
            "batch_size": 32,
            "validation_split": 0.0,
            "dataset": None,
            "seed": None,
            "shuffle": True,
        },
        "source_sha256": "0" * 64,
    }
