"""containerd's filter syntax, matched against snapshot Info.

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+
    quoted    := Go string syntax, quoted with " (or / and | after ~=)

All selectors of one filter must hold; a request's several filters match if any
does. Bad syntax is an InvalidArgumentError up front, never a silent non-match.
`~=` is RE2, as Go's regexp that containerd uses: linear in the text, so no pattern
can make a List backtrack for minutes, and the syntax RE2 refuses (backreferences,
lookaround) is refused here too. A NUL anywhere, a newline in a quoted literal and
`/` or `|` quotes outside `~=` are errors, as containerd's scanner makes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import re2

from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.model import Info

MAX_FILTERS_LENGTH = 64 * 1024
"""All filters of one request together. containerd's own clients send a few selectors; the bound
keeps one List from costing (selectors x snapshots) without end."""

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_OPERATOR = re.compile(r"==|!=|~=")
_BARE_VALUE = re.compile(r"[^\s,]+")
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[0-7]{3}|.)", re.S)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class Pattern(Protocol):
    """A compiled `~=` value (an RE2 regexp)."""

    def search(self, text: str) -> object | None: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's InvalidArgument, not a line on our stderr


@dataclass(frozen=True)
class Selector:
    fieldpath: tuple[str, ...]
    operator: str = ""  # "" tests presence
    value: str = ""
    pattern: Pattern | None = None

    def matches(self, info: Info) -> bool:
        value = field_of(info, self.fieldpath)
        if self.operator == "":
            return value is not None
        if self.operator == "==":
            return value == self.value
        if self.operator == "!=":
            return (value or "") != self.value
        assert self.pattern is not None
        return self.pattern.search(value or "") is not None


def field_of(info: Info, fieldpath: tuple[str, ...]) -> str | None:
    """containerd's snapshot filter adaptor: kind, name, parent, labels.<key>."""
    head, rest = fieldpath[0], fieldpath[1:]
    if head == "kind" and not rest:
        return info.kind.filter_value if info.kind else None
    if head == "name" and not rest:
        return info.name
    if head == "parent" and not rest:
        return info.parent
    if head == "labels" and rest:
        return info.labels.get(".".join(rest))
    return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"filters: parse error: [{self.text} >|{self.text[self.pos:]}]: {what}")

    def skip_space(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, pattern: re.Pattern[str]) -> str | None:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if not found:
            return None
        self.pos = found.end()
        return found.group()

    def quoted(self, quotes: str) -> str | None:
        quote = self.skip_space()
        if not quote or quote not in '"/|':
            return None
        if quote not in quotes:
            raise self.fail("invalid quote encountered")
        end = self.pos + 1
        while end < len(self.text) and self.text[end] not in (quote, "\n"):
            end += 2 if self.text[end] == "\\" else 1
        if end >= len(self.text) or self.text[end] == "\n":
            raise self.fail("quoted literal not terminated")
        body = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return _ESCAPE.sub(lambda m: self._unescape(m.group(), quote), body)

    def _unescape(self, escape: str, quote: str) -> str:
        code = escape[1]
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if code in (quote, "\\"):
            return code
        if code in "xuU" or code.isdigit():
            point = int(escape[2:], 16) if code in "xuU" else int(escape[1:], 8)
            if point <= (0xFF if code.isdigit() else 0x10FFFF):
                return chr(point)
        raise self.fail(f"invalid escape {escape!r}")

    def field(self) -> str:
        found = self.quoted('"')
        if found is None:
            found = self.take(_FIELD)
        if found is None:
            raise self.fail("expected field or quoted")
        return found

    def selector(self) -> Selector:
        path = [self.field()]
        while self.skip_space() == ".":
            self.pos += 1
            path.append(self.field())
        if self.skip_space() in ("", ","):
            return Selector(tuple(path))
        operator = self.take(_OPERATOR)
        if operator is None:
            raise self.fail('expected an operator ("=="|"!="|"~=")')
        value = self.quoted('"/|' if operator == "~=" else '"')
        if value is None:
            value = self.take(_BARE_VALUE)
        if value is None:
            raise self.fail("expected value or quoted")
        return Selector(tuple(path), operator, value, _compile(value) if operator == "~=" else None)

    def selectors(self) -> tuple[Selector, ...]:
        found = [self.selector()]
        while self.skip_space() == ",":
            self.pos += 1
            found.append(self.selector())
        if self.skip_space():
            raise self.fail(f"unexpected input: {self.text[self.pos]}")
        return tuple(found)


def _compile(value: str) -> Pattern:
    try:
        return re2.compile(value, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        raise InvalidArgumentError(f"filters: invalid regular expression {value!r}: {reason}") from None


def _parsed(filters: Sequence[str]) -> list[tuple[Selector, ...]]:
    if sum(len(text) for text in filters) > MAX_FILTERS_LENGTH:
        raise InvalidArgumentError(f"filters: longer than {MAX_FILTERS_LENGTH} characters in total")
    for text in filters:
        if "\x00" in text:
            raise InvalidArgumentError("filters: parse error: unexpected null")
    return [_Parser(text).selectors() for text in filters if text]


def parse_filters(filters: Sequence[str]) -> Callable[[Info], bool]:
    """One predicate for a request's filters (any of them), each a conjunction."""
    parsed = _parsed(filters)
    if not parsed:
        return lambda info: True
    return lambda info: any(all(s.matches(info) for s in conj) for conj in parsed)


def required_value(filters: Sequence[str], fieldpath: tuple[str, ...]) -> str | None:
    """The one value every filter requires `fieldpath` to equal (`==`), else None.

    Lets a router decide where a List goes from what it asks for (e.g. the demux: the ref
    label of the Walk containerd makes after a remote snapshot) without re-parsing the syntax.
    """
    wanted = _normalised(fieldpath)
    values: set[str] = set()
    for conjunction in _parsed(filters):
        found = {s.value for s in conjunction if s.operator == "==" and _normalised(s.fieldpath) == wanted}
        if len(found) != 1:
            return None
        values |= found
    return values.pop() if len(values) == 1 else None


def _normalised(fieldpath: tuple[str, ...]) -> tuple[str, str]:
    """`labels.a.b` and `labels."a.b"` name the same label (field_of joins the rest with dots)."""
    return fieldpath[0], ".".join(fieldpath[1:])
