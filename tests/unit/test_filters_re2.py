"""containerd's filter syntax with RE2 `~=`: linear matching, Go's accepted syntax, containerd's scanner rules."""

from __future__ import annotations

import pytest

from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.filters import MAX_FILTERS_LENGTH, parse_filters, required_value
from snapmux.domain.model import Info, Kind


def matches(filters, name="n", labels=None, parent="", kind=Kind.ACTIVE) -> bool:
    return parse_filters(filters)(Info(name, kind, parent, labels or {}))


def test_catastrophic_backtracking_patterns_are_linear():
    """Python's re needs 2**60 steps here; the test would never end without RE2."""
    hostile = "a" * 60 + "!"
    assert not matches(["name~=(a+)+$"], hostile)
    assert not matches(["name~=^(a|a)*$"], hostile)
    assert not matches(["name~=(a*)*b"], "a" * 100_000)
    assert matches(["name~=(a+)+!$"], hostile)


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?<=a)b", "(?<!a)b", "(?=a)", "(?!a)", "a{1001}", "a**", "(", "[z-a]",
                                     r"\Z", r"(?P<n>a)(?P=n)"])
def test_what_go_regexp_refuses_is_invalid_argument(pattern):
    with pytest.raises(InvalidArgumentError, match="invalid regular expression"):
        parse_filters([f"name~={pattern}"])


@pytest.mark.parametrize("pattern, name", [(r"^\pL+$", "été"), ("(?i)ABC", "abc"), (r"\Aa.c\z", "abc"),
                                           ("^[[:digit:]]+$", "123"), ("(?s)a.b", "a\nb"), ("/a{2,3}/", "xaax")])
def test_go_regexp_syntax_matches(pattern, name):
    assert matches([f"name~={pattern}"], name)


def test_dot_does_not_match_newline_by_default_as_in_go():
    assert not matches(["name~=a.b"], "a\nb")


@pytest.mark.parametrize("text", ["name~=/^a,b$/", "name~=|^a/b$|", 'name~="^a,b$"'])
def test_regexp_values_may_be_quoted_with_slash_pipe_or_double_quote(text):
    name = "a/b" if "|" in text else "a,b"
    assert matches([text], name)


@pytest.mark.parametrize("bad", ["name==/x/", "name!=|x|", "/name/==x", "|f|", 'name~="a\nb"', "name==a\x00",
                                 "\x00", r'name=="\777"', r'name~=/a\d/'])
def test_what_containerds_scanner_refuses_is_invalid_argument(bad):
    with pytest.raises(InvalidArgumentError):
        parse_filters([bad])


def test_fields_may_start_with_a_digit_as_containerds_scanner_reads_them():
    assert matches(["labels.1a==x"], labels={"1a": "x"})


def test_a_bare_regexp_value_keeps_its_backslashes():
    assert matches([r"name~=^a\.b$"], "a.b")
    assert not matches([r"name~=^a\.b$"], "axb")


def test_filters_are_bounded_in_total():
    with pytest.raises(InvalidArgumentError, match="longer than"):
        parse_filters(["name==x"] * (MAX_FILTERS_LENGTH // 7 + 1))
    with pytest.raises(InvalidArgumentError):
        required_value(["name==" + "x" * MAX_FILTERS_LENGTH], ("name",))
    assert matches(["name==x"] * 100, "x")
