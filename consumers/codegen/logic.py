"""The codegen stage: compiled IR in, a self-contained Python module for the target backend out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from consumers.codegen.keras_source import keras_module
from consumers.codegen.pytorch_source import pytorch_module
from streams.stage import Problem, StageFailure, StageResult

GENERATORS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "pytorch": pytorch_module,
    "tensorflow": keras_module,
}
COMPILED_KEYS = ("name", "input_shape", "layers", "loss", "optimizer", "target", "output_shape")
LAYER_KEYS = ("type", "params", "input_shape", "output_shape", "param_count")


def generate_code(
    compiled: dict[str, Any], *, target: str | None = None
) -> StageResult | StageFailure:
    """Generate the module for `target` (default: the target the IR was compiled for)."""
    malformed = compiled_problem(compiled)
    if malformed is not None:
        return StageFailure((malformed,))
    chosen = target or compiled["target"]
    if chosen not in GENERATORS:
        return StageFailure(
            (
                Problem(
                    "TARGET_UNSUPPORTED",
                    f"unknown target {chosen!r}",
                    hint="supported targets: " + ", ".join(GENERATORS),
                ),
            )
        )
    if chosen != compiled["target"]:
        # Parameter counts differ between backends: the IR must be compiled for this one.
        return StageFailure(
            (
                Problem(
                    "TARGET_MISMATCH",
                    f"the IR was compiled for {compiled['target']!r}, not {chosen!r}",
                    hint=f"compile again with target {chosen!r}",
                ),
            )
        )
    module = GENERATORS[chosen](compiled)
    digest = hashlib.sha256(module.encode()).hexdigest()
    first = compiled["layers"][0]
    output = {
        "target": chosen,
        "module": module,
        "sha256": digest,
        "entrypoints": {"build": "build_model", "train": "train"},
        # What running the module needs to know: a sample's shapes, and for a model that
        # starts with an embedding, that its inputs are token ids below the vocabulary size.
        "input_shape": list(compiled["input_shape"]),
        "output_shape": list(compiled["output_shape"]),
        "token_ids_below": (
            first["params"].get("input_dim") if first["type"] == "Embedding" else None
        ),
        # The model's train { } settings (the train stage's defaults; a request may override).
        "train": dict(compiled.get("train") or {}),
    }
    summary = {"target": chosen, "lines": module.count("\n"), "sha256": digest}
    return StageResult(output, summary)


def compiled_problem(compiled: Any) -> Problem | None:
    """The compile-stage keys code generation relies on."""
    if not isinstance(compiled, Mapping):
        return Problem("IR_INVALID", "the codegen stage needs the compiled IR (a JSON object)")
    missing = [key for key in COMPILED_KEYS if key not in compiled]
    layers = compiled.get("layers")
    if not isinstance(layers, list) or not layers:
        missing = sorted({*missing, "layers"})
    elif not missing:
        missing = sorted({key for layer in layers for key in LAYER_KEYS if key not in layer})
    if missing:
        return Problem(
            "IR_INVALID",
            "the IR lacks " + ", ".join(missing) + ": codegen takes the compile stage's output",
        )
    return None
