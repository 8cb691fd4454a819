"""How a webhook request is signed, and how a receiver checks it.

The signature is HMAC-SHA256, keyed by the subscription's secret, over the request's timestamp
(Unix seconds, the `Stagecast-Timestamp` header), a full stop, and the raw body; it travels as
`Stagecast-Signature: sha256=<hex>`. Signing the timestamp lets a receiver refuse an old
request replayed at it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

EVENT_ID_HEADER = "Stagecast-Event-Id"
EVENT_TYPE_HEADER = "Stagecast-Event-Type"
TIMESTAMP_HEADER = "Stagecast-Timestamp"
SIGNATURE_HEADER = "Stagecast-Signature"
ATTEMPT_HEADER = "Stagecast-Delivery-Attempt"
SCHEME = "sha256="
# How old a request a receiver following this module accepts.
TOLERANCE_S = 300
_SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A subscription's secret: 256 random bits."""
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Stagecast-Signature` value of `body` sent at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    return SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, given: str, now: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when `given` signs `body` at `timestamp` (header text) within `tolerance_s` of `now`."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    sent = int(timestamp)
    if abs(now - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent, body), given)
