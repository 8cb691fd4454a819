"""The syntax tree: what the source says, with spans, before any meaning is checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Scalar:
    """A literal: int, float, string, True/False or None."""

    value: int | float | str | bool | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Name:
    """A bare identifier used as a value, such as `loss: mse` or `optimizer: Adam`."""

    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sequence:
    """A tuple `( ... )` or a list `[ ... ]`."""

    brackets: Literal["()", "[]"]
    items: tuple[Value, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Entry:
    """`key: value` (or `key = value`) inside braces."""

    key: str
    key_start: int
    key_end: int
    value: Value


@dataclass(frozen=True, slots=True)
class Mapping:
    """A braced group of entries, `{ key: value ... }`."""

    entries: tuple[Entry, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a call: positional when `name` is None."""

    name: str | None
    value: Value
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Call:
    """`Name(arguments)`: a layer, an optimizer, or an expression such as HPO(...)."""

    name: str
    arguments: tuple[Argument, ...]
    start: int
    name_end: int
    end: int


Value = Scalar | Name | Sequence | Mapping | Call


@dataclass(frozen=True, slots=True)
class LayerLine:
    """One entry of `layers:`: a call, optionally repeated with `* N`."""

    call: Call
    repeat: Value | None


@dataclass(frozen=True, slots=True)
class Section:
    """A `key: value` section of the network; `input:` may hold several values."""

    key: str
    start: int
    end: int
    values: tuple[Value, ...]


@dataclass(slots=True)
class NetworkTree:
    """Everything the parser read from one `network Name { ... }` block."""

    name: str
    start: int
    name_end: int
    input: Section | None = None
    layers_section: Section | None = None
    layers: list[LayerLine] = field(default_factory=list)
    loss: Section | None = None
    optimizer: Section | None = None
    metrics: Section | None = None
    train: Mapping | None = None
    macros: set[str] = field(default_factory=set)
