"""Syntax errors carry a line, a column and a snippet, and parsing goes on where it sensibly can."""

from __future__ import annotations

import pytest

from consumers.parse.logic import parse_source
from streams.stage import StageFailure
from tests.unit.parse.sources import network, only, refused


def test_unclosed_network_points_at_its_opening_brace() -> None:
    problem = only("network Net {\n  input: (4,)\n  layers:\n    Output(2)\n")
    assert problem.code == "DSL_SYNTAX"
    assert (problem.line, problem.column) == (1, 13)
    assert problem.snippet == "network Net {\n            ^"
    assert "expected '}'" in problem.message and "end of input" in problem.message


def test_unclosed_train_block_is_reported_once() -> None:
    problem = only(
        "network Net {\n  input: (4,)\n  layers:\n    Output(2)\n  train {\n    epochs: 2\n"
    )
    assert problem.code == "DSL_SYNTAX"
    assert (problem.line, problem.column) == (5, 9)


def test_unclosed_call_points_at_its_parenthesis_and_the_next_layer_still_parses() -> None:
    problems = refused(network("    Dense(4, activation='relu'\n    Dense(0)\n    Output(2)"))
    assert [(p.code, p.line) for p in problems] == [("DSL_SYNTAX", 4), ("DSL_BAD_PARAM", 5)]
    assert problems[0].column == 10
    assert "expected ')'" in problems[0].message


def test_unclosed_parenthesis_at_end_of_input() -> None:
    problems = refused("network Net {\n  input: (4,\n")
    assert problems[0].code == "DSL_SYNTAX"
    assert (problems[0].line, problems[0].column) == (2, 10)


def test_missing_comma_between_params() -> None:
    problem = only(network("    Dense(4 'relu')\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX"
    assert (problem.line, problem.column) == (4, 13)
    assert "expected ',' or ')'" in problem.message


def test_layer_without_parentheses() -> None:
    problem = only(network("    Flatten\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX"
    assert problem.hint == "layers are written as calls, e.g. Flatten()"


def test_two_syntax_errors_in_two_layers_are_both_reported() -> None:
    problems = refused(network("    Dense(4,, 2)\n    Dropout(0.5]\n    Output(2)"))
    assert [(p.code, p.line) for p in problems] == [("DSL_SYNTAX", 4), ("DSL_SYNTAX", 5)]


def test_syntax_error_and_bad_param_in_different_sections_are_both_reported() -> None:
    problems = refused(network("    Dense(0)\n    Output(2)", extra="  train {\n    epochs 3\n  }"))
    assert [(p.code, p.line) for p in problems] == [("DSL_BAD_PARAM", 4), ("DSL_SYNTAX", 7)]


def test_unknown_section_with_hint() -> None:
    problem = only(network("    Output(2)", extra="  los: 'mse'"))
    assert problem.code == "DSL_SYNTAX"
    assert problem.message == "unknown section 'los'"
    assert problem.hint == "did you mean 'loss'?"


def test_section_given_twice() -> None:
    problem = only(network("    Output(2)", extra="  loss: mse\n  loss: mae"))
    assert problem.code == "DSL_SYNTAX" and "more than once" in problem.message
    assert problem.line == 6


def test_missing_input_section() -> None:
    problem = only("network Net {\n  layers:\n    Output(2)\n}")
    assert problem.code == "DSL_SYNTAX" and "input" in problem.message


def test_missing_layers_section() -> None:
    problem = only("network Net {\n  input: (3,)\n}")
    assert problem.code == "DSL_SYNTAX" and "layers" in problem.message


def test_something_other_than_a_network() -> None:
    problem = only("netwrk Net {}")
    assert problem.code == "DSL_SYNTAX"
    assert problem.hint == "did you mean 'network'?"


def test_extra_closing_brace_after_the_network() -> None:
    problem = only(network("    Output(2)") + "}\n")
    assert problem.code == "DSL_SYNTAX" and problem.hint == "is there an extra '}'?"


@pytest.mark.parametrize("source", ["", "   \n\n", "# only a comment\n"])
def test_empty_source_has_no_network(source: str) -> None:
    problem = only(source)
    assert problem.code == "DSL_SYNTAX" and "no network" in problem.message


def test_unterminated_string() -> None:
    problem = only(network("    Dense(4, 'relu)\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX" and "unterminated string" in problem.message
    assert (problem.line, problem.column) == (4, 14)


def test_unexpected_character() -> None:
    problem = only(network("    Dense(4) $\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX" and "'$'" in problem.message
    assert problem.snippet == "    Dense(4) $\n             ^"


@pytest.mark.parametrize("text", ["3x3", "1e", "1.2.3"])
def test_malformed_numbers(text: str) -> None:
    problem = only(network(f"    Dense({text})\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX" and "malformed number" in problem.message


def test_out_of_range_float() -> None:
    problem = only(network("    Dropout(1e999)\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX" and "out of range" in problem.message


def test_huge_integer_literal_is_refused_without_converting_it() -> None:
    problem = only(network(f"    Dense({'9' * 5000})\n    Output(2)"))
    assert problem.code == "DSL_SYNTAX" and "too long" in problem.message


def test_snippet_carets_follow_tabs() -> None:
    problem = only("network Net {\n\tinput: (4,)\n\tlayers:\n\t\tDens(2)\n\t\tOutput(2)\n}")
    assert problem.snippet == "\t\tDens(2)\n\t\t^^^^"


def test_snippet_of_a_very_long_line_is_a_window_around_the_problem() -> None:
    layers = "    " + " ".join(["Dense(4)"] * 200) + " Dense(0) Output(2)"
    problem = only(network(layers))
    assert problem.snippet is not None
    text, carets = problem.snippet.split("\n")
    assert len(text) <= 160
    assert text[len(carets) - 1] == "0"


def test_source_over_the_size_limit_is_refused_without_parsing() -> None:
    outcome = parse_source("x" * 101, max_bytes=100)
    assert isinstance(outcome, StageFailure)
    assert [p.code for p in outcome.problems] == ["DSL_TOO_LARGE"]
    multibyte = parse_source("é" * 60, max_bytes=100)
    assert isinstance(multibyte, StageFailure) and multibyte.code == "DSL_TOO_LARGE"


def test_default_size_limit_is_256_kib() -> None:
    outcome = parse_source("#" * 262_145)
    assert isinstance(outcome, StageFailure) and outcome.code == "DSL_TOO_LARGE"


@pytest.mark.parametrize("opener", ["(", "["])
def test_absurdly_deep_nesting_is_refused_not_a_recursion_error(opener: str) -> None:
    source = network(f"    Reshape({opener * 5000})\n    Output(2)")
    outcome = parse_source(source)
    assert isinstance(outcome, StageFailure)
    assert outcome.code == "DSL_TOO_DEEP"
    assert outcome.problems[0].line == 4


def test_nesting_within_the_limit_is_a_plain_value_error() -> None:
    problem = only(network(f"    Reshape({'(' * 20}2{')' * 20})\n    Output(2)"))
    assert problem.code == "DSL_BAD_PARAM"


def test_problem_count_is_capped_with_a_closing_note() -> None:
    layers = "\n".join(["    Dense(0)"] * 150 + ["    Output(2)"])
    problems = refused(network(layers))
    assert len(problems) == 101
    assert problems[-1].code == "DSL_TOO_MANY_ERRORS"
    assert "50 more" in problems[-1].message


def test_many_lexical_errors_stop_early() -> None:
    problems = refused("$" * 10_000)
    assert len(problems) == 20
