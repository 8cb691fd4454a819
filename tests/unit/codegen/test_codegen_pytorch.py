"""Generated PyTorch modules, built for real: shapes and parameter counts must match compile."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

from consumers.compile.logic import compile_ir
from streams.stage import StageResult

from .networks import compiled_example, example_sources, networks
from .running import loaded, sample_inputs, sample_targets

EXAMPLES = example_sources()


def assert_matches_compile(compiled: dict[str, Any]) -> None:
    """Output shape and parameter counts of the real model are what compile claimed."""
    module = loaded(compiled)
    model = module.build_model()
    model.eval()
    inputs = module.as_inputs(sample_inputs(compiled, 2))
    with torch.no_grad():
        outputs = model(inputs)
    assert list(outputs.shape) == [2, *compiled["output_shape"]]
    assert list(module.OUTPUT_SHAPE) == compiled["output_shape"]
    assert list(module.INPUT_SHAPE) == compiled["input_shape"]
    actual = [sum(p.numel() for p in child.parameters()) for child in model]
    assert actual == [layer["param_count"] for layer in compiled["layers"]]
    assert sum(p.numel() for p in model.parameters()) == compiled["total_params"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_builds_with_the_compiled_shapes_and_counts(name: str) -> None:
    assert_matches_compile(compiled_example(EXAMPLES[name], "pytorch"))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(networks())
def test_random_networks_build_with_the_compiled_shapes_and_counts(ir: dict[str, Any]) -> None:
    outcome = compile_ir(ir, target="pytorch")
    assume(isinstance(outcome, StageResult))
    assert isinstance(outcome, StageResult)
    assert_matches_compile(outcome.output)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_trains_an_epoch_to_a_finite_loss(name: str) -> None:
    compiled = compiled_example(EXAMPLES[name], "pytorch")
    module = loaded(compiled)
    reports: list[tuple[int, dict[str, float]]] = []
    steps: list[tuple[int, int, int]] = []
    final = module.train(
        sample_inputs(compiled, 9),
        sample_targets(compiled, 9),
        epochs=1,
        batch_size=4,
        on_epoch=lambda epoch, metrics: reports.append((epoch, dict(metrics))),
        on_batch=lambda epoch, step, total, loss: steps.append((epoch, step, total)),
    )
    assert reports == [(1, final)]
    # Each batch reported once, in order, with the epoch's number of batches.
    assert steps == [(1, n, len(steps)) for n in range(1, len(steps) + 1)] and steps
    assert "loss" in final and all(math.isfinite(value) for value in final.values())
    if compiled["train"]["validation_split"] > 0:
        assert "val_loss" in final


def test_training_is_reproducible_with_a_seed() -> None:
    compiled = compiled_example(EXAMPLES["digits_cnn"], "pytorch")
    module = loaded(compiled)
    x, y = sample_inputs(compiled, 12), sample_targets(compiled, 12)
    first = module.train(x, y, epochs=2, batch_size=5, seed=3)
    assert module.train(x, y, epochs=2, batch_size=5, seed=3) == first
    assert module.train(x, y, epochs=2, batch_size=5, seed=4) != first


def test_classifier_trains_on_logits_and_predicts_probabilities() -> None:
    compiled = compiled_example(EXAMPLES["iris_mlp"], "pytorch")
    module = loaded(compiled)
    model = module.build_model()
    assert not any(isinstance(child, torch.nn.Softmax) for child in model.modules())
    x = sample_inputs(compiled, 7)
    module.train(x, sample_targets(compiled, 7), epochs=1, model=model)
    probabilities = module.predict(model, x)
    assert probabilities.shape == (7, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_regression_predicts_raw_outputs() -> None:
    compiled = compiled_example(EXAMPLES["wine_regression"], "pytorch")
    module = loaded(compiled)
    model = module.build_model()
    x = sample_inputs(compiled, 5)
    final = module.train(x, sample_targets(compiled, 5), epochs=1, model=model)
    assert set(final) == {"loss", "mae"}
    with torch.no_grad():
        expected = model.eval()(torch.tensor(x)).numpy()
    assert np.allclose(module.predict(model, x), expected)


def test_inputs_of_the_wrong_shape_are_refused_with_both_shapes() -> None:
    compiled = compiled_example(EXAMPLES["digits_cnn"], "pytorch")
    module = loaded(compiled)
    with pytest.raises(ValueError, match=r"\(64,\).*\(8, 8, 1\)"):
        module.train(np.zeros((4, 64)), np.zeros(4))
