"""Codegen stage agent: checked IR in, model source out (also stored as an artifact)."""

from __future__ import annotations

from consumers.codegen.logic import generate_code
from streams.runner import StageCommand, StageReporter
from streams.stage import Outcome, StageResult


async def run(command: StageCommand, reporter: StageReporter) -> Outcome:
    outcome = generate_code(command.input, target=command.spec.get("target"))
    if isinstance(outcome, StageResult):
        module: str = outcome.output["module"]
        await reporter.artifact("model.py", "text/x-python", module.encode())
    return outcome
