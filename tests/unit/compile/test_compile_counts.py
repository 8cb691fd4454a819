"""Parameter counts per target backend, the compile output contract and its summary."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consumers.compile.logic import compile_ir
from streams.stage import StageFailure, StageResult

from .network import layer, network


def counts(ir: dict[str, Any], target: str) -> list[int]:
    outcome = compile_ir(ir, target=target)
    assert isinstance(outcome, StageResult), outcome
    return [item["param_count"] for item in outcome.output["layers"]]


def recurrent(kind: str) -> dict[str, Any]:
    return network([12, 5], layer(kind, units=7), layer("Output", units=2))


@pytest.mark.parametrize(
    ("kind", "pytorch", "tensorflow"),
    [
        # units*(F+units) per gate, plus PyTorch's two bias vectors per gate against Keras' one
        ("SimpleRNN", 7 * 12 + 2 * 7, 7 * 12 + 7),
        ("LSTM", 4 * (7 * 12 + 2 * 7), 4 * (7 * 12 + 7)),
        # Keras' GRU (reset_after=True) carries two biases per gate, like PyTorch
        ("GRU", 3 * (7 * 12 + 2 * 7), 3 * (7 * 12 + 2 * 7)),
    ],
)
def test_recurrent_counts_follow_each_backends_bias_layout(
    kind: str, pytorch: int, tensorflow: int
) -> None:
    assert counts(recurrent(kind), "pytorch")[0] == pytorch
    assert counts(recurrent(kind), "tensorflow")[0] == tensorflow


def test_counts_of_dense_convolution_and_normalisation() -> None:
    ir = network(
        [9, 9, 3],
        layer("Conv2D", filters=4, kernel_size=[3, 2]),
        layer("Conv2D", filters=5, kernel_size=[1, 1], use_bias=False),
        layer("BatchNormalization"),
        layer("Flatten"),
        layer("LayerNormalization"),
        layer("Dense", units=6, use_bias=False),
        layer("Output", units=3),
    )
    expected = [3 * 2 * 3 * 4 + 4, 4 * 5, 2 * 5, 0, 2 * 7 * 8 * 5, 7 * 8 * 5 * 6, 6 * 3 + 3]
    for target in ("pytorch", "tensorflow"):
        assert counts(ir, target) == expected


def test_embedding_and_transformer_counts() -> None:
    ir = network(
        [16],
        layer("Embedding", input_dim=100, output_dim=8),
        layer("TransformerEncoder", num_heads=2, ff_dim=32),
        layer("GlobalAveragePooling1D"),
        layer("Output", units=2),
    )
    transformer = 4 * 8 * 8 + 2 * 8 * 32 + 32 + 9 * 8
    assert counts(ir, "pytorch") == counts(ir, "tensorflow") == [800, transformer, 0, 18]


def test_conv1d_counts_its_single_kernel_axis() -> None:
    ir = network(
        [20, 3],
        layer("Conv1D", filters=16, kernel_size=5),
        layer("Flatten"),
        layer("Output", units=2),
    )
    assert counts(ir, "pytorch")[0] == 5 * 3 * 16 + 16


def test_output_carries_the_parse_ir_plus_shapes_counts_and_target() -> None:
    ir = network(
        [4],
        layer("Dense", units=8, activation="relu"),
        layer("Dropout", rate=0.5),
        layer("Output", units=3, activation="softmax"),
    )
    before = copy.deepcopy(ir)
    outcome = compile_ir(ir, target="tensorflow")
    assert isinstance(outcome, StageResult)
    out = outcome.output
    assert ir == before, "the input IR must not be mutated"
    assert {key: value for key, value in out.items() if key != "layers"} == {
        **{key: value for key, value in ir.items() if key != "layers"},
        "target": "tensorflow",
        "output_shape": [3],
        "total_params": 40 + 27,
        "warnings": [],
    }
    assert out["layers"][0] == {
        **ir["layers"][0],
        "input_shape": [4],
        "output_shape": [8],
        "param_count": 40,
    }
    assert outcome.summary == {
        "total_params": 67,
        "output_shape": [3],
        "layers": [
            {"type": "Dense", "output_shape": [8], "param_count": 40},
            {"type": "Dropout", "output_shape": [8], "param_count": 0},
            {"type": "Output", "output_shape": [3], "param_count": 27},
        ],
        "warnings": 0,
    }


def test_keras_refuses_strided_dilated_convolutions() -> None:
    ir = network(
        [20, 2],
        layer("Conv1D", filters=2, kernel_size=3, strides=2, dilation_rate=2),
        layer("Flatten"),
        layer("Output", units=2),
    )
    assert isinstance(compile_ir(ir, target="pytorch"), StageResult)
    failure = compile_ir(ir, target="tensorflow")
    assert isinstance(failure, StageFailure) and failure.code == "DSL_BAD_PARAM"


def test_pytorch_refuses_batch_normalization_beyond_rank_four() -> None:
    ir = network(
        [2, 2, 2, 2, 3], layer("BatchNormalization"), layer("Flatten"), layer("Output", units=2)
    )
    assert isinstance(compile_ir(ir, target="tensorflow"), StageResult)
    failure = compile_ir(ir, target="pytorch")
    assert isinstance(failure, StageFailure) and failure.code == "DSL_SHAPE"
