"""The model's source text, and the problems found in it located by line, column and snippet."""

from __future__ import annotations

import bisect
import re

from streams.stage import Problem

# Long lines (minified or generated sources) are shown as a window around the offending text.
SNIPPET_WIDTH = 160
SNIPPET_LEAD = 60
MAX_PROBLEMS = 100

_NEWLINE = re.compile("\n")


class SourceText:
    """The text being parsed, able to turn a character offset into a 1-based line and column."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._line_starts = [0, *(match.end() for match in _NEWLINE.finditer(text))]

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        index = bisect.bisect_right(self._line_starts, offset) - 1
        return index + 1, offset - self._line_starts[index] + 1

    def excerpt(self, start: int, end: int) -> str:
        """The source text of a span, shortened for use inside a message."""
        text = self.text[start : min(end, start + 40)]
        return text + "…" if end - start > 40 else text

    def snippet(self, start: int, end: int) -> str:
        """The line holding `start`, then carets under the span (cut at the end of that line)."""
        line, column = self.position(start)
        line_start = self._line_starts[line - 1]
        line_end = self._line_starts[line] - 1 if line < len(self._line_starts) else len(self.text)
        window_start = line_start
        if column > SNIPPET_LEAD + 1 and line_end - line_start > SNIPPET_WIDTH:
            window_start = line_start + column - 1 - SNIPPET_LEAD
        window_end = min(line_end, window_start + SNIPPET_WIDTH)
        shown = self.text[window_start:window_end].rstrip("\r")
        caret_at = start - window_start
        width = max(1, min(end, window_end) - start)
        # Tabs stay tabs so the carets line up under the text in a terminal.
        lead = "".join("\t" if char == "\t" else " " for char in shown[:caret_at])
        return f"{shown}\n{lead}{'^' * width}"


class Diagnostics:
    """The problems found so far in one source, each located and given a snippet."""

    def __init__(self, source: SourceText) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.dropped = 0

    def report(
        self, code: str, message: str, start: int, end: int, hint: str | None = None
    ) -> None:
        """Record one problem at the span [start, end) of the source."""
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        line, column = self.source.position(start)
        self.problems.append(
            Problem(
                code=code,
                message=message,
                line=line,
                column=column,
                hint=hint,
                snippet=self.source.snippet(start, end),
            )
        )

    def sorted_problems(self) -> tuple[Problem, ...]:
        """Every problem in source order, with a closing note when some were left out."""
        ordered = sorted(
            self.problems, key=lambda problem: (problem.line or 0, problem.column or 0)
        )
        if self.dropped:
            ordered.append(
                Problem(
                    code="DSL_TOO_MANY_ERRORS",
                    message=f"{self.dropped} more problems were found but not listed",
                    hint="fix the problems above and parse again",
                )
            )
        return tuple(ordered)
