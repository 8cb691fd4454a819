"""Whatever text arrives, parsing (and compiling what parses) ends in a value, never a traceback."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from streams.stage import Problem, StageFailure, StageResult
from tests.unit.parse.sources import EXAMPLES, load_schema

EXAMPLE_SOURCES = [path.read_text() for path in sorted(EXAMPLES.glob("**/*.neural"))]
CODE = re.compile(r"[A-Z][A-Z0-9_]*")
CARETS = re.compile(r"[ \t]*\^+")
FRAGMENTS = [
    "network",
    "Net",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "=",
    "*",
    "@",
    "-",
    "+",
    "input:",
    "layers:",
    "loss:",
    "optimizer:",
    "metrics:",
    "train",
    "epochs:",
    "batch_size:",
    "validation_split:",
    "dataset:",
    "seed:",
    "shuffle:",
    "define",
    "research",
    "execution",
    "hpo:",
    "HPO",
    "choice",
    "range",
    "log_range",
    "device",
    "Dense",
    "Output",
    "Conv1D",
    "Conv2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling2D",
    "Flatten",
    "Dropout",
    "BatchNormalization",
    "LayerNormalization",
    "Activation",
    "Reshape",
    "Embedding",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "TransformerEncoder",
    "Conv3D",
    "Conv2d",
    "units=",
    "filters=",
    "kernel_size=",
    "rate=",
    "activation=",
    "return_sequences=",
    "pool_size=",
    "target_shape=",
    "num_heads=",
    "ff_dim=",
    "None",
    "True",
    "false",
    "0",
    "1",
    "2",
    "3",
    "8",
    "-1",
    "0.5",
    "1e-3",
    "1e999",
    "2147483648",
    '"relu"',
    "'softmax'",
    '"same"',
    '"sklearn:digits"',
    "Adam",
    "SGD",
    "mse",
    "# c\n",
    "// c\n",
    "\n",
    "\r\n",
    "\t",
    '"',
    "'",
    "/*",
    "$",
    "é",
]
SETTINGS = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
_PARSED = jsonschema.Draft202012Validator({**load_schema(), "$ref": "#/$defs/parsed"})


def check_problem(problem: Problem, source: str) -> None:
    assert isinstance(problem, Problem)
    assert CODE.fullmatch(problem.code), problem
    assert problem.code != "DSL_INTERNAL", problem
    assert isinstance(problem.message, str) and problem.message
    assert (problem.line is None) == (problem.column is None)
    if problem.line is not None and problem.column is not None:
        assert 1 <= problem.line <= source.count("\n") + 1
        assert problem.column >= 1
    if problem.snippet is not None:
        text, carets = problem.snippet.split("\n")
        assert CARETS.fullmatch(carets), problem.snippet
        assert len(text) <= 160


def check_outcome(outcome: Any, source: str) -> None:
    assert isinstance(outcome, StageResult | StageFailure)
    if isinstance(outcome, StageFailure):
        assert outcome.problems
        for problem in (*outcome.problems, *outcome.warnings):
            check_problem(problem, source)
    else:
        for problem in outcome.warnings:
            check_problem(problem, source)


def check_source(source: str) -> None:
    """The property: parse ends in a well-formed value, and so does compiling what parsed."""
    outcome = parse_source(source)
    check_outcome(outcome, source)
    if isinstance(outcome, StageResult):
        _PARSED.validate(outcome.output)
        for target in ("pytorch", "tensorflow"):
            compiled = compile_ir(outcome.output, target=target)
            assert isinstance(compiled, StageResult | StageFailure)
            if isinstance(compiled, StageFailure):
                for problem in compiled.problems:
                    assert CODE.fullmatch(problem.code) and problem.message


@st.composite
def token_soup(draw: st.DrawFn) -> str:
    """Plausible pieces of the language in random order and spacing."""
    pieces = draw(st.lists(st.sampled_from(FRAGMENTS), max_size=80))
    gaps = draw(
        st.lists(st.sampled_from(["", " ", "\n", "  "]), min_size=len(pieces), max_size=len(pieces))
    )
    return "".join(piece + gap for piece, gap in zip(pieces, gaps, strict=True))


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    """A valid (or known-invalid) example with a few random edits."""
    source = draw(st.sampled_from(EXAMPLE_SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(source)))
        edit = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        length = draw(st.integers(1, 12))
        if edit == "delete":
            source = source[:position] + source[position + length :]
        elif edit == "insert":
            source = source[:position] + draw(st.sampled_from(FRAGMENTS)) + source[position:]
        elif edit == "duplicate":
            source = (
                source[:position]
                + source[position : position + length] * 2
                + source[position + length :]
            )
        else:
            replacement = draw(st.text(max_size=3))
            source = source[:position] + replacement + source[position + length :]
    return source


@SETTINGS
@given(st.text(max_size=400))
def test_random_text_never_raises(source: str) -> None:
    check_source(source)


@SETTINGS
@given(token_soup())
def test_random_token_sequences_never_raise(source: str) -> None:
    check_source(source)


@SETTINGS
@given(mutated_example())
def test_mutated_examples_never_raise(source: str) -> None:
    check_source(source)


@SETTINGS
@given(st.sampled_from(EXAMPLE_SOURCES), st.integers(1, 60))
def test_deep_nesting_around_examples_never_raises(source: str, depth: int) -> None:
    check_source(source.replace("(", "(" * depth, 1))
