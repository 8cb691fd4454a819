"""Executing generated modules from their source text, and sample data shaped for them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from consumers.codegen.logic import generate_code
from streams.stage import StageResult


def loaded(compiled: dict[str, Any]) -> SimpleNamespace:
    """The generated module, executed from its source text."""
    generated = generate_code(compiled)
    assert isinstance(generated, StageResult), generated
    namespace: dict[str, Any] = {"__name__": "generated_model"}
    exec(compile(generated.output["module"], "<generated>", "exec"), namespace)
    return SimpleNamespace(**namespace)


def sample_inputs(compiled: dict[str, Any], count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (count, *compiled["input_shape"])
    first = compiled["layers"][0]
    if first["type"] == "Embedding":
        return rng.integers(0, first["params"]["input_dim"], size=shape)
    return rng.normal(size=shape).astype(np.float32)


def sample_targets(compiled: dict[str, Any], count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    out = compiled["output_shape"]
    if compiled["loss"] == "sparse_categorical_crossentropy":
        return rng.integers(0, out[-1], size=(count, *out[:-1]))
    if compiled["loss"] == "categorical_crossentropy":
        return np.eye(out[-1])[rng.integers(0, out[-1], size=(count, *out[:-1]))]
    if compiled["loss"] == "binary_crossentropy":
        return rng.integers(0, 2, size=(count, *out)).astype(np.float32)
    return rng.normal(size=(count, *out)).astype(np.float32)
