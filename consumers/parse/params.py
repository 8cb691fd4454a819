"""Parameters: checking each value's type and range, and binding call arguments to names."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from consumers.parse.source import Diagnostics
from consumers.parse.syntax import did_you_mean
from consumers.parse.tree import Argument, Call, Mapping, Name, Scalar, Sequence, Value
from consumers.vocabulary import ACTIVATION_ALIASES, ACTIVATIONS

# Sizes beyond a 32-bit int are never meant and would only overflow a backend later.
MAX_INT = 2**31 - 1

HPO_CALLS = frozenset({"HPO", "choice", "range", "log_range", "categorical"})
LEARNING_RATE_SCHEDULES = frozenset(
    {
        "ExponentialDecay",
        "PiecewiseConstantDecay",
        "PolynomialDecay",
        "InverseTimeDecay",
        "CosineDecay",
        "CosineDecayRestarts",
        "StepDecay",
        "OneCycleLR",
    }
)


class BadValue(Exception):
    """A value of the wrong type or out of range: `expected` completes 'must be ...'."""

    def __init__(self, expected: str, hint: str | None = None) -> None:
        super().__init__(expected)
        self.expected, self.hint = expected, hint


Kind = Callable[[Value], Any]


class Required:
    """Marks a parameter that has no default."""


class SameAs:
    """A default taken from another parameter (pooling strides default to the pool size)."""

    def __init__(self, other: str) -> None:
        self.other = other


REQUIRED = Required()


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: name, how its value is checked, its default, and whether None means it."""

    name: str
    kind: Kind
    default: object = REQUIRED
    none_means_default: bool = False


# -- value kinds ------------------------------------------------------------------------------


def integer_of(value: Value) -> int | None:
    """The int a value holds, if it is an int literal (booleans are not ints here)."""
    number = value.value if isinstance(value, Scalar) else None
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    return None


def number_of(value: Value) -> float | None:
    """The number a value holds, as a float, if it is an int or float literal."""
    number = value.value if isinstance(value, Scalar) else None
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        return float(number)
    return None


def text_of(value: Value) -> str | None:
    """The text of a string literal."""
    if isinstance(value, Scalar) and isinstance(value.value, str):
        return value.value
    return None


def positive_int(value: Value) -> int:
    """An integer from 1 up to MAX_INT."""
    number = integer_of(value)
    if number is None or not 0 < number <= MAX_INT:
        raise BadValue("a positive integer")
    return number


def non_negative_int(value: Value) -> int:
    """An integer from 0 up to MAX_INT."""
    number = integer_of(value)
    if number is None or not 0 <= number <= MAX_INT:
        raise BadValue("a non-negative integer")
    return number


def int_or_pair(value: Value) -> list[int]:
    """A positive int or a pair of them, as [height, width]."""
    if isinstance(value, Sequence):
        numbers = [integer_of(item) for item in value.items]
        if len(numbers) == 2 and all(n is not None and 0 < n <= MAX_INT for n in numbers):
            return [n for n in numbers if n is not None]
        raise BadValue("a positive integer or a pair of them, such as (3, 3)")
    number = integer_of(value)
    if number is None or not 0 < number <= MAX_INT:
        raise BadValue("a positive integer or a pair of them, such as (3, 3)")
    return [number, number]


def int_single(value: Value) -> int:
    """A positive int, also accepted as a one-element tuple `(5,)`."""
    if isinstance(value, Sequence) and len(value.items) == 1:
        value = value.items[0]
    number = integer_of(value)
    if number is None or not 0 < number <= MAX_INT:
        raise BadValue("a positive integer")
    return number


def fraction(value: Value) -> float:
    """A rate in [0, 1)."""
    number = number_of(value)
    if number is None or not 0 <= number < 1:
        raise BadValue("a number with 0 <= value < 1")
    return number


def unit_interval(value: Value) -> float:
    """A number in [0, 1]."""
    number = number_of(value)
    if number is None or not 0 <= number <= 1:
        raise BadValue("a number with 0 <= value <= 1")
    return number


def positive_float(value: Value) -> float:
    """A number greater than 0."""
    number = number_of(value)
    if number is None or not number > 0:
        raise BadValue("a number greater than 0")
    return number


def non_negative_float(value: Value) -> float:
    """A number of at least 0."""
    number = number_of(value)
    if number is None or not number >= 0:
        raise BadValue("a number of at least 0")
    return number


