"""Source text to tokens, in one left-to-right pass with a single regular expression."""

from __future__ import annotations

import math
import re
from typing import Literal, NamedTuple

from consumers.parse.source import Diagnostics

TokenKind = Literal["name", "int", "float", "string", "punct", "end"]

# Numbers longer than this are refused before int()/float() see them (int() of a huge
# digit string is slow, and Python refuses very long ones anyway).
MAX_NUMBER_LENGTH = 64
# Names longer than this are refused, which also keeps every message that quotes one short.
MAX_NAME_LENGTH = 100
# After this many lexical errors the rest of the text is not worth scanning.
MAX_LEXICAL_ERRORS = 20

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v\n]+)
  | (?P<comment>(?:\#|//)[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?P<tail>[A-Za-z0-9_.]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\n]*"|'[^'\n]*')
  | (?P<punct>[{}()\[\],:=*@+\-])
  | (?P<quote>["'])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class Token(NamedTuple):
    """One token with its span [start, end), 1-based line/column, and whether it opens its line."""

    kind: TokenKind
    text: str
    start: int
    end: int
    line: int
    column: int
    first_on_line: bool
    value: int | float | str | None = None


class LexicalError(Exception):
    """A piece of text that is not a token; `end` is where scanning resumes."""

    def __init__(self, code: str, message: str, end: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.end, self.hint = code, message, end, hint


def tokenize(diagnostics: Diagnostics) -> list[Token]:
    """All tokens of the source, ending with an `end` token; lexical errors go to `diagnostics`."""
    text = diagnostics.source.text
    tokens: list[Token] = []
    errors = 0
    line, line_start, line_has_token = 1, 0, False
    position = 0
    while position < len(text) and errors < MAX_LEXICAL_ERRORS:
        match = _TOKEN.match(text, position)
        if match is None:
            break
        group = match.lastgroup
        start, position = match.start(), match.end()
        if group == "space":
            newlines = text.count("\n", start, position)
            if newlines:
                line, line_start = line + newlines, text.rindex("\n", start, position) + 1
                line_has_token = False
            continue
        if group == "comment":
            continue
        column, first = start - line_start + 1, not line_has_token
        line_has_token = True
        if group == "punct":  # the commonest token, kept on the short path
            tokens.append(Token("punct", match.group(), start, position, line, column, first))
            continue
        try:
            token = _token(match, text, line, column, first)
        except LexicalError as error:
            diagnostics.report(error.code, error.message, match.start(), error.end, error.hint)
            errors += 1
            position = max(position, error.end)
            if group == "block_comment":
                break
            continue
        tokens.append(token)
    end_line, end_column = diagnostics.source.position(len(text))
    tokens.append(Token("end", "", len(text), len(text), end_line, end_column, True))
    return tokens


def _token(match: re.Match[str], text: str, line: int, column: int, first: bool) -> Token:
    """The token a regular-expression match stands for, or a LexicalError."""
    group = match.lastgroup
    start = match.start()
    if group in ("number", "tail"):
        return _number(match, line, column, first)
    if group == "name":
        if match.end() - start > MAX_NAME_LENGTH:
            raise LexicalError(
                "DSL_SYNTAX", f"name is longer than {MAX_NAME_LENGTH} characters", match.end()
            )
        return Token("name", match.group(), start, match.end(), line, column, first)
    if group == "string":
        quoted = match.group()
        return Token("string", quoted, start, match.end(), line, column, first, quoted[1:-1])
    if group == "punct":
        return Token("punct", match.group(), start, match.end(), line, column, first)
    if group == "block_comment":
        raise LexicalError(
            "DSL_UNSUPPORTED",
            "block comments /* ... */ are outside the supported subset",
            match.end(),
            "use # or // comments, which run to the end of the line",
        )
    if group == "quote":
        line_end = text.find("\n", start)
        raise LexicalError(
            "DSL_SYNTAX",
            "unterminated string",
            len(text) if line_end < 0 else line_end,
            f"close the string with {match.group()} on the same line",
        )
    raise LexicalError("DSL_SYNTAX", f"unexpected character {match.group()!r}", match.end())


def _number(match: re.Match[str], line: int, column: int, first: bool) -> Token:
    """An int or float token; trailing letters (`3x3`) and absurd sizes are errors."""
    digits = match.group("number")
    if match.group("tail"):
        raise LexicalError(
            "DSL_SYNTAX",
            f"malformed number '{match.group()}'",
            match.end(),
            "numbers look like 3, 0.25 or 1e-3; shapes are tuples such as (3, 3)",
        )
    if len(digits) > MAX_NUMBER_LENGTH:
        raise LexicalError("DSL_SYNTAX", "number is too long", match.end())
    start, end = match.start(), match.end()
    if any(char in digits for char in ".eE"):
        value = float(digits)
        if not math.isfinite(value):
            raise LexicalError("DSL_SYNTAX", f"number {digits} is out of range", end)
        return Token("float", digits, start, end, line, column, first, value)
    return Token("int", digits, start, end, line, column, first, int(digits))
