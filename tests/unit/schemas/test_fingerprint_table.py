"""schemas/README.md lists every schema's fingerprints, regenerated here so it cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schemas.codec import BUNDLED_DIRECTORY, CONFLUENT_IDS
from schemas.fingerprints import avro_python_fingerprint_of, fingerprint_of
from tests.unit.schemas.schema_files import current, declared, history_paths

README = BUNDLED_DIRECTORY / "README.md"
BEGIN = "<!-- fingerprint table: generated from the .avsc files, checked by tests -->"
END = "<!-- end of fingerprint table -->"
CONFLUENT_ID = {
    version: int(schema_id)
    for schema_id, version in json.loads((BUNDLED_DIRECTORY / CONFLUENT_IDS).read_text()).items()
}


def _row(path: Path) -> str:
    event_type, version, _ = path.name.split(".")
    schema = declared(path)
    spec = fingerprint_of(schema)
    is_current = spec == fingerprint_of(current(event_type))
    label = f"{version} (current)" if is_current else version
    python = avro_python_fingerprint_of(schema)
    confluent = CONFLUENT_ID[path.name.removesuffix(".avsc")]
    return f"| {event_type} | {label} | `{spec.hex()}` | `{python.hex()}` | {confluent} |"


def fingerprint_table() -> str:
    """The table as the README must hold it, from the .avsc files as they are now."""
    lines = [
        BEGIN,
        "| event type | version | fingerprint (spec) | fingerprint (avro-python) | Confluent id |",
        "|---|---|---|---|---|",
        *(_row(path) for path in history_paths()),
        END,
    ]
    return "\n".join(lines)


def _readme_table() -> str:
    found = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), README.read_text(), re.S)
    assert found, f"{README} has no fingerprint table between {BEGIN!r} and {END!r}"
    return found.group(0)


def test_readme_lists_the_fingerprints_of_every_schema_as_computed_now() -> None:
    expected = fingerprint_table()
    assert _readme_table() == expected, f"stale table; replace it with:\n{expected}"


def test_every_event_type_has_exactly_one_current_row() -> None:
    rows = fingerprint_table().splitlines()[3:-1]
    current_types = [row.split(" | ")[0].strip("| ") for row in rows if "(current)" in row]
    all_types = sorted({path.stem for path in BUNDLED_DIRECTORY.glob("*.avsc")})
    assert sorted(current_types) == all_types