def boolean(value: Value) -> bool:
    """True or False."""
    if isinstance(value, Scalar) and isinstance(value.value, bool):
        return value.value
    raise BadValue("True or False")


def padding(value: Value) -> str:
    """'valid' or 'same'."""
    text = text_of(value)
    if text in ("valid", "same"):
        return text
    hint = did_you_mean(text, ("valid", "same")) if text else _quote_hint(value)
    raise BadValue('"valid" or "same"', hint)


def activation(value: Value) -> str:
    """A known activation's canonical name; None means linear."""
    if isinstance(value, Scalar) and value.value is None:
        return "linear"
    text = text_of(value)
    if text in ACTIVATIONS:
        return text
    if text in ACTIVATION_ALIASES:
        return ACTIVATION_ALIASES[text]
    known = (*ACTIVATIONS, *ACTIVATION_ALIASES)
    hint = did_you_mean(text, known) if text is not None else _quote_hint(value)
    raise BadValue("a known activation (" + ", ".join(ACTIVATIONS) + ")", hint)


def target_shape(value: Value) -> list[int]:
    """A tuple of positive ints, at most one of them -1."""
    expected = "a tuple of positive integers with at most one -1, such as (4, -1)"
    if not isinstance(value, Sequence) or not value.items:
        raise BadValue(expected, "write a single dimension as (n,)")
    numbers = [integer_of(item) for item in value.items]
    dimensions = [n for n in numbers if n is not None and (0 < n <= MAX_INT or n == -1)]
    if len(dimensions) != len(numbers) or dimensions.count(-1) > 1:
        raise BadValue(expected)
    return dimensions


def _quote_hint(value: Value) -> str | None:
    if isinstance(value, Name):
        return f'strings are quoted: write "{value.text}"'
    return None


# -- binding arguments ------------------------------------------------------------------------


def outside_subset(value: Value) -> Call | Mapping | None:
    """The first call or mapping nested in a value: neither is a plain parameter value."""
    if isinstance(value, Call | Mapping):
        return value
    if isinstance(value, Sequence):
        for item in value.items:
            found = outside_subset(item)
            if found is not None:
                return found
    return None


def report_expression(found: Call | Mapping, label: str, diagnostics: Diagnostics) -> None:
    """Report a call or mapping used where a plain value belongs."""
    if isinstance(found, Mapping):
        diagnostics.report(
            "DSL_BAD_PARAM", f"{label} cannot be a {{ ... }} block", found.start, found.end
        )
    elif found.name in HPO_CALLS:
        diagnostics.report(
            "DSL_UNSUPPORTED",
            f"outside the supported subset: hyper-parameter search expression "
            f"'{found.name}(...)' in {label}",
            found.start,
            found.end,
            "give one fixed value instead",
        )
    elif found.name in LEARNING_RATE_SCHEDULES:
        diagnostics.report(
            "DSL_UNSUPPORTED",
            f"outside the supported subset: learning-rate schedule '{found.name}(...)' in {label}",
            found.start,
            found.end,
            "give a fixed learning rate instead",
        )
    else:
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"{label} cannot be a call to '{found.name}(...)'",
            found.start,
            found.end,
        )


def check_value(param: Param, value: Value, label: str, diagnostics: Diagnostics) -> Any:
    """The normalised value, or REQUIRED after reporting why the value was refused."""
    found = outside_subset(value)
    if found is not None:
        report_expression(found, label, diagnostics)
        return REQUIRED
    try:
        return param.kind(value)
    except BadValue as error:
        got = diagnostics.source.excerpt(value.start, value.end)
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"{label} must be {error.expected}, got {got}",
            value.start,
            value.end,
            error.hint,
        )
        return REQUIRED


@dataclass(frozen=True, slots=True)
class Signature:
    """What a call accepts: its parameters, how many may be positional, and refused names."""

    owner: str
    params: tuple[Param, ...]
    positional: int = 0
    unsupported: tuple[tuple[str, str], ...] = (("device", "device placement"),)
    noun: str = "parameter"


