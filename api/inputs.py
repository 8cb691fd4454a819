"""Checks on what arrives from the wire, shared by the routes."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

# 2^63 - 1 has 19 digits: every integer the API takes fits in as many.
_MAX_DIGITS = 19
# How deep a request body may nest arrays and objects. json.loads recurses once per level (a
# RecursionError near 1000), and so do pydantic and json.dumps after it.
MAX_JSON_DEPTH = 32
# What changes the nesting depth: brackets, and the quotes and escapes that hide them in strings.
_JSON_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_OPENERS = frozenset({b"[", b"{"})
# How many unstorable strings one answer lists.
_MAX_PROBLEMS = 20
_MAX_TENANT_LENGTH = 100


def ascii_int(text: str) -> int | None:
    """`text` as an integer when it is 1 to 19 ASCII digits, else None.

    `str.isdigit` also takes '²' (which `int` refuses) and '\\u0661' (which `int` reads as 1),
    and `int` refuses more than 4300 digits with a ValueError.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    return int(text)


def is_tenant(text: str) -> bool:
    """1 to 100 printable characters: no NUL or other control character, no lone surrogate."""
    return 0 < len(text) <= _MAX_TENANT_LENGTH and text.isprintable()


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep, read without parsing.

    Exact for valid JSON. For invalid JSON it is exact up to the first error, which is as far
    as json.loads gets before refusing it.
    """
    depth = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or token.startswith(b"\\"):
            continue
        elif token in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def unstorable_strings(value: Any) -> list[dict[str, str]]:
    """Where parsed JSON holds strings that cannot be stored as text, as validation problems.

    JSON can write an unpaired surrogate ("\\ud800"), which is no Unicode text (UTF-8 cannot
    encode it), and NUL ("\\u0000"), which PostgreSQL's text and jsonb cannot hold. Keys count
    as much as values.
    """
    return list(itertools.islice(_unstorable(value, ()), _MAX_PROBLEMS))


def _unstorable(value: Any, path: tuple[str, ...]) -> Iterator[dict[str, str]]:
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem is not None:
            yield {"field": _field(path), "problem": problem}
    elif isinstance(value, dict):
        for key, item in value.items():
            here = (*path, key)
            problem = _text_problem(key)
            if problem is not None:
                yield {"field": _field(here), "problem": f"the key {problem}"}
            yield from _unstorable(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, (*path, str(index)))


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains NUL (\\u0000), which cannot be stored as text"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "contains an unpaired surrogate, which is not Unicode text"
    return None


def _field(path: tuple[str, ...]) -> str:
    """The path as pydantic writes one ("labels.team"), its NULs and surrogates escaped."""
    dotted = ".".join(path).encode("utf-8", "backslashreplace").decode()
    return dotted.replace("\x00", "\\u0000")
