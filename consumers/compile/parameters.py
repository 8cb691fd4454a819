"""Trainable parameter counts, as each target backend's generated model will have them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from consumers.compile.shapes import Shape, as_tuple

TARGETS = ("pytorch", "tensorflow")

# Gates per recurrent cell: each gate has an input kernel, a recurrent kernel and biases.
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}


def recurrent_biases(kind: str, target: str) -> int:
    """Bias vectors per gate: PyTorch keeps two (input and hidden); Keras one, except GRU.

    Keras' GRU defaults to reset_after=True, which needs the second bias just like PyTorch.
    """
    return 2 if target == "pytorch" or kind == "GRU" else 1


def param_count(kind: str, params: Mapping[str, Any], shape: Shape, target: str) -> int:
    """Trainable parameters of one layer taking `shape` (moving statistics are not trainable)."""
    channels = shape[-1]
    bias = 1 if params.get("use_bias", True) else 0
    if kind in ("Dense", "Output"):
        units = int(params["units"])
        return channels * units + bias * units
    if kind in ("Conv1D", "Conv2D"):
        filters = int(params["filters"])
        kernel = as_tuple(params["kernel_size"], len(shape) - 1)
        return math.prod(kernel) * channels * filters + bias * filters
    if kind in ("BatchNormalization", "LayerNormalization"):
        return 2 * channels
    if kind == "Embedding":
        return int(params["input_dim"]) * int(params["output_dim"])
    if kind in GATES:
        units = int(params["units"])
        per_gate = units * (channels + units) + recurrent_biases(kind, target) * units
        return GATES[kind] * per_gate
    if kind == "TransformerEncoder":
        ff_dim = int(params["ff_dim"])
        # attention (q, k, v, out projections with biases) + feed-forward + two LayerNorms
        return 4 * channels * channels + 2 * channels * ff_dim + ff_dim + 9 * channels
    return 0
