"""Tokens to a syntax tree: a recursive-descent parser that recovers and keeps going."""

from __future__ import annotations

import difflib
from typing import Literal

from consumers.parse.source import Diagnostics
from consumers.parse.tokens import Token
from consumers.parse.tree import (
    Argument,
    Call,
    Entry,
    LayerLine,
    Mapping,
    Name,
    NetworkTree,
    Scalar,
    Section,
    Sequence,
    Value,
)

# Brackets nested deeper than this are refused (no real model comes near it), which also
# bounds every recursion in this package.
MAX_DEPTH = 32

SECTIONS = ("input", "layers", "loss", "optimizer", "metrics", "train")
# Sections of the original language that this subset does not take, and what they are.
UNSUPPORTED_SECTIONS = {
    "execution": "device placement ('execution' block)",
    "device": "device placement ('device:')",
    "hpo": "hyper-parameter search ('hpo' block)",
    "research": "research blocks ('research')",
    "define": "macros ('define')",
    "training": "the 'training' block (this subset uses 'train { ... }')",
}
_CONSTANTS: dict[str, bool | None] = {
    "True": True,
    "true": True,
    "False": False,
    "false": False,
    "None": None,
}
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class Abandon(Exception):
    """A syntax error that ends the construct being read; the caller recovers."""

    def __init__(self, message: str, start: int, end: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.start, self.end, self.hint = message, start, end, hint


class TooDeep(Exception):
    """Nesting beyond MAX_DEPTH: parsing stops altogether."""

    def __init__(self, token: Token) -> None:
        super().__init__("too deep")
        self.token = token


def read_network(tokens: list[Token], diagnostics: Diagnostics) -> NetworkTree | None:
    """The one network a source defines, with every syntax problem reported to `diagnostics`."""
    return Parser(tokens, diagnostics).read()


def describe(token: Token) -> str:
    """How a token is named in an error message (long ones shortened)."""
    text = token.text if len(token.text) <= 40 else token.text[:40] + "…"
    if token.kind == "end":
        return "the end of input"
    if token.kind == "string":
        return f"the string {text}"
    if token.kind in ("int", "float"):
        return f"the number {text}"
    return f"'{text}'"


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """A 'did you mean' hint from the closest choice, comparing without case."""
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean '{lowered[close[0]]}'?" if close else None


class Parser:
    """Recursive descent over the token list; one instance reads one source."""

    def __init__(self, tokens: list[Token], diagnostics: Diagnostics) -> None:
        self._tokens = tokens
        self._position = 0
        self._diagnostics = diagnostics
        self._end_reported = False

    # -- the file -------------------------------------------------------------------------

    def read(self) -> NetworkTree | None:
        """Read the whole file: one network, reporting outside-the-subset blocks around it."""
        network: NetworkTree | None = None
        macros: set[str] = set()
        try:
            while self._peek().kind != "end":
                token = self._peek()
                if self._word("network"):
                    found = self._network()
                    if network is None:
                        network = found
                    else:
                        self._unsupported("several networks in one file", token)
                elif token.kind == "name" and token.text in ("define", "research"):
                    self._unsupported_block(token, macros)
                elif network is not None:
                    self._syntax(
                        f"unexpected {describe(token)} after the end of network '{network.name}'",
                        token,
                        "is there an extra '}'?" if token.text == "}" else None,
                    )
                    break
                else:
                    self._syntax(
                        f"expected 'network', found {describe(token)}",
                        token,
                        did_you_mean(token.text, ["network"]) if token.kind == "name" else None,
                    )
                    break
        except Abandon as error:
            self._diagnostics.report(
                "DSL_SYNTAX", error.message, error.start, error.end, error.hint
            )
        except TooDeep as error:
            self._diagnostics.report(
                "DSL_TOO_DEEP",
                f"brackets are nested more than {MAX_DEPTH} levels deep",
                error.token.start,
                error.token.end,
                "no model needs this much nesting; check for unbalanced brackets",
            )
            return None
        if network is None and not self._diagnostics.problems:
            end = self._peek()
            self._syntax("no network definition found", end, "write network Name { ... }")
        if network is not None:
            network.macros |= macros
        return network

    def _network(self) -> NetworkTree:
        self._advance()
        name = self._expect_name("the network's name after 'network'")
        opening = self._expect("{", f"'{{' to open network '{name.text}'")
        network = NetworkTree(name=name.text, start=name.start, name_end=name.end)
        while True:
            token = self._peek()
            if self._punct("}"):
                self._advance()
                return network
            if token.kind == "end":
                self._unclosed(opening, f"network '{name.text}'")
                return network
            anchor = self._position
            try:
                self._section(network)
            except Abandon as error:
                self._diagnostics.report(
                    "DSL_SYNTAX", error.message, error.start, error.end, error.hint
                )
                self._recover(anchor)

    # -- sections -------------------------------------------------------------------------

    def _section(self, network: NetworkTree) -> None:
        token = self._peek()
        if token.kind != "name":
            raise Abandon(
                f"expected a section such as 'layers:' or '}}', found {describe(token)}",
                token.start,
                token.end,
            )
        word = token.text
        if word in UNSUPPORTED_SECTIONS:
            self._unsupported_block(token, network.macros)
            return
        if word not in SECTIONS:
            raise Abandon(
                f"unknown section '{word}'",
                token.start,
                token.end,
                did_you_mean(word, SECTIONS)
                or "sections are input, layers, loss, optimizer, metrics and train",
            )
        self._advance()
        if word == "train":
            if self._punct(":"):
                self._advance()
            block = self._mapping(1, "the train block")
            if network.train is not None:
                self._duplicate(token)
            else:
                network.train = block
            return
        self._expect(":", f"':' after '{word}'")
        if word == "layers":
            layers = self._layers()
            if network.layers_section is not None:
                self._duplicate(token)
            else:
                network.layers_section = Section(word, token.start, token.end, ())
                network.layers = layers
            return
        values = [self._value(1)]
        while word == "input" and self._punct(","):
            self._advance()
            values.append(self._value(1))
        section = Section(word, token.start, token.end, tuple(values))
        if getattr(network, word) is not None:
            self._duplicate(token)
        else:
            setattr(network, word, section)

    def _layers(self) -> list[LayerLine]:
        layers: list[LayerLine] = []
        while True:
            token = self._peek()
            if token.kind == "end" or self._punct("}"):
                return layers
            following = self._peek(1)
            if token.kind == "name" and self._is_section_start(token, following):
                return layers
            anchor = self._position
            if self._is_branch(token, following):
                self._branch(token)
                continue
            if token.kind == "name" and following.kind == "punct" and following.text == ":":
                return layers
            try:
                if token.kind == "name" and following.kind == "punct" and following.text == "(":
                    layers.append(self._layer())
                elif token.kind == "name":
                    raise Abandon(
                        f"expected '(' after layer name '{token.text}'",
                        token.start,
                        token.end,
                        f"layers are written as calls, e.g. {token.text}()",
                    )
                else:
                    raise Abandon(
                        f"expected a layer such as Dense(...), found {describe(token)}",
                        token.start,
                        token.end,
                    )
            except Abandon as error:
                self._diagnostics.report(
                    "DSL_SYNTAX", error.message, error.start, error.end, error.hint
                )
                self._recover(anchor)

    def _is_section_start(self, token: Token, following: Token) -> bool:
        if token.text in UNSUPPORTED_SECTIONS and following.kind == "name":
            return True
        known = token.text in SECTIONS or token.text in UNSUPPORTED_SECTIONS
        return known and following.kind == "punct" and following.text in (":", "{", "=")

    def _is_branch(self, token: Token, following: Token) -> bool:
        after = self._peek(2)
        return (
            token.kind == "name"
            and following.kind == "punct"
            and following.text == ":"
            and after.kind == "punct"
            and after.text == "{"
        )

    def _branch(self, token: Token) -> None:
        """`name: { layers }` — named branches of the original language."""
        self._advance()
        self._advance()
        self._unsupported(f"named branches ('{token.text}: {{ ... }}')", token)
        self._skip_block()

    def _layer(self) -> LayerLine:
        name = self._advance()
        call = self._call(name, 1)
        repeat: Value | None = None
        while True:
            token = self._peek()
            if self._punct("@"):
                self._advance()
                placement = self._value(1)
                self._diagnostics.report(
                    "DSL_UNSUPPORTED",
                    "outside the supported subset: device placement "
                    f"('@ {self._excerpt(placement)}')",
                    token.start,
                    placement.end,
                    "remove it: the train stage decides where the model runs",
                )
            elif self._punct("{"):
                self._unsupported(f"nested layer blocks ('{name.text}(...) {{ ... }}')", token)
                self._skip_block()
            elif self._punct("*") and repeat is None:
                self._advance()
                repeat = self._value(1)
            else:
                return LayerLine(call, repeat)

    def _unsupported_block(self, keyword: Token, macros: set[str]) -> None:
        """Report an outside-the-subset block and step over it."""
        self._advance()
        what = UNSUPPORTED_SECTIONS[keyword.text]
        self._unsupported(what, keyword)
        if keyword.text == "define" and self._peek().kind == "name":
            macros.add(self._advance().text)
        while self._peek().kind == "name" and not self._peek().first_on_line:
            self._advance()
        if self._punct(":") or self._punct("="):
            self._advance()
        if self._punct("{"):
            self._skip_block()
        elif self._peek().kind != "end" and not self._punct("}"):
            self._value(1)

    # -- values ---------------------------------------------------------------------------

    def _value(self, depth: int) -> Value:
        token = self._peek()
        if depth > MAX_DEPTH:
            raise TooDeep(token)
        if token.kind == "punct":
            if token.text in "([":
                return self._sequence(depth)
            if token.text == "{":
                return self._mapping(depth, "the braces")
            if token.text in "+-":
                return self._signed()
        if token.kind in ("int", "float", "string"):
            self._advance()
            return Scalar(token.value, token.start, token.end)
        if token.kind == "name":
            self._advance()
            if token.text in _CONSTANTS:
                return Scalar(_CONSTANTS[token.text], token.start, token.end)
            if self._punct("("):
                return self._call(token, depth)
            return Name(token.text, token.start, token.end)
        raise Abandon(f"expected a value, found {describe(token)}", token.start, token.end)

    def _signed(self) -> Scalar:
        sign = self._advance()
        number = self._peek()
        magnitude = number.value
        if not isinstance(magnitude, int | float):
            raise Abandon(
                f"expected a number after '{sign.text}', found {describe(number)}",
                number.start,
                number.end,
            )
        self._advance()
        return Scalar(magnitude if sign.text == "+" else -magnitude, sign.start, number.end)

    def _sequence(self, depth: int) -> Sequence:
        opening = self._advance()
        closer = _CLOSERS[opening.text]
        items: list[Value] = []
        while not self._punct(closer):
            if self._peek().kind == "end":
                self._expect_closer(opening, closer)
            items.append(self._value(depth + 1))
            if not self._punct(","):
                self._expect_closer(opening, closer)
                break
            self._advance()
        closing = self._advance()
        brackets: Literal["()", "[]"] = "()" if opening.text == "(" else "[]"
        return Sequence(brackets, tuple(items), opening.start, closing.end)

    def _call(self, name: Token, depth: int) -> Call:
        opening = self._advance()
        arguments: list[Argument] = []
        while not self._punct(")"):
            if self._peek().kind == "end":
                self._expect_closer(opening, ")")
            token, following = self._peek(), self._peek(1)
            is_named = (
                token.kind == "name" and following.kind == "punct" and following.text in ("=", ":")
            )
            if is_named:
                self._advance()
                self._advance()
                value = self._value(depth + 1)
                arguments.append(Argument(token.text, value, token.start, value.end))
            else:
                value = self._value(depth + 1)
                arguments.append(Argument(None, value, value.start, value.end))
            if not self._punct(","):
                self._expect_closer(opening, ")")
                break
            self._advance()
        closing = self._advance()
        return Call(name.text, tuple(arguments), name.start, name.end, closing.end)

    def _mapping(self, depth: int, what: str) -> Mapping:
        if depth > MAX_DEPTH:
            raise TooDeep(self._peek())
        opening = self._expect("{", f"'{{' to open {what}")
        entries: list[Entry] = []
        while True:
            token = self._peek()
            if self._punct("}"):
                closing = self._advance()
                return Mapping(tuple(entries), opening.start, closing.end)
            if token.kind == "end":
                self._unclosed(opening, what)
                return Mapping(tuple(entries), opening.start, token.start)
            anchor = self._position
            try:
                key = self._expect_name(f"a key such as 'epochs:' in {what}")
                if not (self._punct(":") or self._punct("=")):
                    following = self._peek()
                    raise Abandon(
                        f"expected ':' after '{key.text}', found {describe(following)}",
                        following.start,
                        following.end,
                    )
                self._advance()
                value = self._value(depth + 1)
                entries.append(Entry(key.text, key.start, key.end, value))
                if self._punct(","):
                    self._advance()
            except Abandon as error:
                self._diagnostics.report(
                    "DSL_SYNTAX", error.message, error.start, error.end, error.hint
                )
                self._recover(anchor)

    # -- token handling -------------------------------------------------------------------

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._position + ahead, len(self._tokens) - 1)]

    def _advance(self) -> Token:
        token = self._peek()
        if token.kind != "end":
            self._position += 1
        return token

    def _punct(self, text: str) -> bool:
        token = self._peek()
        return token.kind == "punct" and token.text == text

    def _word(self, text: str) -> bool:
        token = self._peek()
        return token.kind == "name" and token.text == text

    def _expect(self, text: str, what: str) -> Token:
        if not self._punct(text):
            token = self._peek()
            raise Abandon(f"expected {what}, found {describe(token)}", token.start, token.end)
        return self._advance()

    def _expect_name(self, what: str) -> Token:
        token = self._peek()
        if token.kind != "name":
            raise Abandon(f"expected {what}, found {describe(token)}", token.start, token.end)
        return self._advance()

    def _expect_closer(self, opening: Token, closer: str) -> None:
        token = self._peek()
        if self._punct(closer):
            return
        where = f"line {opening.line}, column {opening.column}"
        if token.kind == "end":
            self._end_reported = True  # the enclosing blocks are unclosed for the same reason
            raise Abandon(
                f"unclosed '{opening.text}': expected '{closer}' before the end of input",
                opening.start,
                opening.end,
                f"add '{closer}' to close the '{opening.text}' opened here",
            )
        if token.line > opening.line:
            raise Abandon(
                f"unclosed '{opening.text}': expected '{closer}' before {describe(token)} "
                f"on line {token.line}",
                opening.start,
                opening.end,
                f"close it with '{closer}'",
            )
        raise Abandon(
            f"expected ',' or '{closer}', found {describe(token)}",
            token.start,
            token.end,
            f"the '{opening.text}' at {where} is not closed",
        )

    def _skip_block(self) -> None:
        """Step over a balanced `{ ... }` without reading it (iteratively, at any depth)."""
        opening = self._advance()
        depth = 1
        while depth:
            token = self._peek()
            if token.kind == "end":
                self._unclosed(opening, "the block")
                return
            if token.kind == "punct" and token.text == "{":
                depth += 1
            elif token.kind == "punct" and token.text == "}":
                depth -= 1
            self._advance()

    def _recover(self, anchor: int) -> None:
        """After a syntax error, skip to where the next construct plausibly starts.

        That is the first token after the failed construct's start that opens a later line
        indented no deeper, or a `}` closing the enclosing block. Scanning restarts at the
        construct's start because a broken construct may have swallowed the next lines.
        """
        if self._diagnostics.dropped:  # enough problems found: stop reading
            self._position = len(self._tokens) - 1
            return
        first = self._tokens[anchor]
        self._position = anchor + 1
        braces = 0
        while True:
            token = self._peek()
            if token.kind == "end":
                return
            if token.first_on_line and token.line > first.line and token.column <= first.column:
                return
            if token.kind == "punct" and token.text == "{":
                braces += 1
            elif token.kind == "punct" and token.text == "}":
                if braces == 0:
                    return
                braces -= 1
            self._advance()

    # -- reporting ------------------------------------------------------------------------

    def _syntax(self, message: str, token: Token, hint: str | None = None) -> None:
        self._diagnostics.report("DSL_SYNTAX", message, token.start, token.end, hint)

    def _unsupported(self, what: str, token: Token) -> None:
        self._diagnostics.report(
            "DSL_UNSUPPORTED", f"outside the supported subset: {what}", token.start, token.end
        )

    def _unclosed(self, opening: Token, what: str) -> None:
        if self._end_reported:
            return
        self._end_reported = True
        self._diagnostics.report(
            "DSL_SYNTAX",
            f"unclosed '{{' of {what}: expected '}}' before the end of input",
            opening.start,
            opening.end,
            f"add '}}' to close the block opened at line {opening.line}, column {opening.column}",
        )

    def _duplicate(self, token: Token) -> None:
        self._syntax(f"section '{token.text}' is given more than once", token)

    def _excerpt(self, value: Value) -> str:
        return self._diagnostics.source.excerpt(value.start, value.end)
