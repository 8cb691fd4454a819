"""The codegen stage's output contract and the generated source itself (no framework needed)."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consumers.codegen.logic import generate_code
from consumers.compile.logic import compile_ir
from streams.stage import StageFailure, StageResult

from .networks import compiled_example, example_sources, networks

ROOT = Path(__file__).resolve().parents[3]
RUFF = Path(sys.executable).parent / "ruff"
TARGETS = ("pytorch", "tensorflow")
EXAMPLES = example_sources()
CASES = [(name, target) for name in sorted(EXAMPLES) for target in TARGETS]
FRAMEWORK = {"pytorch": {"numpy", "torch"}, "tensorflow": {"numpy", "tensorflow"}}


def generated(name: str, target: str) -> StageResult:
    outcome = generate_code(compiled_example(EXAMPLES[name], target))
    assert isinstance(outcome, StageResult), outcome
    return outcome


def ruff(*args: str, source: str) -> subprocess.CompletedProcess[str]:
    """ruff on source text, with the project's configuration (a test tool, fed through stdin)."""
    command = [str(RUFF), *args, "--no-cache", "--config", str(ROOT / "pyproject.toml")]
    return subprocess.run(
        [*command, "--stdin-filename", "generated.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("name", "target"), CASES)
def test_output_follows_the_ir_contract(name: str, target: str) -> None:
    outcome = generated(name, target)
    schema = json.loads((ROOT / "consumers" / "ir.schema.json").read_text())
    jsonschema.validate(outcome.output, {**schema, "$ref": "#/$defs/generated"})
    module = outcome.output["module"]
    digest = hashlib.sha256(module.encode()).hexdigest()
    assert outcome.output["sha256"] == digest
    assert outcome.output["entrypoints"] == {"build": "build_model", "train": "train"}
    assert outcome.summary == {"target": target, "lines": module.count("\n"), "sha256": digest}


@pytest.mark.parametrize(("name", "target"), CASES)
def test_generated_modules_pass_ruff_check_and_format(name: str, target: str) -> None:
    module = generated(name, target).output["module"]
    checked = ruff("check", source=module)
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", source=module)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.parametrize(("name", "target"), CASES)
def test_generated_modules_import_only_their_framework_and_numpy(name: str, target: str) -> None:
    tree = ast.parse(generated(name, target).output["module"])
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported == FRAMEWORK[target]


def interface(module: str) -> dict[str, ast.AST]:
    tree = ast.parse(module)
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node.value
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_train_defaults_come_from_the_train_block(target: str) -> None:
    found = interface(generated("digits_cnn", target).output["module"])
    assert {"INPUT_SHAPE", "OUTPUT_SHAPE", "build_model", "train", "predict"} <= set(found)
    assert ast.literal_eval(found["INPUT_SHAPE"]) == (8, 8, 1)
    assert ast.literal_eval(found["OUTPUT_SHAPE"]) == (10,)
    train = found["train"]
    assert isinstance(train, ast.FunctionDef)
    defaults = {
        arg.arg: ast.literal_eval(default)
        for arg, default in zip(train.args.kwonlyargs, train.args.kw_defaults, strict=True)
        if default is not None
    }
    assert defaults == {
        "epochs": 8,
        "batch_size": 64,
        "validation_split": 0.2,
        "seed": 7,
        "shuffle": True,
        "on_epoch": None,
        "on_batch": None,
        "model": None,
    }


def test_softmax_cross_entropy_trains_on_logits() -> None:
    module = generated("digits_cnn", "pytorch").output["module"]
    assert "nn.Softmax" not in module and "torch.log(" not in module
    assert "nn.functional.cross_entropy(" in module
    assert "torch.softmax(stacked, dim=-1)" in module
    keras = generated("digits_cnn", "tensorflow").output["module"]
    assert 'activation="softmax"' not in keras
    assert "SparseCategoricalCrossentropy(from_logits=True)" in keras


def test_sigmoid_binary_cross_entropy_uses_the_fused_loss() -> None:
    compiled = compiled_example(EXAMPLES["iris_mlp"], "pytorch")
    compiled["loss"] = "binary_crossentropy"
    compiled["layers"][-1]["params"]["activation"] = "sigmoid"
    outcome = generate_code(compiled)
    assert isinstance(outcome, StageResult)
    module = outcome.output["module"]
    assert "binary_cross_entropy_with_logits(outputs, targets)" in module
    assert "nn.Sigmoid" not in module and "torch.sigmoid(stacked)" in module


def test_generation_is_deterministic() -> None:
    compiled = compiled_example(EXAMPLES["text_transformer"], "pytorch")
    first, second = generate_code(compiled), generate_code(compiled)
    assert isinstance(first, StageResult) and isinstance(second, StageResult)
    assert first.output == second.output


def test_target_defaults_to_the_compiled_one_and_must_match_it() -> None:
    compiled = compiled_example(EXAMPLES["tiny"], "tensorflow")
    outcome = generate_code(compiled)
    assert isinstance(outcome, StageResult) and outcome.output["target"] == "tensorflow"
    mismatch = generate_code(compiled, target="pytorch")
    assert isinstance(mismatch, StageFailure) and mismatch.code == "TARGET_MISMATCH"
    unknown = generate_code(compiled, target="jax")
    assert isinstance(unknown, StageFailure) and unknown.code == "TARGET_UNSUPPORTED"


def test_parse_ir_without_compile_results_is_refused() -> None:
    compiled: dict[str, Any] = compiled_example(EXAMPLES["tiny"], "pytorch")
    del compiled["layers"][0]["output_shape"]
    failure = generate_code(compiled)
    assert isinstance(failure, StageFailure) and failure.code == "IR_INVALID"
    assert "output_shape" in failure.message


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(ir=networks(), target=st.sampled_from(TARGETS))
def test_random_networks_generate_ruff_clean_modules(ir: dict[str, Any], target: str) -> None:
    compiled = compile_ir(ir, target=target)
    assume(isinstance(compiled, StageResult))
    assert isinstance(compiled, StageResult)
    outcome = generate_code(compiled.output)
    assert isinstance(outcome, StageResult)
    module = outcome.output["module"]
    assert ruff("check", source=module).returncode == 0
    assert ruff("format", "--check", source=module).returncode == 0
