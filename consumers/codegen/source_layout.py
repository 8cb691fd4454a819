"""Laying out generated Python the way `ruff format` would, so generated modules read as written."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LINE_LENGTH = 100


@dataclass(frozen=True, slots=True)
class Call:
    """A call expression in generated code: `head(args...)`."""

    head: str
    args: tuple[str, ...] = ()

    def inline(self) -> str:
        return f"{self.head}({', '.join(self.args)})"


def call(head: str, *args: object, **kwargs: object) -> Call:
    """A Call with positional args and keyword args, each rendered as Python source."""
    rendered = [source(arg) for arg in args]
    rendered += [f"{key}={source(value)}" for key, value in kwargs.items()]
    return Call(head, tuple(rendered))


def source(value: object) -> str:
    """A Python literal for a value of the IR (tuples stay tuples; Call objects inline)."""
    if isinstance(value, Call):
        return value.inline()
    if isinstance(value, tuple | list):
        items = [source(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, str):
        # JSON string escapes are valid Python, and double quotes are what ruff format writes.
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def laid_out(expression: Call, indent: int, suffix: str = "", prefix: str = "") -> list[str]:
    """Lines of one call: on one line, else its args on one indented line, else one per line."""
    pad = " " * indent
    whole = f"{pad}{prefix}{expression.inline()}{suffix}"
    if len(whole) <= LINE_LENGTH or not expression.args:
        return [whole]
    hugged = f"{pad}    {', '.join(expression.args)}"
    if len(hugged) <= LINE_LENGTH:
        return [f"{pad}{prefix}{expression.head}(", hugged, f"{pad}){suffix}"]
    return [
        f"{pad}{prefix}{expression.head}(",
        *(f"{pad}    {arg}," for arg in expression.args),
        f"{pad}){suffix}",
    ]


def expanded(head: str, items: Iterable[Sequence[str]], indent: int, suffix: str = "") -> list[str]:
    """A call whose args go one per line with a trailing comma (items are already laid out)."""
    pad = " " * indent
    return [f"{pad}{head}(", *(line for item in items for line in item), f"{pad}){suffix}"]


def layer_comment(layer: Mapping[str, Any], indent: int) -> str:
    """The comment above a layer's code: type, source line, shapes and trainable parameters."""
    pad = " " * indent
    where = f"{pad}# {layer['type']} (line {layer.get('line', '?')})"
    shapes = f"{source(tuple(layer['input_shape']))} -> {source(tuple(layer['output_shape']))}"
    count = f", {layer['param_count']:,} parameters" if layer["param_count"] else ""
    full = f"{where}: {shapes}{count}"
    return full if len(full) <= LINE_LENGTH else where


def module_text(blocks: Iterable[str]) -> str:
    """Top-level blocks joined with the two blank lines PEP 8 puts between them."""
    return "\n\n\n".join(block.strip("\n") for block in blocks) + "\n"
