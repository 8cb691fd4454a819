"""Generated Keras modules, built for real in TensorFlow (imported only by these tests)."""

from __future__ import annotations

import importlib
import math
import os
from types import ModuleType, SimpleNamespace
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


@pytest.fixture(scope="module")
def keras() -> ModuleType:
    """TensorFlow's Keras, imported here so that the rest of the suite does not pay for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # `make test` installs tensorflow-cpu: a missing one is a failure, not a skip.
    tensorflow = importlib.import_module("tensorflow")
    return tensorflow.keras  # type: ignore[no-any-return]


def weights_size(weights: list[Any]) -> int:
    return sum(math.prod(weight.shape) for weight in weights)


def assert_matches_compile(compiled: dict[str, Any]) -> None:
    """Output shape and trainable parameter counts of the Keras model are what compile claimed."""
    module = loaded(compiled)
    model = module.build_model()
    outputs = np.asarray(model(module.as_inputs(sample_inputs(compiled, 2)), training=False))
    assert list(outputs.shape) == [2, *compiled["output_shape"]]
    assert len(model.layers) == len(compiled["layers"])
    actual = [weights_size(layer.trainable_weights) for layer in model.layers]
    assert actual == [layer["param_count"] for layer in compiled["layers"]]
    assert weights_size(model.trainable_weights) == compiled["total_params"]
    # count_params() also holds BatchNormalization's moving mean and variance (2 per channel).
    moving = sum(
        2 * layer["input_shape"][-1]
        for layer in compiled["layers"]
        if layer["type"] == "BatchNormalization"
    )
    assert model.count_params() == compiled["total_params"] + moving


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_builds_with_the_compiled_shapes_and_counts(
    keras: ModuleType, name: str
) -> None:
    assert_matches_compile(compiled_example(EXAMPLES[name], "tensorflow"))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(ir=networks())
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
def test_random_networks_build_with_the_compiled_shapes_and_counts(
    keras: ModuleType, ir: dict[str, Any]
) -> None:
    outcome = compile_ir(ir, target="tensorflow")
    assume(isinstance(outcome, StageResult))
    assert isinstance(outcome, StageResult)
    assert_matches_compile(outcome.output)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_trains_an_epoch_to_a_finite_loss(keras: ModuleType, name: str) -> None:
    compiled = compiled_example(EXAMPLES[name], "tensorflow")
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


def test_classifier_predicts_probabilities(keras: ModuleType) -> None:
    compiled = compiled_example(EXAMPLES["iris_mlp"], "tensorflow")
    module = loaded(compiled)
    model = module.build_model()
    x = sample_inputs(compiled, 7)
    module.train(x, sample_targets(compiled, 7), epochs=1, model=model)
    probabilities = module.predict(model, x)
    assert probabilities.shape == (7, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


WINDOWS = """
network Windows {
  input: (7, 8, 2)
  layers:
    Conv2D(filters=3, kernel_size=(2, 3), strides=(2, 2), padding="same", activation="tanh")
    AveragePooling2D(pool_size=(2, 3), strides=(1, 2), padding="same")
    MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same")
    Flatten()
    Output(4, "softmax")
}
"""


def both_modules(source: str) -> tuple[SimpleNamespace, SimpleNamespace, dict[str, Any]]:
    pytorch = compiled_example(source, "pytorch")
    return loaded(pytorch), loaded(compiled_example(source, "tensorflow")), pytorch


def test_same_padding_pooling_and_flatten_compute_what_keras_computes(keras: ModuleType) -> None:
    torch_module, keras_module, compiled = both_modules(WINDOWS)
    keras_model = keras_module.build_model()
    torch_model = torch_module.build_model().eval()
    kernel, bias = keras_model.layers[0].get_weights()
    pad, conv = torch_model[0][1:3]
    assert isinstance(pad, torch.nn.ZeroPad2d), "uneven padding is explicit"
    assert isinstance(conv, torch.nn.Conv2d)
    conv.load_state_dict(
        {"weight": torch.tensor(kernel.transpose(3, 2, 0, 1).copy()), "bias": torch.tensor(bias)}
    )
    dense_kernel, dense_bias = keras_model.layers[-1].get_weights()
    linear = torch_model[-1]
    assert isinstance(linear, torch.nn.Linear)
    linear.load_state_dict(
        {"weight": torch.tensor(dense_kernel.T.copy()), "bias": torch.tensor(dense_bias)}
    )
    x = sample_inputs(compiled, 3)
    expected = keras_module.predict(keras_model, x)
    assert np.allclose(torch_module.predict(torch_model, x), expected, atol=1e-5)


TRANSFORMER = """
network Attending {
  input: (5, 8)
  layers:
    TransformerEncoder(num_heads=2, ff_dim=6, dropout=0.0)
    Flatten()
    Output(3)
  loss: mse
}
"""


def test_keras_transformer_block_computes_what_pytorch_computes(keras: ModuleType) -> None:
    torch_module, keras_module, compiled = both_modules(TRANSFORMER)
    keras_model = keras_module.build_model()
    torch_model = torch_module.build_model().eval()
    block, encoder = keras_model.layers[0], torch_model[0]
    width, heads = 8, 2
    attention = encoder.self_attn
    projections = zip(
        attention.in_proj_weight.detach().numpy().reshape(3, width, width),
        attention.in_proj_bias.detach().numpy().reshape(3, width),
        strict=True,
    )
    for dense, (weight, bias) in zip(
        (block.attention.query_dense, block.attention.key_dense, block.attention.value_dense),
        projections,
        strict=True,
    ):
        dense.set_weights([weight.T.reshape(width, heads, -1), bias.reshape(heads, -1)])
    block.attention.output_dense.set_weights(
        [
            attention.out_proj.weight.detach().numpy().T.reshape(heads, -1, width),
            attention.out_proj.bias.detach().numpy(),
        ]
    )
    for dense, linear in ((block.hidden, encoder.linear1), (block.projection, encoder.linear2)):
        dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    for norm, torch_norm in (
        (block.attention_norm, encoder.norm1),
        (block.output_norm, encoder.norm2),
    ):
        norm.set_weights([torch_norm.weight.detach().numpy(), torch_norm.bias.detach().numpy()])
    output, linear = keras_model.layers[-1], torch_model[-1]
    output.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    x = sample_inputs(compiled, 4)
    expected = keras_module.predict(keras_model, x)
    assert np.allclose(torch_module.predict(torch_model, x), expected, atol=1e-4)
