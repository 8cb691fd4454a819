"""Shapes, rank rules and shape errors of the compile stage, on hand-built parse IR."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.compile.logic import compile_ir
from streams.stage import StageFailure, StageResult

from .network import layer, network


def compiled(ir: dict[str, Any], target: str = "pytorch") -> dict[str, Any]:
    outcome = compile_ir(ir, target=target)
    assert isinstance(outcome, StageResult), outcome
    return outcome.output


def failed(ir: dict[str, Any], target: str = "pytorch") -> StageFailure:
    outcome = compile_ir(ir, target=target)
    assert isinstance(outcome, StageFailure), outcome
    return outcome


def shapes(ir: dict[str, Any]) -> list[list[int]]:
    return [item["output_shape"] for item in compiled(ir)["layers"]]


def test_digits_cnn_shapes_follow_same_and_valid_padding() -> None:
    ir = network(
        [8, 8, 1],
        layer("Conv2D", filters=16, kernel_size=[3, 3], activation="relu", padding="same"),
        layer("MaxPooling2D", pool_size=[2, 2]),
        layer("Conv2D", filters=32, kernel_size=[3, 3], activation="relu"),
        layer("Flatten"),
        layer("Dense", units=64, activation="relu"),
        layer("Dropout", rate=0.25),
        layer("Output", units=10, activation="softmax"),
    )
    out = compiled(ir)
    assert [item["input_shape"] for item in out["layers"]][:3] == [
        [8, 8, 1],
        [8, 8, 16],
        [4, 4, 16],
    ]
    assert shapes(ir) == [[8, 8, 16], [4, 4, 16], [2, 2, 32], [128], [64], [64], [10]]
    assert out["output_shape"] == [10]


@pytest.mark.parametrize(
    ("size", "kernel", "strides", "dilation", "padding", "expected"),
    [
        (7, 3, 2, 1, "same", 4),  # ceil(7 / 2)
        (8, 4, 3, 1, "same", 3),  # ceil(8 / 3)
        (10, 3, 1, 2, "valid", 6),  # floor((10 - 2*2 - 1) / 1) + 1
        (10, 3, 3, 1, "valid", 3),  # floor((10 - 2 - 1) / 3) + 1
        (5, 5, 1, 1, "valid", 1),
    ],
)
def test_conv1d_length_follows_the_dsl_formulas(
    size: int, kernel: int, strides: int, dilation: int, padding: str, expected: int
) -> None:
    ir = network(
        [size, 2],
        layer(
            "Conv1D",
            filters=3,
            kernel_size=kernel,
            strides=strides,
            dilation_rate=dilation,
            padding=padding,
        ),
        layer("Flatten"),
        layer("Output", units=2),
    )
    assert shapes(ir)[0] == [expected, 3]


def test_pooling_strides_default_to_the_pool_size_and_round_down() -> None:
    ir = network(
        [7, 9, 3],
        layer("MaxPooling2D", pool_size=[2, 3]),
        layer("AveragePooling2D", pool_size=[2, 2], strides=[1, 1], padding="same"),
        layer("GlobalMaxPooling2D"),
        layer("Output", units=2),
    )
    assert shapes(ir)[:3] == [[3, 3, 3], [3, 3, 3], [3]]


def test_too_small_input_is_a_shape_error_at_the_layer_line() -> None:
    ir = network(
        [12, 12, 1],
        layer("MaxPooling2D", line=5, pool_size=[2, 2]),
        layer("MaxPooling2D", line=6, pool_size=[2, 2]),
        layer("Conv2D", line=7, filters=4, kernel_size=[5, 5]),
        layer("Flatten", line=8),
        layer("Output", line=9, units=2),
    )
    failure = failed(ir)
    problem = failure.problems[0]
    assert (failure.code, problem.line, problem.column) == ("DSL_SHAPE", 7, 5)
    assert "Conv2D" in problem.message and "(3, 3, 1)" in problem.message
    assert "would be -1" in problem.message
    assert problem.hint


def test_pooling_below_one_is_a_shape_error() -> None:
    ir = network([3, 4], layer("MaxPooling1D", pool_size=4), layer("Output", units=2))
    assert failed(ir).code == "DSL_SHAPE"


@pytest.mark.parametrize(
    ("input_shape", "first", "needed"),
    [
        ([64], layer("Conv2D", filters=2, kernel_size=[3, 3]), "rank-3"),
        ([8, 8, 3], layer("LSTM", units=4), "rank-2"),
        ([8, 8, 3], layer("Conv1D", filters=2, kernel_size=3), "rank-2"),
        ([8], layer("GlobalAveragePooling1D"), "rank-2"),
        ([8, 3], layer("MaxPooling2D"), "rank-3"),
        ([8, 4], layer("TransformerEncoder", num_heads=2, ff_dim=8), None),
    ],
)
def test_layers_demand_their_rank(
    input_shape: list[int], first: dict[str, Any], needed: str | None
) -> None:
    ir = network(input_shape, first, layer("Flatten"), layer("Output", units=2))
    if needed is None:
        compiled(ir)
        return
    problem = failed(ir).problems[0]
    assert problem.code == "DSL_SHAPE"
    assert needed in problem.message and first["type"] in problem.message


def test_embedding_takes_rank_one_ids_and_must_come_first() -> None:
    ok = network(
        [10],
        layer("Embedding", input_dim=50, output_dim=8),
        layer("GlobalAveragePooling1D"),
        layer("Output", units=2),
    )
    assert shapes(ok)[0] == [10, 8]
    on_sequence = network(
        [10, 2], layer("Embedding", input_dim=50, output_dim=8), layer("Output", units=2)
    )
    assert failed(on_sequence).code == "DSL_SHAPE"
    second = network(
        [10],
        layer("Dropout", rate=0.1),
        layer("Embedding", line=6, input_dim=50, output_dim=8),
        layer("Flatten"),
        layer("Output", units=2),
    )
    problem = failed(second).problems[0]
    assert (problem.code, problem.line) == ("DSL_SHAPE", 6)
    assert "first layer" in problem.message


def test_reshape_keeps_the_element_count_and_resolves_one_unknown() -> None:
    ir = network(
        [12], layer("Reshape", target_shape=[-1, 3]), layer("Flatten"), layer("Output", units=2)
    )
    assert shapes(ir)[0] == [4, 3]
    wrong = network([12], layer("Reshape", target_shape=[5, 3]), layer("Output", units=2))
    problem = failed(wrong).problems[0]
    assert problem.code == "DSL_SHAPE" and "12 elements" in problem.message
    indivisible = network([12], layer("Reshape", target_shape=[-1, 5]), layer("Output", units=2))
    assert failed(indivisible).code == "DSL_SHAPE"
    two_unknown = network([12], layer("Reshape", target_shape=[-1, -1]), layer("Output", units=2))
    assert failed(two_unknown).code == "DSL_BAD_PARAM"


def test_recurrent_layers_return_the_last_step_or_the_sequence() -> None:
    ir = network(
        [20, 3],
        layer("GRU", units=7, return_sequences=True),
        layer("SimpleRNN", units=5),
        layer("Output", units=2),
    )
    assert shapes(ir)[:2] == [[20, 7], [5]]


def test_dense_acts_on_the_last_axis() -> None:
    ir = network([6, 4], layer("Dense", units=9), layer("Flatten"), layer("Output", units=2))
    assert shapes(ir)[:2] == [[6, 9], [54]]


def test_independent_errors_are_collected() -> None:
    ir = network(
        [10, 6],
        layer("TransformerEncoder", line=5, num_heads=4, ff_dim=8),
        layer("Conv1D", line=6, filters=2, kernel_size=11),
        layer("Flatten", line=7),
        layer("Output", line=8, units=2),
        layer("Output", line=9, units=2),
    )
    failure = failed(ir)
    found = {(problem.code, problem.line) for problem in failure.problems}
    assert found == {("DSL_SHAPE", 8), ("DSL_BAD_PARAM", 5), ("DSL_SHAPE", 6)}
    heads = next(problem for problem in failure.problems if problem.code == "DSL_BAD_PARAM")
    assert "num_heads=4" in heads.message and "6" in heads.message


def test_a_network_without_output_is_refused() -> None:
    ir = network([10], layer("Dense", line=5, units=8))
    problem = failed(ir).problems[0]
    assert (problem.code, problem.line) == ("DSL_SHAPE", 5)
    assert "no Output layer" in problem.message


def test_unknown_layer_and_activation_are_reported() -> None:
    ir = network(
        [10],
        layer("Dense", units=3, activation="swoosh"),
        layer("Conv3D", line=6),
        layer("Output", units=2),
    )
    codes = [problem.code for problem in failed(ir).problems]
    assert codes == ["DSL_BAD_PARAM", "DSL_UNKNOWN_LAYER"]


def test_unknown_target_is_refused() -> None:
    ir = network([4], layer("Output", units=2))
    failure = failed(ir, target="jax")
    assert failure.code == "TARGET_UNSUPPORTED" and "pytorch" in (failure.problems[0].hint or "")


def test_malformed_ir_is_a_problem_not_a_traceback() -> None:
    assert failed({"layers": []}).code == "IR_INVALID"
    broken = network([4], layer("Dense"), layer("Output", units=2))
    assert failed(broken).code == "DSL_BAD_PARAM"


def test_zero_strides_are_a_bad_param() -> None:
    ir = network(
        [8, 2], layer("Conv1D", filters=2, kernel_size=3, strides=0), layer("Output", units=2)
    )
    assert failed(ir).code == "DSL_BAD_PARAM"
