"""The example models: valid ones parse to valid IR, invalid ones fail as their header says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from consumers.parse.logic import parse_source
from streams.stage import StageFailure, StageResult
from tests.unit.parse.sources import EXAMPLES, load_schema, parsed, refused

VALID = sorted(EXAMPLES.glob("*.neural"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.neural"))
# Errors found after parsing (shapes) belong to the compile stage.
LATER_STAGE_CODES = {"DSL_SHAPE"}
EXPECTATION = re.compile(r"^# expect: (DSL_[A-Z_]+) at line (\d+)")


def parsed_validator() -> Any:
    schema = load_schema()
    return jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/parsed"})


def test_there_are_examples_to_check() -> None:
    assert len(VALID) >= 7
    assert len(INVALID) >= 6


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_valid_example_parses_to_schema_valid_ir(path: Path) -> None:
    source = path.read_text()
    outcome = parse_source(source)
    assert isinstance(outcome, StageResult), outcome
    parsed_validator().validate(outcome.output)
    assert outcome.summary == {
        "name": outcome.output["name"],
        "layers": len(outcome.output["layers"]),
        "input_shape": outcome.output["input_shape"],
    }


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_ir_is_plain_json_that_round_trips(path: Path) -> None:
    ir = parsed(path.read_text())
    assert json.loads(json.dumps(ir, allow_nan=False)) == ir


def test_digits_cnn_params_are_normalised_with_defaults() -> None:
    ir = parsed((EXAMPLES / "digits_cnn.neural").read_text())
    assert ir["name"] == "DigitsCNN"
    assert ir["input_shape"] == [8, 8, 1]
    layers = ir["layers"]
    assert [layer["type"] for layer in layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Output",
    ]
    assert layers[0] == {
        "index": 0,
        "type": "Conv2D",
        "line": 5,
        "column": 5,
        "params": {
            "filters": 16,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "same",
            "dilation_rate": [1, 1],
            "activation": "relu",
            "use_bias": True,
        },
    }
    assert layers[1]["params"] == {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}
    assert layers[2]["params"]["kernel_size"] == [3, 3]
    assert layers[2]["params"]["padding"] == "valid"
    assert layers[3]["params"] == {}
    assert layers[4]["params"] == {"units": 64, "activation": "relu", "use_bias": True}
    assert layers[5]["params"] == {"rate": 0.25}
    assert layers[6]["params"] == {"units": 10, "activation": "softmax", "use_bias": True}
    assert ir["loss"] == "sparse_categorical_crossentropy"
    assert ir["optimizer"] == {"type": "Adam", "params": {"learning_rate": 0.002}}
    assert ir["metrics"] == ["accuracy"]
    assert ir["train"] == {
        "epochs": 8,
        "batch_size": 64,
        "validation_split": 0.2,
        "dataset": "sklearn:digits",
        "seed": 7,
        "shuffle": True,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", ir["source_sha256"])


def test_iris_mlp_repeat_is_expanded_and_batch_dimension_dropped() -> None:
    ir = parsed((EXAMPLES / "iris_mlp.neural").read_text())
    assert ir["input_shape"] == [4]
    assert [layer["index"] for layer in ir["layers"]] == [0, 1, 2, 3]
    assert ir["layers"][0]["line"] == ir["layers"][1]["line"] == 4
    assert ir["optimizer"]["params"] == {"learning_rate": 0.05, "momentum": 0.9, "nesterov": False}


def test_bad_params_gives_two_bad_param_errors_at_lines_5_and_6() -> None:
    problems = refused((EXAMPLES / "invalid" / "bad_params.neural").read_text())
    assert [(problem.code, problem.line) for problem in problems] == [
        ("DSL_BAD_PARAM", 5),
        ("DSL_BAD_PARAM", 6),
    ]
    assert "units" in problems[0].message
    assert "rate" in problems[1].message


def test_hpo_unsupported_names_the_construct_at_line_5() -> None:
    problems = refused((EXAMPLES / "invalid" / "hpo_unsupported.neural").read_text())
    assert [(problem.code, problem.line) for problem in problems] == [("DSL_UNSUPPORTED", 5)]
    assert "HPO" in problems[0].message


def test_missing_brace_is_a_syntax_error_with_line_and_column() -> None:
    problems = refused((EXAMPLES / "invalid" / "missing_brace.neural").read_text())
    assert len(problems) == 1
    problem = problems[0]
    assert problem.code == "DSL_SYNTAX"
    assert (problem.line, problem.column) == (2, 14)
    assert "end of input" in problem.message
    assert "'}'" in problem.message


def test_no_output_says_the_network_has_no_output_layer() -> None:
    problems = refused((EXAMPLES / "invalid" / "no_output.neural").read_text())
    assert [problem.code for problem in problems] == ["DSL_BAD_PARAM"]
    assert "no Output layer" in problems[0].message


def test_unknown_layer_hints_conv2d_at_line_5() -> None:
    problems = refused((EXAMPLES / "invalid" / "unknown_layer.neural").read_text())
    assert [(problem.code, problem.line, problem.column) for problem in problems] == [
        ("DSL_UNKNOWN_LAYER", 5, 5)
    ]
    assert problems[0].hint is not None and "Conv2D" in problems[0].hint
    assert problems[0].snippet == "    Conv2d(filters=8, kernel_size=3)\n    ^^^^^^"


def test_shape_too_small_is_left_to_the_compile_stage() -> None:
    ir = parsed((EXAMPLES / "invalid" / "shape_too_small.neural").read_text())
    parsed_validator().validate(ir)


def _parse_level(path: Path) -> bool:
    """Headers naming one code and line, for an error the parser itself must find."""
    expectation = EXPECTATION.match(path.read_text())
    return expectation is not None and expectation.group(1) not in LATER_STAGE_CODES


PARSE_LEVEL = [path for path in INVALID if _parse_level(path)]


def test_most_invalid_examples_are_checked_here() -> None:
    # bad_params, missing_brace and no_output have tests of their own; shape_too_small is compile's.
    assert len(PARSE_LEVEL) >= len(INVALID) - 4


@pytest.mark.parametrize("path", PARSE_LEVEL, ids=lambda path: path.name)
def test_invalid_example_fails_with_the_code_and_line_its_header_names(path: Path) -> None:
    source = path.read_text()
    expectation = EXPECTATION.match(source)
    assert expectation is not None
    outcome = parse_source(source)
    assert isinstance(outcome, StageFailure)
    found = [(problem.code, problem.line) for problem in outcome.problems]
    assert (expectation.group(1), int(expectation.group(2))) in found
