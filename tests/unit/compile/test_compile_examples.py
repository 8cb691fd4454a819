"""The example models through the real parser and compile, checked against the IR schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from streams.stage import StageFailure, StageResult

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.neural"))
SCHEMA = json.loads((ROOT / "consumers" / "ir.schema.json").read_text())


def parsed(path: Path) -> dict[str, Any]:
    outcome = parse_source(path.read_text())
    assert isinstance(outcome, StageResult), outcome
    return outcome.output


def conforms(value: object, definition: str) -> None:
    jsonschema.validate(value, {**SCHEMA, "$ref": f"#/$defs/{definition}"})


@pytest.mark.parametrize("target", ["pytorch", "tensorflow"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_compiles_to_schema_valid_ir(path: Path, target: str) -> None:
    outcome = compile_ir(parsed(path), target=target)
    assert isinstance(outcome, StageResult), outcome
    conforms(outcome.output, "compiled")
    assert outcome.output["total_params"] == sum(
        layer["param_count"] for layer in outcome.output["layers"]
    )


def test_shape_too_small_fails_at_line_seven() -> None:
    outcome = compile_ir(parsed(ROOT / "examples" / "invalid" / "shape_too_small.neural"))
    assert isinstance(outcome, StageFailure)
    problem = outcome.problems[0]
    assert (problem.code, problem.line) == ("DSL_SHAPE", 7)
    assert "Conv2D" in problem.message and "(3, 3, 1)" in problem.message
    conforms(problem.as_dict(), "problem")


def test_sentiment_lstm_counts_differ_by_backend_only_in_recurrent_biases() -> None:
    ir = parsed(ROOT / "examples" / "sentiment_lstm.neural")
    torch_run, keras_run = compile_ir(ir, target="pytorch"), compile_ir(ir, target="tensorflow")
    assert isinstance(torch_run, StageResult) and isinstance(keras_run, StageResult)
    extra_biases = 4 * 64 + 4 * 32  # one more bias vector per gate in each PyTorch LSTM
    difference = torch_run.output["total_params"] - keras_run.output["total_params"]
    assert difference == extra_biases


def test_warnings_conform_to_the_problem_schema() -> None:
    ir = parsed(ROOT / "examples" / "iris_mlp.neural")
    ir["layers"][-1]["params"]["activation"] = "softmax"
    ir["loss"] = "binary_crossentropy"
    outcome = compile_ir(ir)
    assert isinstance(outcome, StageResult) and outcome.output["warnings"]
    conforms(outcome.output, "compiled")
