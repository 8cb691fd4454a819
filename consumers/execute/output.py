"""A running program's output as lines, under one byte budget shared by stdout and stderr."""

from __future__ import annotations

MAX_LINE_BYTES = 16 * 1024


class OutputBudget:
    """How many bytes both streams together may still deliver."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False

    def take(self, chunk: bytes) -> bytes:
        """The part of `chunk` that fits; a chunk that does not fit marks the budget exceeded."""
        room = self.limit - self.used
        if len(chunk) > room:
            self.exceeded = True
            chunk = chunk[: max(room, 0)]
        self.used += len(chunk)
        return chunk


class Lines:
    """One stream's bytes cut into lines without their newline, none longer than `max_bytes`."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_bytes
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that `chunk` completes, in order."""
        data = self._pending + chunk
        lines: list[bytes] = []
        start = 0
        while True:
            newline = data.find(b"\n", start, start + self._max + 1)
            if newline >= 0:
                lines.append(data[start:newline])
                start = newline + 1
            elif len(data) - start > self._max:
                lines.append(data[start : start + self._max])
                start += self._max
            else:
                break
        self._pending = data[start:]
        return lines

    def finish(self) -> list[bytes]:
        """The partial last line, if the stream ended without a newline."""
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


class Announcement:
    """The launcher's first stderr line: a per-run token printed just before the program is
    exec'd. Seeing it proves the sandbox came up; everything after it is the program's."""

    def __init__(self, token: bytes) -> None:
        self._expected = token + b"\n"
        self._head = b""
        self.seen: bool | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The part of `chunk` that is output (nothing while the head is still undecided)."""
        if self.seen is not None:
            return chunk
        self._head += chunk
        if self._head.startswith(self._expected):
            self.seen = True
            return self._take(len(self._expected))
        if self._expected.startswith(self._head):
            return b""
        self.seen = False
        return self._take(0)

    def finish(self) -> bytes:
        """What is left at the end of the stream: a head that never became the token."""
        if self.seen is None:
            self.seen = False
        return self._take(0)

    def _take(self, skip: int) -> bytes:
        rest, self._head = self._head[skip:], b""
        return rest
