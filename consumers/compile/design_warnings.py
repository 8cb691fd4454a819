"""Warnings for designs that compile but are probably not what the author meant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.compile.problems import problem_at
from consumers.compile.shapes import Shape
from consumers.vocabulary import CROSS_ENTROPY, REGRESSION, known_metric
from streams.stage import Problem

SUSPICIOUS = "DSL_SUSPICIOUS"


def layer_warnings(layer: Mapping[str, Any], shape: Shape) -> list[Problem]:
    """Warnings about one layer given the shape it receives."""
    kind = layer["type"]
    if kind in ("Dense", "Output") and len(shape) >= 2:
        return [
            problem_at(
                layer,
                SUSPICIOUS,
                f"{kind} applied to a {len(shape) + 1}-D input acts on the last axis only"
                " — did you mean to Flatten first?",
                hint=f"add Flatten() before {kind}",
            )
        ]
    return []


def metric_applies(metric: str, loss: str) -> bool:
    """Accuracy is reported for classification losses, mae/mse for regression losses."""
    if metric == "accuracy":
        return loss in CROSS_ENTROPY or loss == "binary_crossentropy"
    return loss in REGRESSION


def training_warnings(ir: Mapping[str, Any]) -> list[Problem]:
    """Warnings about how the Output layer, the loss, the metrics and the optimizer fit together."""
    output = ir["layers"][-1]
    activation = output["params"].get("activation", "linear")
    units = int(output["params"].get("units", 0))
    loss = str(ir.get("loss"))
    found: list[Problem] = []
    if loss == "binary_crossentropy" and activation == "softmax":
        found.append(
            problem_at(
                output,
                SUSPICIOUS,
                "softmax output trained with binary_crossentropy: the softmax couples the units"
                " that binary cross-entropy treats as independent",
                hint='use activation="sigmoid" with binary_crossentropy,'
                " or sparse_categorical_crossentropy with softmax",
            )
        )
    if loss in CROSS_ENTROPY and activation not in ("softmax", "linear"):
        found.append(
            problem_at(
                output,
                SUSPICIOUS,
                f"{activation} output trained with {loss}: its outputs are used as logits",
                hint='use activation="softmax" on the Output layer',
            )
        )
    if loss in CROSS_ENTROPY and units == 1:
        found.append(
            problem_at(
                output,
                SUSPICIOUS,
                f"{loss} over a single output unit has no classes to choose between:"
                " the loss is always 0",
                hint="use units >= 2, or one sigmoid unit with binary_crossentropy",
            )
        )
    elif activation == "softmax" and units == 1:
        found.append(
            problem_at(
                output,
                SUSPICIOUS,
                "softmax over a single unit always outputs 1",
                hint='use activation="sigmoid" for a single unit',
            )
        )
    for metric in ir.get("metrics") or []:
        canonical = known_metric(str(metric))
        if canonical is None:
            found.append(
                Problem(
                    SUSPICIOUS,
                    f"metric {metric!r} is not computed by the generated training code",
                    hint="supported metrics: accuracy, mae, mse",
                )
            )
        elif not metric_applies(canonical, loss):
            found.append(
                Problem(
                    SUSPICIOUS,
                    f"metric {metric!r} does not apply to the loss {loss!r} and is not reported",
                )
            )
    optimizer = ir.get("optimizer") or {}
    params = optimizer.get("params") or {}
    if optimizer.get("type") == "SGD" and params.get("nesterov") and not params.get("momentum"):
        found.append(
            Problem(
                SUSPICIOUS,
                "SGD(nesterov=True) without momentum is plain SGD",
                hint="set momentum, e.g. 0.9",
            )
        )
    return found
