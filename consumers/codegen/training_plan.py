"""How a compiled network is trained and read out, decided once for every backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumers.vocabulary import CROSS_ENTROPY, REGRESSION, known_metric


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """The loss, what the model's last layer applies, what predict() adds, and the metrics.

    Cross-entropy losses always train on the model's raw outputs as logits: a softmax
    (or sigmoid) Output activation is moved out of the model into predict(), so no
    backend ever takes the log of a softmax by hand.
    """

    loss: str
    output_activation: str
    predict_activation: str | None
    metrics: tuple[str, ...]
    input_is_ids: bool

    @property
    def on_logits(self) -> bool:
        return self.loss in CROSS_ENTROPY or self.loss == "binary_crossentropy"

    @property
    def sparse_targets(self) -> bool:
        return self.loss == "sparse_categorical_crossentropy"


def reported_metrics(metrics: list[Any], loss: str) -> tuple[str, ...]:
    """Known metrics that fit the loss, canonical and once each (compile warns about the rest)."""
    found: list[str] = []
    for metric in metrics:
        canonical = known_metric(str(metric))
        fits = (
            loss in CROSS_ENTROPY or loss == "binary_crossentropy"
            if canonical == "accuracy"
            else loss in REGRESSION
        )
        if canonical is not None and fits and canonical not in found:
            found.append(canonical)
    return tuple(found)


def training_plan(compiled: Mapping[str, Any]) -> TrainingPlan:
    """The plan for `compiled`, a compile-stage output."""
    loss = str(compiled["loss"])
    layers = compiled["layers"]
    activation = str(layers[-1]["params"].get("activation", "linear"))
    moved = (loss in CROSS_ENTROPY and activation == "softmax") or (
        loss == "binary_crossentropy" and activation == "sigmoid"
    )
    return TrainingPlan(
        loss=loss,
        output_activation="linear" if moved else activation,
        predict_activation=activation if moved else None,
        metrics=reported_metrics(list(compiled.get("metrics") or []), loss),
        input_is_ids=layers[0]["type"] == "Embedding",
    )


def readout_sentence(plan: TrainingPlan) -> str:
    """What the generated module's docstring says about the model's outputs."""
    if plan.predict_activation:
        return f"The model returns logits: predict() applies the {plan.predict_activation}."
    return "predict() returns the model's outputs."
