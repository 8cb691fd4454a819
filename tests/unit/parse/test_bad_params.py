"""Parameters that are unknown, missing, duplicated, of the wrong type or out of range."""

from __future__ import annotations

import pytest

from tests.unit.parse.sources import network, only, refused


def problem_for(line: str, input_shape: str = "(10,)") -> tuple[str, str, str | None]:
    problem = only(network(f"    {line}\n    Flatten()\n    Output(2)", input_shape=input_shape))
    return problem.code, problem.message, problem.hint


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("Dense(0)", "units"),
        ("Dense(units=2.5)", "units"),
        ("Dense(units='8')", "units"),
        ("Dense(True)", "units"),
        ("Dense(8, activation='rellu')", "activation"),
        ("Dense(8, use_bias=1)", "use_bias"),
        ("Conv2D(filters=-1, kernel_size=3)", "filters"),
        ("Conv2D(4, (3, 3, 3))", "kernel_size"),
        ("Conv2D(4, 3, padding='full')", "padding"),
        ("Conv2D(4, 3, strides=0)", "strides"),
        ("Conv1D(4, (3, 3))", "kernel_size"),
        ("MaxPooling2D(pool_size=(0, 2))", "pool_size"),
        ("Dropout(1)", "rate"),
        ("Dropout(-0.1)", "rate"),
        ("Dropout(rate=None)", "rate"),
        ("BatchNormalization(momentum=1.5)", "momentum"),
        ("LayerNormalization(epsilon=0)", "epsilon"),
        ("Activation('nope')", "activation"),
        ("Reshape((-1, -1))", "target_shape"),
        ("Reshape(10)", "target_shape"),
        ("LSTM(4, return_sequences='yes')", "return_sequences"),
        ("TransformerEncoder(2, 16, dropout=1.0)", "dropout"),
        ("Dense(3000000000)", "units"),
    ],
)
def test_wrong_type_or_range_is_bad_param_naming_the_parameter(line: str, fragment: str) -> None:
    code, message, _ = problem_for(line)
    assert code == "DSL_BAD_PARAM"
    assert f"'{fragment}'" in message


def test_bad_value_points_at_the_value() -> None:
    problem = only(network("    Dense(units=-3)\n    Output(2)"))
    assert (problem.line, problem.column) == (4, 17)
    assert problem.snippet == "    Dense(units=-3)\n                ^^"
    assert "positive integer" in problem.message and "-3" in problem.message


def test_named_parameter_given_twice() -> None:
    code, message, _ = problem_for("Dense(units=3, units=4)")
    assert code == "DSL_BAD_PARAM" and "twice" in message


def test_positional_and_named_for_the_same_parameter() -> None:
    code, message, _ = problem_for("Dense(3, units=4)")
    assert code == "DSL_BAD_PARAM" and "twice" in message


def test_positional_after_named() -> None:
    code, message, hint = problem_for("Dense(units=3, 'relu')")
    assert code == "DSL_BAD_PARAM" and "positional" in message
    assert hint is not None


def test_too_many_positional_params() -> None:
    code, message, _ = problem_for("Dense(3, 'relu', True)")
    assert code == "DSL_BAD_PARAM" and "at most 2 positional" in message


def test_parameterless_layer_refuses_arguments() -> None:
    code, message, _ = problem_for("Flatten(2)")
    assert code == "DSL_BAD_PARAM" and "no positional" in message


def test_missing_required_parameter() -> None:
    code, message, hint = problem_for("Dropout()")
    assert code == "DSL_BAD_PARAM" and "'rate'" in message
    assert hint == "Dropout takes rate"


def test_unknown_parameter_near_miss_gets_a_hint() -> None:
    code, message, hint = problem_for("Dense(unit=3)")
    assert code == "DSL_BAD_PARAM" and "'unit'" in message
    assert hint == "did you mean 'units'?"


def test_unknown_parameter_far_from_any_lists_the_parameters() -> None:
    _, _, hint = problem_for("Dense(3, kernel_regularizer='l2')")
    assert hint == "Dense takes units, activation, use_bias"


def test_activation_near_miss_gets_a_hint() -> None:
    _, _, hint = problem_for("Dense(3, activation='Relu')")
    assert hint == "did you mean 'relu'?"


def test_bare_word_where_a_string_belongs_is_told_to_quote_it() -> None:
    _, _, hint = problem_for("Dense(3, activation=relu)")
    assert hint == 'strings are quoted: write "relu"'


def test_bad_params_in_two_layers_give_two_problems_in_order() -> None:
    problems = refused(network("    Dense(units=0)\n    Dropout(rate=2)\n    Output(2)"))
    assert [(p.code, p.line) for p in problems] == [("DSL_BAD_PARAM", 4), ("DSL_BAD_PARAM", 5)]


def test_two_bad_params_in_one_layer_give_two_problems() -> None:
    problems = refused(
        network("    Conv2D(filters=0, kernel_size=0)\n    Flatten()\n    Output(2)")
    )
    assert [p.code for p in problems] == ["DSL_BAD_PARAM", "DSL_BAD_PARAM"]


def test_repeat_count_must_be_positive_and_bounded() -> None:
    assert only(network("    Dense(3) * 0\n    Output(2)")).code == "DSL_BAD_PARAM"
    assert only(network("    Dense(3) * 2.5\n    Output(2)")).code == "DSL_BAD_PARAM"
    problem = only(network("    Dense(3) * 1000000\n    Output(2)"))
    assert problem.code == "DSL_BAD_PARAM" and "at most" in problem.message


def test_too_many_layers_after_expansion_is_refused() -> None:
    problem = only(network("    Dense(3) * 6000\n    Dense(3) * 6000\n    Output(2)"))
    assert problem.code == "DSL_TOO_LARGE"


def test_network_without_output_layer() -> None:
    problem = only(network("    Dense(3)"))
    assert problem.code == "DSL_BAD_PARAM"
    assert problem.message == "network has no Output layer"
    assert problem.line == 3


def test_output_must_be_the_last_layer() -> None:
    problem = only(network("    Output(2)\n    Dense(3)"))
    assert problem.code == "DSL_BAD_PARAM" and "last layer" in problem.message
    assert problem.line == 5


def test_there_must_be_exactly_one_output_layer() -> None:
    problem = only(network("    Output(2)\n    Output(2)"))
    assert problem.code == "DSL_BAD_PARAM" and "more than one Output" in problem.message
    assert problem.line == 5
    repeated = only(network("    Output(2) * 2"))
    assert repeated.code == "DSL_BAD_PARAM" and "more than one Output" in repeated.message


def test_output_with_bad_params_is_still_an_output() -> None:
    problem = only(network("    Dense(3)\n    Output(0)"))
    assert "'units'" in problem.message


def test_embedding_only_as_the_first_layer() -> None:
    problem = only(network("    Dense(3)\n    Embedding(10, 4)\n    Output(2)"))
    assert problem.code == "DSL_BAD_PARAM" and "first layer" in problem.message
    assert problem.line == 5


@pytest.mark.parametrize(
    "shape",
    ["(0, 3)", "(3, None)", "(None,)", "()", "10", "(2.5,)", "('a',)", "(None, None, 3)"],
)
def test_bad_input_shapes_are_bad_param(shape: str) -> None:
    problem = only(network("    Output(2)", input_shape=shape))
    assert problem.code == "DSL_BAD_PARAM"
    assert problem.line == 2
