"""The loss, optimizer, metrics and train sections, checked and with defaults filled in."""

from __future__ import annotations

from typing import Any

from consumers.parse.params import (
    HPO_CALLS,
    BadValue,
    Param,
    Signature,
    bind,
    boolean,
    fraction,
    non_negative_float,
    non_negative_int,
    outside_subset,
    positive_float,
    positive_int,
    report_expression,
    text_of,
    unit_interval,
)
from consumers.parse.source import Diagnostics
from consumers.parse.syntax import did_you_mean
from consumers.parse.tree import Argument, Call, Mapping, Name, Sequence, Value
from consumers.vocabulary import LOSS_ALIASES, LOSSES, METRIC_ALIASES, METRICS

DATASETS = {
    "sklearn": ("digits", "iris", "wine", "breast_cancer"),
    "synthetic": ("classification", "regression", "sequence"),
}

_LEARNING_RATE = Param("learning_rate", positive_float, 0.001)
OPTIMIZERS: dict[str, Signature] = {
    signature.owner: signature
    for signature in (
        Signature("Adam", (_LEARNING_RATE,), positional=1),
        Signature(
            "AdamW",
            (_LEARNING_RATE, Param("weight_decay", non_negative_float, 0.01)),
            positional=1,
        ),
        Signature(
            "SGD",
            (
                _LEARNING_RATE,
                Param("momentum", unit_interval, 0.0),
                Param("nesterov", boolean, False),
            ),
            positional=1,
        ),
        Signature("RMSprop", (_LEARNING_RATE,), positional=1),
    )
}


def dataset(value: Value) -> str:
    """A data source this project can load: sklearn:..., synthetic:...?..., or file:<path>."""
    text = text_of(value)
    expected = (
        'a data source such as "sklearn:digits", "synthetic:classification?..." or "file:data.npz"'
    )
    if text is None or ":" not in text:
        raise BadValue(expected)
    scheme, _, rest = text.partition(":")
    if scheme == "file":
        if not rest.endswith((".npz", ".csv")):
            raise BadValue("a file: path ending in .npz or .csv")
        return text
    kind = rest.partition("?")[0]
    if scheme not in DATASETS or kind not in DATASETS[scheme]:
        names = [f"{s}:{k}" for s, kinds in DATASETS.items() for k in kinds]
        hint = did_you_mean(f"{scheme}:{kind}", names) or "known sources: " + ", ".join(names)
        raise BadValue(expected, hint)
    return text


TRAIN = Signature(
    "train",
    (
        Param("epochs", positive_int, 1),
        Param("batch_size", positive_int, 32),
        Param("validation_split", fraction, 0.0),
        Param("dataset", dataset, None, none_means_default=True),
        Param("seed", non_negative_int, None, none_means_default=True),
        Param("shuffle", boolean, True),
    ),
    unsupported=(
        ("device", "device placement"),
        ("search_method", "hyper-parameter search"),
        ("hpo", "hyper-parameter search"),
    ),
    noun="setting",
)
DEFAULT_TRAIN = {param.name: param.default for param in TRAIN.params}


def normalise_loss(
    value: Value | None, output: dict[str, Any] | None, diagnostics: Diagnostics
) -> str | None:
    """The loss named in the source, or the one that fits the Output layer."""
    if value is None:
        return default_loss(output)
    text = _word_of(value, "loss", diagnostics)
    if text is None:
        return None
    if text in LOSSES:
        return text
    if text in LOSS_ALIASES:
        return LOSS_ALIASES[text]
    diagnostics.report(
        "DSL_BAD_PARAM",
        f"unknown loss '{text}'",
        value.start,
        value.end,
        did_you_mean(text, (*LOSSES, *LOSS_ALIASES)) or "known losses: " + ", ".join(LOSSES),
    )
    return None


def default_loss(output: dict[str, Any] | None) -> str:
    """Binary cross-entropy for a sigmoid, class indices for several units, else mean squared."""
    if output is None:
        return "sparse_categorical_crossentropy"
    if output["activation"] == "sigmoid":
        return "binary_crossentropy"
    if output["units"] > 1:
        return "sparse_categorical_crossentropy"
    return "mse"


def normalise_optimizer(value: Value | None, diagnostics: Diagnostics) -> dict[str, Any] | None:
    """`{"type": ..., "params": {...}}` with every parameter of that optimizer filled in."""
    if value is None:
        return {"type": "Adam", "params": {"learning_rate": 0.001}}
    arguments: tuple[Argument, ...] = ()
    name_end = value.end
    if isinstance(value, Call):
        name: str | None = value.name
        arguments, name_end = value.arguments, value.name_end
    elif isinstance(value, Name):
        name = value.text
    else:
        name = text_of(value)
    if name is None:
        diagnostics.report(
            "DSL_BAD_PARAM",
            "optimizer must be a name such as Adam, or a call such as Adam(learning_rate=0.001)",
            value.start,
            value.end,
        )
        return None
    canonical = {key.lower(): key for key in OPTIMIZERS}.get(name.lower())
    if canonical is None:
        if isinstance(value, Call) and value.name in HPO_CALLS:
            report_expression(value, "optimizer", diagnostics)
            return None
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"unknown optimizer '{name}'",
            value.start,
            name_end,
            did_you_mean(name, list(OPTIMIZERS)) or "known optimizers: " + ", ".join(OPTIMIZERS),
        )
        return None
    params = bind(OPTIMIZERS[canonical], arguments, (value.start, name_end), diagnostics)
    return None if params is None else {"type": canonical, "params": params}


def normalise_metrics(value: Value | None, diagnostics: Diagnostics) -> list[str] | None:
    """The metric names, canonical; `["accuracy"]` when the section is absent."""
    if value is None:
        return ["accuracy"]
    if not isinstance(value, Sequence):
        diagnostics.report(
            "DSL_BAD_PARAM",
            'metrics must be a list of names, such as ["accuracy"]',
            value.start,
            value.end,
        )
        return None
    metrics: list[str] = []
    ok = True
    for item in value.items:
        text = _word_of(item, "a metric", diagnostics)
        metric = METRIC_ALIASES.get(text, text) if text is not None else None
        if text is not None and metric not in METRICS:
            diagnostics.report(
                "DSL_BAD_PARAM",
                f"unknown metric '{text}'",
                item.start,
                item.end,
                did_you_mean(text, (*METRICS, *METRIC_ALIASES))
                or "known metrics: " + ", ".join(METRICS),
            )
        if metric is None or metric not in METRICS:
            ok = False
        else:
            metrics.append(metric)
    return metrics if ok else None


def normalise_train(block: Mapping | None, diagnostics: Diagnostics) -> dict[str, Any] | None:
    """Every train setting, defaults filled in; unknown settings are errors."""
    if block is None:
        return dict(DEFAULT_TRAIN)
    arguments = [
        Argument(entry.key, entry.value, entry.key_start, entry.value.end)
        for entry in block.entries
    ]
    return bind(TRAIN, arguments, (block.start, block.start + 1), diagnostics)


def _word_of(value: Value, label: str, diagnostics: Diagnostics) -> str | None:
    """The text of a string or bare name; anything else is reported."""
    if isinstance(value, Name):
        return value.text
    text = text_of(value)
    if text is not None:
        return text
    found = outside_subset(value)
    if found is not None:
        report_expression(found, label, diagnostics)
    else:
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"{label} must be a name or a string, got "
            + diagnostics.source.excerpt(value.start, value.end),
            value.start,
            value.end,
        )
    return None
