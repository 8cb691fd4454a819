"""An event on the events topic as a webhook body, and what the recorder skips."""

from __future__ import annotations

import json
import typing
import uuid

from api.webhooks import EventType, url_problem
from projections.webhooks.recorder import EVENT_TYPES, webhook_event
from projections.webhooks.sender import Delivery, request_headers
from projections.webhooks.signing import verify
from schemas.codec import default_codec
from tests.unit.schemas.sample_events import sample


def test_the_body_is_the_event_as_the_feed_shows_it() -> None:
    record = sample("JobFinished")
    event = webhook_event(default_codec(), default_codec().encode("JobFinished", record))
    assert event is not None
    assert (event.event_type, event.tenant) == ("JobFinished", "acme")
    assert event.event_id == uuid.UUID(record["event_id"])
    assert event.job_id == uuid.UUID(record["job_id"])
    body = json.loads(event.body)
    assert body["event_id"] == record["event_id"]
    assert body["status"] == record["status"]
    # As on the feed: milliseconds since the epoch.
    assert body["occurred_at"] == record["occurred_at"]


def test_undecodable_messages_are_skipped_not_raised() -> None:
    codec = default_codec()
    assert webhook_event(codec, b"not avro") is None
    assert webhook_event(codec, None) is None
    whole = codec.encode("JobFinished", sample("JobFinished"))
    assert webhook_event(codec, whole[:-3]) is None


def test_subscriptions_may_ask_for_exactly_the_events_topic_types() -> None:
    assert set(typing.get_args(EventType)) == set(EVENT_TYPES)


def test_headers_carry_event_id_type_timestamp_and_a_verifiable_signature() -> None:
    delivery = Delivery(
        subscription_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        event_type="StageChanged",
        body='{"a": 1}',
        attempt=3,
        url="http://127.0.0.1:1/hook",
        secret="whsec_x",
    )
    headers = request_headers(delivery, b'{"a": 1}', 1_780_000_000)
    assert headers["Stagecast-Event-Id"] == str(delivery.event_id)
    assert headers["Stagecast-Event-Type"] == "StageChanged"
    assert headers["Stagecast-Delivery-Attempt"] == "3"
    assert headers["Content-Type"] == "application/json"
    timestamp, given = headers["Stagecast-Timestamp"], headers["Stagecast-Signature"]
    assert verify("whsec_x", timestamp, b'{"a": 1}', given, now=1_780_000_010)


def test_receivable_urls() -> None:
    assert url_problem("https://hooks.example.com/stagecast?x=1") is None
    assert url_problem("http://127.0.0.1:8080/hook") is None
    assert url_problem("http://[::1]:9/") is None


def test_refused_urls_say_why() -> None:
    assert url_problem("ftp://example.com/") == "only http and https URLs are accepted"
    assert url_problem("javascript:alert(1)") == "only http and https URLs are accepted"
    assert url_problem("example.com/hook") == "only http and https URLs are accepted"
    assert url_problem("http:///path") == "the URL has no host"
    assert url_problem("https://user:pw@example.com/") == "the URL must not carry credentials"
    for port in ("0", "-1", "65536"):
        assert url_problem(f"http://example.com:{port}/") == "the port must be from 1 to 65535"
    assert url_problem("https://exa mple.com/") is not None
    assert url_problem("https://example.com/\n") is not None
    assert url_problem("http://exa\x00mple.com/") is not None
