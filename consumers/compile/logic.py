"""The compile stage: parse IR in, the same IR with shapes, parameter counts and warnings out."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from consumers.compile.design_warnings import layer_warnings, training_warnings
from consumers.compile.parameters import TARGETS, param_count
from consumers.compile.problems import problem_at
from consumers.compile.shapes import (
    RULES,
    LayerShapeError,
    Shape,
    as_tuple,
    format_shape,
    output_shape,
)
from consumers.vocabulary import ACTIVATIONS, LOSSES, OPTIMIZERS
from streams.stage import Problem, StageFailure, StageResult

# PyTorch has BatchNorm1d/2d/3d only: sample ranks 1 to 4 once channels move to axis 1.
TORCH_MAX_NORM_RANK = 4


def compile_ir(ir: dict[str, Any], *, target: str = "pytorch") -> StageResult | StageFailure:
    """Check every layer's shapes, count parameters for `target` and collect warnings."""
    if target not in TARGETS:
        unsupported = Problem(
            "TARGET_UNSUPPORTED",
            f"unknown target {target!r}",
            hint="supported targets: " + ", ".join(TARGETS),
        )
        return StageFailure((unsupported,))
    malformed = skeleton_problem(ir)
    if malformed is not None:
        return StageFailure((malformed,))
    layers: list[dict[str, Any]] = copy.deepcopy(ir["layers"])
    problems = structure_problems(ir)
    warnings: list[Problem] = []
    shape: Shape = tuple(ir["input_shape"])
    for position, layer in enumerate(layers):
        kind, params = layer["type"], layer["params"]
        if kind not in RULES:
            problems.append(problem_at(layer, "DSL_UNKNOWN_LAYER", f"unknown layer {kind!r}"))
            break
        problems.extend(activation_problems(layer))
        warnings.extend(layer_warnings(layer, shape))
        where = f"{kind} (layer {position + 1}) on input shape {format_shape(shape)}"
        try:
            produced = output_shape(kind, params, shape, position)
            target_limit(kind, params, shape, target)
        except LayerShapeError as error:
            problems.append(problem_at(layer, error.code, f"{where}: {error.why}", error.hint))
            if error.resume_with is None:
                break
            produced = error.resume_with
        except (KeyError, TypeError, ValueError) as error:
            problems.append(
                problem_at(layer, "DSL_BAD_PARAM", f"{where}: malformed params ({error!r})")
            )
            break
        layer["input_shape"] = list(shape)
        layer["output_shape"] = list(produced)
        layer["param_count"] = param_count(kind, params, shape, target)
        shape = produced
    if problems:
        return StageFailure(tuple(problems), tuple(warnings))
    warnings.extend(training_warnings(ir))
    total = sum(layer["param_count"] for layer in layers)
    compiled = {
        **ir,
        "layers": layers,
        "target": target,
        "output_shape": list(shape),
        "total_params": total,
        "warnings": [warning.as_dict() for warning in warnings],
    }
    summary = {
        "total_params": total,
        "output_shape": list(shape),
        "layers": [
            {
                "type": layer["type"],
                "output_shape": layer["output_shape"],
                "param_count": layer["param_count"],
            }
            for layer in layers
        ],
        "warnings": len(warnings),
    }
    return StageResult(compiled, summary, tuple(warnings))


def skeleton_problem(ir: Any) -> Problem | None:
    """The IR keys compile relies on; the parse stage always provides them."""
    if not isinstance(ir, Mapping):
        return Problem("IR_INVALID", "the compile stage needs the parse IR (a JSON object)")
    shape = ir.get("input_shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        or not shape
    ):
        return Problem(
            "IR_INVALID", f"input_shape must be a list of positive integers, got {shape!r}"
        )
    layers = ir.get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(layer, Mapping)
        and isinstance(layer.get("type"), str)
        and isinstance(layer.get("params"), Mapping)
        for layer in layers
    ):
        return Problem("IR_INVALID", "layers must be a list of objects with a type and params")
    return None


def structure_problems(ir: Mapping[str, Any]) -> list[Problem]:
    """Network-level rules: one Output, last; a known loss and optimizer."""
    layers = ir["layers"]
    found: list[Problem] = []
    if not layers:
        found.append(
            Problem(
                "DSL_SHAPE", "the network has no layers", hint="end the layers with Output(...)"
            )
        )
    elif layers[-1]["type"] != "Output":
        found.append(
            problem_at(
                layers[-1],
                "DSL_SHAPE",
                "the network has no Output layer at the end"
                f" (the last layer is {layers[-1]['type']})",
                hint="end the layers with Output(units=..., activation=...)",
            )
        )
    found.extend(
        problem_at(
            layer,
            "DSL_SHAPE",
            f"Output (layer {position + 1}) must be the last layer",
            hint="use Dense for hidden layers",
        )
        for position, layer in enumerate(layers[:-1])
        if layer["type"] == "Output"
    )
    loss = ir.get("loss")
    if loss not in LOSSES:
        found.append(
            Problem("DSL_BAD_PARAM", f"unknown loss {loss!r}", hint="one of " + ", ".join(LOSSES))
        )
    optimizer = ir.get("optimizer")
    kind = optimizer.get("type") if isinstance(optimizer, Mapping) else None
    if kind not in OPTIMIZERS:
        found.append(
            Problem(
                "DSL_BAD_PARAM",
                f"unknown optimizer {kind!r}",
                hint="one of " + ", ".join(OPTIMIZERS),
            )
        )
    return found


def activation_problems(layer: Mapping[str, Any]) -> list[Problem]:
    """Activations the code generators know."""
    activation = layer["params"].get("activation", "linear")
    if activation in ACTIVATIONS:
        return []
    return [
        problem_at(
            layer,
            "DSL_BAD_PARAM",
            f"{layer['type']} has an unknown activation {activation!r}",
            hint="one of " + ", ".join(ACTIVATIONS),
        )
    ]


def target_limit(kind: str, params: Mapping[str, Any], shape: Shape, target: str) -> None:
    """What one backend cannot build even though the shapes work out."""
    if target == "pytorch" and kind == "BatchNormalization" and len(shape) > TORCH_MAX_NORM_RANK:
        raise LayerShapeError(
            f"PyTorch has batch normalization for inputs of rank 1 to {TORCH_MAX_NORM_RANK} only",
            hint="Reshape to fewer axes first",
            resume_with=shape,
        )
    if target == "tensorflow" and kind in ("Conv1D", "Conv2D"):
        rank = len(shape) - 1
        strides = as_tuple(params.get("strides", 1), rank)
        dilation = as_tuple(params.get("dilation_rate", 1), rank)
        if max(strides) > 1 and max(dilation) > 1:
            raise LayerShapeError(
                "Keras does not support strides > 1 together with dilation_rate > 1",
                code="DSL_BAD_PARAM",
                hint="use strides=1 or dilation_rate=1 (or target pytorch)",
                resume_with=output_shape(kind, params, shape, 0),
            )
