"""The parse stage: model source text in, the parse IR (consumers/IR.md) or its problems out."""

from __future__ import annotations

import hashlib
from typing import Any

from consumers.parse.layers import MAX_LAYERS, PlacedLayer, check_order, place_layer
from consumers.parse.params import MAX_INT, integer_of, outside_subset, report_expression
from consumers.parse.source import Diagnostics, SourceText
from consumers.parse.syntax import read_network
from consumers.parse.tokens import tokenize
from consumers.parse.training import (
    normalise_loss,
    normalise_metrics,
    normalise_optimizer,
    normalise_train,
)
from consumers.parse.tree import Mapping, NetworkTree, Scalar, Section, Sequence
from streams.stage import Problem, StageFailure, StageResult

IR_VERSION = 1
DEFAULT_MAX_BYTES = 262_144


def parse_source(source: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> StageResult | StageFailure:
    """Parse a model; never raises: every outcome is a StageResult or a StageFailure."""
    try:
        return _parse(source, max_bytes)
    except Exception as error:  # the stage contract is "never a traceback", even for our bugs
        return StageFailure(
            (
                Problem(
                    code="DSL_INTERNAL",
                    message=f"the parser failed unexpectedly ({type(error).__name__})",
                    hint="please report this model to the maintainers",
                ),
            )
        )


def _parse(source: str, max_bytes: int) -> StageResult | StageFailure:
    # Every character is at least one byte, so a long text is refused before encoding it.
    encoded = b"" if len(source) > max_bytes else source.encode("utf-8", "surrogatepass")
    if len(source) > max_bytes or len(encoded) > max_bytes:
        too_large = Problem(
            code="DSL_TOO_LARGE",
            message=f"the model source is larger than {max_bytes} bytes",
            hint="models in this language are a few kilobytes; check what was sent",
        )
        return StageFailure((too_large,))
    diagnostics = Diagnostics(SourceText(source))
    tokens = tokenize(diagnostics)
    if diagnostics.problems:
        return StageFailure(diagnostics.sorted_problems())
    network = read_network(tokens, diagnostics)
    # After a syntax error, a missing section or Output may just be what the error swallowed.
    complete = not any(problem.code == "DSL_SYNTAX" for problem in diagnostics.problems)
    ir = None if network is None else _network_ir(network, complete, diagnostics)
    if ir is None or diagnostics.problems:
        return StageFailure(diagnostics.sorted_problems())
    ir["source_sha256"] = hashlib.sha256(encoded).hexdigest()
    summary = {"name": ir["name"], "layers": len(ir["layers"]), "input_shape": ir["input_shape"]}
    return StageResult(output=ir, summary=summary)


def _network_ir(
    network: NetworkTree, complete: bool, diagnostics: Diagnostics
) -> dict[str, Any] | None:
    """The IR of a network read without fatal errors; None if any part of it was refused.

    `complete` says the syntax was clean, so absent parts are really absent.
    """
    network_span = (network.start, network.name_end)
    input_shape = _input_shape(network, complete, diagnostics)
    placed = [
        layer
        for line in network.layers
        if (layer := place_layer(line, network.macros, diagnostics)) is not None
    ]
    layers = _expanded(placed, diagnostics)
    if network.layers_section is None and complete:
        diagnostics.report(
            "DSL_SYNTAX",
            f"network '{network.name}' has no 'layers:' section",
            *network_span,
        )
    elif network.layers_section is not None and complete:
        layers_span = (network.layers_section.start, network.layers_section.end)
        check_order(placed, len(placed) == len(network.layers), layers_span, diagnostics)
    output = next((layer.params for layer in reversed(placed) if layer.type == "Output"), None)
    loss = normalise_loss(_single(network.loss), output, diagnostics)
    optimizer = normalise_optimizer(_single(network.optimizer), diagnostics)
    metrics = normalise_metrics(_single(network.metrics), diagnostics)
    train = normalise_train(network.train, diagnostics)
    if diagnostics.problems or None in (input_shape, loss, optimizer, metrics, train):
        return None
    return {
        "ir_version": IR_VERSION,
        "name": network.name,
        "input_shape": input_shape,
        "layers": layers,
        "loss": loss,
        "optimizer": optimizer,
        "metrics": metrics,
        "train": train,
    }


def _single(section: Section | None) -> Any:
    return None if section is None else section.values[0]


def _expanded(placed: list[PlacedLayer], diagnostics: Diagnostics) -> list[dict[str, Any]]:
    """One IR layer per repetition, all sharing the line and column they were written at."""
    total = sum(layer.count for layer in placed)
    if total > MAX_LAYERS:
        last = placed[-1]
        diagnostics.report(
            "DSL_TOO_LARGE",
            f"the network has {total} layers after expanding '* N', "
            f"more than the {MAX_LAYERS} allowed",
            last.start,
            last.end,
        )
        return []
    layers: list[dict[str, Any]] = []
    for layer in placed:
        if layer.params is None:
            continue
        line, column = diagnostics.source.position(layer.start)
        for _ in range(layer.count):
            layers.append(
                {
                    "index": len(layers),
                    "type": layer.type,
                    "line": line,
                    "column": column,
                    "params": _copied(layer.params),
                }
            )
    return layers


def _copied(params: dict[str, Any]) -> dict[str, Any]:
    """Params for one repetition; lists are copied so no two layers share one."""
    return {key: list(value) if isinstance(value, list) else value for key, value in params.items()}


def _input_shape(
    network: NetworkTree, complete: bool, diagnostics: Diagnostics
) -> list[int] | None:
    """The input shape without the batch dimension; several inputs are outside the subset."""
    section = network.input
    if section is None:
        if not complete:
            return None
        diagnostics.report(
            "DSL_SYNTAX",
            f"network '{network.name}' has no 'input:' section",
            network.start,
            network.name_end,
            "add e.g. input: (28, 28, 1)",
        )
        return None
    value = section.values[0]
    last = section.values[-1]
    several = len(section.values) > 1 or (
        isinstance(value, Sequence) and any(isinstance(item, Sequence) for item in value.items)
    )
    if several or isinstance(value, Mapping):
        diagnostics.report(
            "DSL_UNSUPPORTED",
            "outside the supported subset: multi-input networks "
            + ("(named inputs)" if isinstance(value, Mapping) else "(several input shapes)"),
            value.start,
            last.end,
            "give one shape, such as input: (28, 28, 1)",
        )
        return None
    found = outside_subset(value)
    if found is not None:
        report_expression(found, "input", diagnostics)
        return None
    expected = "input must be a shape tuple of positive integers, such as (28, 28, 1)"
    if not isinstance(value, Sequence):
        hint = f"write ({diagnostics.source.excerpt(value.start, value.end)},)"
        diagnostics.report("DSL_BAD_PARAM", expected, value.start, value.end, hint)
        return None
    items = list(value.items)
    if items and isinstance(items[0], Scalar) and items[0].value is None:
        items = items[1:]  # the batch dimension
    dimensions = [integer_of(item) for item in items]
    shape = [d for d in dimensions if d is not None and 0 < d <= MAX_INT]
    if not items or len(shape) != len(items):
        batch_later = any(isinstance(i, Scalar) and i.value is None for i in items)
        diagnostics.report(
            "DSL_BAD_PARAM",
            expected,
            value.start,
            value.end,
            "only the leading (batch) dimension may be None" if batch_later else None,
        )
        return None
    return shape
