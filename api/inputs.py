"""Checks on what arrives from the wire, shared by the routes."""

from __future__ import annotations

# 2^63 - 1 has 19 digits: every integer the API takes fits in as many.
_MAX_DIGITS = 19


def ascii_int(text: str) -> int | None:
    """`text` as an integer when it is 1 to 19 ASCII digits, else None.

    `str.isdigit` also takes '²' (which `int` refuses) and '\u0661' (which `int` reads as 1), and
    `int` refuses more than 4300 digits with a ValueError.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    return int(text)
