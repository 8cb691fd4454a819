"""The words of the model language every stage agrees on (DSL.md): one list, not one per stage.

Stages never import each other; they all read the language from here.
"""

from __future__ import annotations

ACTIVATIONS = (
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
)
ACTIVATION_ALIASES = {"swish": "silu"}

LOSSES = (
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "mse",
    "mae",
    "huber",
)
LOSS_ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae"}
CROSS_ENTROPY = ("sparse_categorical_crossentropy", "categorical_crossentropy")
REGRESSION = ("mse", "mae", "huber")

OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")

METRICS = ("accuracy", "mae", "mse")
METRIC_ALIASES = {"acc": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse"}


def known_metric(name: str) -> str | None:
    """The canonical name of a metric the generated code computes (`acc` -> `accuracy`)."""
    canonical = METRIC_ALIASES.get(name, name)
    return canonical if canonical in METRICS else None
