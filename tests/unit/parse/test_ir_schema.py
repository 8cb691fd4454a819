"""consumers/ir.schema.json: a valid 2020-12 schema whose $defs accept the IR, not near misses."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from tests.unit.parse.sources import EXAMPLES, load_schema, parsed

SCHEMA = load_schema()


def validator(definition: str) -> Any:
    return jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"})


def digits_ir() -> dict[str, Any]:
    return parsed((EXAMPLES / "digits_cnn.neural").read_text())


def compiled_from(ir: dict[str, Any]) -> dict[str, Any]:
    compiled = copy.deepcopy(ir)
    compiled.update(target="pytorch", output_shape=[10], total_params=1234, warnings=[])
    for layer in compiled["layers"]:
        layer.update(input_shape=[8, 8, 1], output_shape=[8, 8, 16], param_count=160)
    return compiled


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert {"problem", "parsed", "compiled", "generated"} <= set(SCHEMA["$defs"])


def test_problem_needs_code_and_message_only() -> None:
    problem = validator("problem")
    problem.validate({"code": "DSL_SYNTAX", "message": "m"})
    problem.validate(
        {"code": "DSL_SYNTAX", "message": "m", "line": 1, "column": 2, "hint": "h", "snippet": "s"}
    )
    assert not problem.is_valid({"code": "DSL_SYNTAX"})
    assert not problem.is_valid({"code": "DSL_SYNTAX", "message": "m", "line": 0})
    assert not problem.is_valid({"code": "DSL_SYNTAX", "message": "m", "extra": 1})


@pytest.mark.parametrize(
    "breakage",
    [
        lambda ir: ir.update(extra=1),
        lambda ir: ir.pop("source_sha256"),
        lambda ir: ir.update(ir_version=2),
        lambda ir: ir["layers"][0].update(input_shape=[1]),
        lambda ir: ir["layers"][0]["params"].update(extra=1),
        lambda ir: ir["layers"][0]["params"].pop("strides"),
        lambda ir: ir["layers"][0]["params"].update(kernel_size=3),
        lambda ir: ir["layers"][5]["params"].update(rate=1.0),
        lambda ir: ir["layers"][0].update(type="Conv3D"),
        lambda ir: ir["optimizer"]["params"].update(momentum=0.9),
        lambda ir: ir["train"].pop("shuffle"),
        lambda ir: ir.update(loss="hinge"),
        lambda ir: ir.update(input_shape=[]),
    ],
)
def test_parsed_refuses_near_misses(breakage: Any) -> None:
    ir = digits_ir()
    validator("parsed").validate(ir)
    breakage(ir)
    assert not validator("parsed").is_valid(ir)


def test_compiled_is_parsed_plus_shapes_counts_and_warnings() -> None:
    compiled = compiled_from(digits_ir())
    validator("compiled").validate(compiled)
    compiled["warnings"] = [{"code": "DSL_WARNING", "message": "Dense on a 3-D input", "line": 9}]
    validator("compiled").validate(compiled)
    assert not validator("parsed").is_valid(compiled)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda ir: ir.pop("target"),
        lambda ir: ir.update(target="jax"),
        lambda ir: ir.pop("total_params"),
        lambda ir: ir["layers"][0].pop("param_count"),
        lambda ir: ir["layers"][0].update(output_shape=[0]),
        lambda ir: ir["layers"][0].update(extra=1),
        lambda ir: ir.update(warnings=[{"message": "no code"}]),
    ],
)
def test_compiled_refuses_near_misses(breakage: Any) -> None:
    compiled = compiled_from(digits_ir())
    breakage(compiled)
    assert not validator("compiled").is_valid(compiled)


def test_generated_is_a_module_with_its_hash_and_entrypoints() -> None:
    generated = {
        "target": "pytorch",
        "module": "import torch\n",
        "sha256": "0" * 64,
        "entrypoints": {"build": "build_model", "train": "train"},
        "input_shape": [8, 8, 1],
        "output_shape": [10],
        "token_ids_below": None,
        "train": {"epochs": 1},
    }
    validator("generated").validate(generated)
    assert validator("generated").is_valid({**generated, "token_ids_below": 5000})
    assert not validator("generated").is_valid({**generated, "output_shape": [0]})
    assert not validator("generated").is_valid({**generated, "entrypoints": {"build": "b"}})
    assert not validator("generated").is_valid({**generated, "sha256": "xyz"})
