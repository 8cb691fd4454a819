"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

from projections.webhooks.signing import TOLERANCE_S, new_secret, signature, verify

BODY = b'{"type": "JobFinished", "status": "SUCCEEDED"}'
SECRET = "whsec_test-secret"
SENT = 1_780_000_000


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1780000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, SENT, BODY) == "sha256=" + expected


def test_a_receiver_verifies_what_was_signed() -> None:
    given = signature(SECRET, SENT, BODY)
    assert verify(SECRET, str(SENT), BODY, given, now=SENT + 3)


def test_a_changed_body_timestamp_or_secret_does_not_verify() -> None:
    given = signature(SECRET, SENT, BODY)
    assert not verify(SECRET, str(SENT), BODY + b" ", given, now=SENT)
    assert not verify(SECRET, str(SENT + 1), BODY, given, now=SENT)
    assert not verify("whsec_other", str(SENT), BODY, given, now=SENT)


def test_an_old_or_malformed_timestamp_does_not_verify() -> None:
    given = signature(SECRET, SENT, BODY)
    assert not verify(SECRET, str(SENT), BODY, given, now=SENT + TOLERANCE_S + 1)
    assert not verify(SECRET, str(SENT), BODY, given, now=SENT - TOLERANCE_S - 1)
    assert not verify(SECRET, "1.78e9", BODY, given, now=SENT)
    assert not verify(SECRET, "", BODY, given, now=SENT)


def test_secrets_are_long_and_never_repeat() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("whsec_") and len(s) >= 6 + 43 for s in secrets)


def test_the_readme_snippet_verifies_what_the_sender_signs() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    [snippet] = [
        block.split("\n", 1)[1]
        for block in readme.split("```")
        if block.startswith("python\n") and "def verified" in block
    ]
    scope: dict[str, Any] = {}
    exec(snippet, scope)
    sent = int(time.time())
    headers = {
        "Stagecast-Timestamp": str(sent),
        "Stagecast-Signature": signature(SECRET, sent, BODY),
    }
    assert scope["verified"](SECRET, headers, BODY)
    assert not scope["verified"](SECRET, headers, BODY + b"x")
    assert not scope["verified"]("whsec_other", headers, BODY)
