"""API key format, Bearer parsing and scopes, without a database."""

from __future__ import annotations

import pytest

from api.keys import bearer_token, key_digest, key_id_of, new_key, parse_scopes


def test_a_new_key_names_its_id_and_only_its_digest_is_kept() -> None:
    key_id, key = new_key()
    other_id, other = new_key()
    assert key_id_of(key) == key_id
    assert key.startswith(f"sck_{key_id}_")
    assert len(key_digest(key)) == 32
    assert (key_id, key) != (other_id, other)
    assert key_digest(key) != key_digest(other)


@pytest.mark.parametrize(
    "given",
    [
        "",
        "sck_",
        "abc",
        "sk_0123456789ab_" + "a" * 43,  # wrong prefix
        "sck_0123456789AB_" + "a" * 43,  # the id is lower-case hex
        "sck_0123456789a_" + "a" * 43,  # id too short
        "sck_0123456789ab_" + "a" * 42,  # secret too short
        "sck_0123456789ab_" + "a" * 44,  # secret too long
        "sck_0123456789ab_" + "a" * 42 + "=",  # not base64url
        "sck_0123456789ab_" + "a" * 43 + "\n",
        "sck_0123456789ab_" + "\u0430" * 43,  # Cyrillic a: not ASCII
    ],
)
def test_anything_but_a_well_formed_key_has_no_id(given: str) -> None:
    assert key_id_of(given) is None


def test_a_well_formed_key_gives_its_id() -> None:
    assert key_id_of("sck_0123456789ab_" + "a-_B" * 10 + "xyz") == "0123456789ab"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("abc", None),
        ("", None),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_scopes_come_back_in_canonical_order_once_each() -> None:
    assert parse_scopes("admin, read,read") == ("read", "admin")
    assert parse_scopes("submit,read,admin") == ("submit", "read", "admin")


@pytest.mark.parametrize(("given", "named"), [("read,write", "write"), ("", "at least one")])
def test_unknown_or_no_scopes_are_refused_by_name(given: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_scopes(given)
