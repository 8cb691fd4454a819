"""Constructs of the full Neural DSL outside the subset are refused, naming construct and line."""

from __future__ import annotations

import pytest

from tests.unit.parse.sources import network, only, refused


@pytest.mark.parametrize(
    ("line", "construct"),
    [
        ("Dense(HPO(choice(32, 64)))", "HPO"),
        ("Dense(8, activation=HPO(choice('relu', 'tanh')))", "HPO"),
        ("Dropout(HPO(range(0.1, 0.5, step=0.1)))", "HPO"),
        ("Conv2D(4, kernel_size=(HPO(choice(3, 5)), 3))", "HPO"),
        ("Dense(choice(8, 16))", "choice"),
        ("Dense(log_range(8, 64))", "log_range"),
    ],
)
def test_hyper_parameter_search_in_a_layer(line: str, construct: str) -> None:
    problem = only(network(f"    {line}\n    Flatten()\n    Output(2)", input_shape="(8, 8, 1)"))
    assert problem.code == "DSL_UNSUPPORTED"
    assert problem.line == 4
    assert construct in problem.message and "hyper-parameter" in problem.message


def test_hyper_parameter_search_in_optimizer_and_train() -> None:
    extra = (
        "  optimizer: Adam(learning_rate=HPO(log_range(1e-4, 1e-2)))\n"
        "  train { batch_size: HPO(choice(32, 64)) }"
    )
    problems = refused(network("    Output(2)", extra=extra))
    assert [(p.code, p.line) for p in problems] == [("DSL_UNSUPPORTED", 5), ("DSL_UNSUPPORTED", 6)]


def test_search_method_train_key_is_hyper_parameter_search() -> None:
    problem = only(network("    Output(2)", extra="  train { search_method: 'bayesian' }"))
    assert problem.code == "DSL_UNSUPPORTED" and "search_method" in problem.message


def test_hpo_section() -> None:
    problem = only(network("    Output(2)", extra="  hpo: { trials: 10 }"))
    assert problem.code == "DSL_UNSUPPORTED" and "hpo" in problem.message


def test_learning_rate_schedule() -> None:
    extra = "  optimizer: SGD(learning_rate=ExponentialDecay(0.1, 1000, 0.96))"
    problem = only(network("    Output(2)", extra=extra))
    assert problem.code == "DSL_UNSUPPORTED" and "ExponentialDecay" in problem.message


def test_macro_definition_is_refused_and_its_use_not_reported_again() -> None:
    source = "define Block {\n  Dense(4)\n}\n" + network("    Block()\n    Output(2)")
    problem = only(source)
    assert problem.code == "DSL_UNSUPPORTED" and "define" in problem.message
    assert problem.line == 1


def test_research_block() -> None:
    source = network("    Output(2)") + "research Paper {\n  metrics { accuracy: 0.9 }\n}\n"
    problem = only(source)
    assert problem.code == "DSL_UNSUPPORTED" and "research" in problem.message
    assert problem.line == 7


def test_research_block_inside_the_network() -> None:
    problem = only(network("    Output(2)", extra="  research { notes: 'x' }"))
    assert problem.code == "DSL_UNSUPPORTED" and "research" in problem.message


@pytest.mark.parametrize(
    ("shape", "what"),
    [
        ("(28, 28, 1), (10,)", "several input shapes"),
        ("[(28, 28, 1), (10,)]", "several input shapes"),
        ("{ image: (28, 28, 1), meta: (10,) }", "named inputs"),
    ],
)
def test_multi_input_networks(shape: str, what: str) -> None:
    problem = only(network("    Flatten()\n    Output(2)", input_shape=shape))
    assert problem.code == "DSL_UNSUPPORTED"
    assert "multi-input" in problem.message and what in problem.message
    assert problem.line == 2


def test_device_placement_with_at() -> None:
    problem = only(network("    Dense(4) @ 'cuda:0'\n    Output(2)"))
    assert problem.code == "DSL_UNSUPPORTED" and "device placement" in problem.message
    assert (problem.line, problem.column) == (4, 14)


def test_device_placement_as_a_parameter() -> None:
    problem = only(network("    Dense(4, device='cuda')\n    Output(2)"))
    assert problem.code == "DSL_UNSUPPORTED" and "device placement" in problem.message


def test_device_placement_in_train_and_execution() -> None:
    problems = refused(
        network("    Output(2)", extra="  train { device: 'cuda' }\n  execution { device: 'cpu' }")
    )
    assert [p.code for p in problems] == ["DSL_UNSUPPORTED", "DSL_UNSUPPORTED"]
    assert all("device placement" in p.message for p in problems)


@pytest.mark.parametrize(
    "name",
    [
        "Conv3D",
        "Attention",
        "MultiHeadAttention",
        "Residual",
        "TransformerDecoder",
        "Bidirectional",
    ],
)
def test_layers_of_the_full_language_are_unsupported_not_unknown(name: str) -> None:
    problem = only(network(f"    {name}(4)\n    Output(2)"))
    assert problem.code == "DSL_UNSUPPORTED"
    assert name in problem.message
    assert (problem.line, problem.column) == (4, 5)


def test_activation_layers_suggest_the_activation_layer() -> None:
    problem = only(network("    LeakyReLU()\n    Output(2)"))
    assert problem.hint == 'use Activation("leaky_relu") instead'


def test_nested_layer_blocks() -> None:
    problems = refused(network("    Residual() {\n      Dense(4)\n    }\n    Output(2)"))
    assert [p.code for p in problems] == ["DSL_UNSUPPORTED", "DSL_UNSUPPORTED"]
    assert "nested layer blocks" in problems[1].message


def test_named_branches() -> None:
    problem = only(network("    left: { Dense(4) }\n    Output(2)"))
    assert problem.code == "DSL_UNSUPPORTED" and "branches" in problem.message


def test_several_networks_in_one_file() -> None:
    problem = only(network("    Output(2)") + network("    Output(3)"))
    assert problem.code == "DSL_UNSUPPORTED" and "several networks" in problem.message


def test_block_comments() -> None:
    problem = only("/* old */\n" + network("    Output(2)"))
    assert problem.code == "DSL_UNSUPPORTED" and "block comments" in problem.message


def test_near_miss_layer_name_is_unknown_with_a_hint() -> None:
    problem = only(network("    Conv3d(4)\n    Output(2)"))
    assert problem.code == "DSL_UNKNOWN_LAYER"
    assert problem.message == "unknown layer 'Conv3d'"
    assert problem.hint == "did you mean 'Conv2D'?"


def test_far_off_layer_name_lists_the_supported_layers() -> None:
    problem = only(network("    Frobnicate(4)\n    Output(2)"))
    assert problem.code == "DSL_UNKNOWN_LAYER"
    assert problem.hint is not None and problem.hint.startswith("supported layers: Dense, Output")


def test_two_bad_layers_give_two_problems() -> None:
    problems = refused(network("    Dens(4)\n    Conv3D(2)\n    Output(2)"))
    assert [(p.code, p.line) for p in problems] == [
        ("DSL_UNKNOWN_LAYER", 4),
        ("DSL_UNSUPPORTED", 5),
    ]
