"""The bundled .avsc files as plain JSON, the way the contract's readers see them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.codec import BUNDLED_DIRECTORY

HISTORY_DIRECTORY = BUNDLED_DIRECTORY / "history"


def declared(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def current(event_type: str) -> dict[str, Any]:
    return declared(BUNDLED_DIRECTORY / f"{event_type}.avsc")


def history_paths() -> list[Path]:
    return sorted(HISTORY_DIRECTORY.glob("*.avsc"))


def without_logical_types(node: Any) -> Any:
    """Plain ints and strings for timestamps and UUIDs, as the codec hands them out."""
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical_types(item) for item in node]
    return node
