"""Checks on what arrives from the wire, shared by the routes."""

from __future__ import annotations

import re

# 2^63 - 1 has 19 digits: every integer the API takes fits in as many.
_MAX_DIGITS = 19
# How deep a request body may nest arrays and objects. json.loads recurses once per level (a
# RecursionError near 1000), and so do pydantic and json.dumps after it.
MAX_JSON_DEPTH = 32
# What changes the nesting depth: brackets, and the quotes and escapes that hide them in strings.
_JSON_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_OPENERS = frozenset({b"[", b"{"})


def ascii_int(text: str) -> int | None:
    """`text` as an integer when it is 1 to 19 ASCII digits, else None.

    `str.isdigit` also takes '²' (which `int` refuses) and '\\u0661' (which `int` reads as 1),
    and `int` refuses more than 4300 digits with a ValueError.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    return int(text)


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
