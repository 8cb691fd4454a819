"""Problems tied to a layer: they carry the layer's source line and column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.stage import Problem


def problem_at(
    layer: Mapping[str, Any], code: str, message: str, hint: str | None = None
) -> Problem:
    """A Problem located at `layer` (line/column left out when the IR has none)."""
    line, column = layer.get("line"), layer.get("column")
    return Problem(
        code,
        message,
        line=line if isinstance(line, int) else None,
        column=column if isinstance(column, int) else None,
        hint=hint,
    )
