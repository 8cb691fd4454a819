"""Compile stage agent: consumes the model IR, emits it checked with shapes and parameter counts."""

from __future__ import annotations

from consumers.compile.logic import compile_ir
from streams.runner import StageCommand, StageReporter
from streams.stage import Outcome


async def run(command: StageCommand, reporter: StageReporter) -> Outcome:
    return compile_ir(command.input, target=command.spec.get("target") or "pytorch")
