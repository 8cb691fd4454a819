"""Parse stage agent: consumes the job's DSL text, emits the model IR."""

from __future__ import annotations

from consumers.parse.logic import parse_source
from streams.runner import StageCommand, StageReporter
from streams.stage import Outcome


async def run(command: StageCommand, reporter: StageReporter) -> Outcome:
    return parse_source(command.spec.get("dsl") or "")
