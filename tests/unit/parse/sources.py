"""Model sources for the parse tests, and the two ways a parse can end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consumers.parse.logic import parse_source
from streams.stage import Problem, StageFailure, StageResult

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
SCHEMA_PATH = ROOT / "consumers" / "ir.schema.json"


def network(layers: str, *, extra: str = "", input_shape: str = "(10,)") -> str:
    """A minimal network around some layer lines (and optional further sections)."""
    return f"network Net {{\n  input: {input_shape}\n  layers:\n{layers}\n{extra}\n}}\n"


def parsed(source: str) -> dict[str, Any]:
    """The IR of a source that must parse."""
    outcome = parse_source(source)
    assert isinstance(outcome, StageResult), _problems_text(outcome)
    return outcome.output


def refused(source: str) -> list[Problem]:
    """The problems of a source that must be refused."""
    outcome = parse_source(source)
    assert isinstance(outcome, StageFailure), f"parsed unexpectedly: {outcome}"
    return list(outcome.problems)


def only(source: str) -> Problem:
    """The single problem of a source that must be refused for exactly one reason."""
    problems = refused(source)
    assert len(problems) == 1, _problems_text(StageFailure(tuple(problems)))
    return problems[0]


def load_schema() -> dict[str, Any]:
    """The IR schema document."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _problems_text(outcome: StageResult | StageFailure) -> str:
    if isinstance(outcome, StageResult):
        return "parsed"
    return "\n".join(json.dumps(problem.as_dict()) for problem in outcome.problems)
