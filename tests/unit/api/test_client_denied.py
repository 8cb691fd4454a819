"""What the SDK makes of the `denied` message that ends a feed whose key was revoked."""

from __future__ import annotations

import json

from api.client import ApiRequestError, _denied_body


def test_the_apis_denied_body_is_kept_as_sent() -> None:
    sent = {"error": "API key k1 has been revoked", "error_code": "API_KEY_REVOKED", "details": {}}
    refused = ApiRequestError(401, _denied_body(json.dumps(sent)))
    assert (refused.code, refused.message) == ("API_KEY_REVOKED", "API key k1 has been revoked")


def test_a_denied_message_that_is_not_ours_still_gives_a_code() -> None:
    for data in ("<html>forbidden</html>", "[1, 2]", ""):
        body = _denied_body(data)
        assert body["error_code"] == "FEED_DENIED"
        assert body["error"] == data[:200]
