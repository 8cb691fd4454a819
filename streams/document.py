"""JSON text of the documents a StageCommand carries to the next stage (its spec and input).

A model's IR and generated code travel as JSON text in every StageCommand, so the worker writes
and reads several kilobytes of it per stage; orjson does both several times faster than the
standard library. Only the next stage reads this text, so its spacing does not matter; its
values do: what orjson would write or read differently from the standard library (NaN and
infinities, integers past 64 bits) goes through the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Dataclasses, datetimes and subclasses of str, int, dict and list are left to the standard
# library (it refuses the first two, as before); orjson still writes UUIDs and enums itself.
_AS_THE_STANDARD_LIBRARY = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


# Nineteen digits in a row may be an integer past 64 bits (or just a long string or fraction).
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def document_text(value: Any) -> str:
    """`value` as JSON text; TypeError for what JSON cannot hold, as json.dumps raises."""
    try:
        text = orjson.dumps(value, option=_AS_THE_STANDARD_LIBRARY).decode()
    except TypeError:
        return json.dumps(value)
    # orjson writes NaN and infinities as null; the standard library keeps them (as NaN,
    # Infinity), and so does the next stage. A document with a null is rarely a hot one.
    return json.dumps(value) if "null" in text else text


def document_of(text: str) -> Any:
    """The value of JSON text; ValueError when it is not JSON, as json.loads raises."""
    if _LONG_NUMBER.search(text):
        # orjson reads an integer past 64 bits as a float; the standard library keeps it whole.
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