def bind(
    signature: Signature,
    arguments: Iterable[Argument],
    owner_span: tuple[int, int],
    diagnostics: Diagnostics,
) -> dict[str, Any] | None:
    """Every parameter's normalised value, defaults filled in; None if any problem was found."""
    by_name = {param.name: param for param in signature.params}
    unsupported = dict(signature.unsupported)
    given: dict[str, Argument] = {}
    values: dict[str, Any] = {}
    ok = True
    # A misspelt name probably meant a missing parameter: reporting both would say it twice.
    misnamed = False
    named_seen = False
    position = 0
    for argument in arguments:
        param = _param_for(
            signature, argument, by_name, unsupported, named_seen, position, diagnostics
        )
        if argument.name is None:
            position += 1
        else:
            named_seen = True
        if param is None:
            ok = False
            misnamed = misnamed or (argument.name is not None and argument.name not in unsupported)
            continue
        if param.name in given:
            line, _ = diagnostics.source.position(given[param.name].start)
            diagnostics.report(
                "DSL_BAD_PARAM",
                f"{signature.owner} {signature.noun} '{param.name}' is given twice "
                f"(first on line {line})",
                argument.start,
                argument.end,
            )
            ok = False
            continue
        given[param.name] = argument
        if param.none_means_default and _is_none(argument.value):
            continue
        label = f"{signature.owner} {signature.noun} '{param.name}'"
        values[param.name] = check_value(param, argument.value, label, diagnostics)
        ok = ok and values[param.name] is not REQUIRED
    for param in signature.params:
        if param.name in values:
            continue
        if isinstance(param.default, Required) and param.name not in given and not misnamed:
            diagnostics.report(
                "DSL_BAD_PARAM",
                f"{signature.owner} needs the {signature.noun} '{param.name}'",
                *owner_span,
                _usage(signature),
            )
            ok = False
        elif isinstance(param.default, Required):
            ok = False
        elif not isinstance(param.default, SameAs):
            values[param.name] = _fresh(param.default)
    if not ok:
        return None
    for param in signature.params:
        if param.name not in values and isinstance(param.default, SameAs):
            values[param.name] = _fresh(values[param.default.other])
    return {param.name: values[param.name] for param in signature.params}


def _param_for(
    signature: Signature,
    argument: Argument,
    by_name: dict[str, Param],
    unsupported: dict[str, str],
    named_seen: bool,
    position: int,
    diagnostics: Diagnostics,
) -> Param | None:
    """The parameter an argument fills, or None after reporting why it fills none."""
    span = (argument.start, argument.end)
    if argument.name is None:
        if named_seen:
            diagnostics.report(
                "DSL_BAD_PARAM",
                f"{signature.owner}: positional {signature.noun} after named ones",
                *span,
                "name it, or move it before the named ones",
            )
            return None
        if position >= signature.positional:
            diagnostics.report(
                "DSL_BAD_PARAM",
                f"{signature.owner} takes {_positional_phrase(signature)}",
                *span,
                _usage(signature),
            )
            return None
        return signature.params[position]
    if argument.name in unsupported:
        diagnostics.report(
            "DSL_UNSUPPORTED",
            f"outside the supported subset: {unsupported[argument.name]} "
            f"('{argument.name}' in {signature.owner})",
            *span,
        )
        return None
    param = by_name.get(argument.name)
    if param is None:
        names = [p.name for p in signature.params]
        hint = did_you_mean(argument.name, names) or (
            f"{signature.owner} takes " + ", ".join(names) if names else None
        )
        message = f"{signature.owner} has no {signature.noun} '{argument.name}'"
        if not names:
            message = f"{signature.owner} takes no {signature.noun}s, got '{argument.name}'"
        name_end = argument.start + len(argument.name)
        diagnostics.report("DSL_BAD_PARAM", message, argument.start, name_end, hint)
        return None
    return param


def _positional_phrase(signature: Signature) -> str:
    if not signature.positional:
        return f"no positional {signature.noun}s"
    names = ", ".join(param.name for param in signature.params[: signature.positional])
    return f"at most {signature.positional} positional {signature.noun}s ({names})"


def _usage(signature: Signature) -> str | None:
    if not signature.params:
        return None
    return f"{signature.owner} takes " + ", ".join(param.name for param in signature.params)


def _is_none(value: Value) -> bool:
    return isinstance(value, Scalar) and value.value is None


def _fresh(default: object) -> Any:
    """A default as it goes into the IR: tuples become new lists, so no output shares one."""
    if isinstance(default, tuple | list):
        return list(default)
    return default
