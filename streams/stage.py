"""The contract between a stage's pure logic and the runner that plugs it into Kafka."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Problem:
    """One error or warning, as a value that crosses every boundary (never a traceback)."""

    code: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    snippet: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: fields that do not apply are left out."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        for key in ("line", "column", "hint", "snippet"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class StageResult:
    """A stage that worked: `output` feeds the next stage, `summary` goes on StageChanged."""

    output: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class StageFailure:
    """A stage that refused its input; the first problem's code is the stage's error code."""

    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("a StageFailure needs at least one problem")

    @property
    def code(self) -> str:
        return self.problems[0].code

    @property
    def message(self) -> str:
        first = self.problems[0]
        more = len(self.problems) - 1
        return first.message if not more else f"{first.message} (and {more} more)"


@dataclass(frozen=True, slots=True)
class StageCancelled:
    """A stage stopped because its job was cancelled; `summary` says how far it got."""

    reason: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


Outcome = StageResult | StageFailure | StageCancelled


class Reporter(Protocol):
    """What a stage may publish while it works (progress, logs, metrics, artifacts)."""

    async def progress(self, percent: float, message: str = "") -> None: ...

    async def log(self, message: str, level: str = "INFO", stream: str = "stdout") -> None: ...

    async def metric(
        self, name: str, value: float, step: int = 0, labels: Mapping[str, str] | None = None
    ) -> None: ...

    async def artifact(
        self, name: str, media_type: str, content: bytes, uri: str | None = None
    ) -> None: ...
