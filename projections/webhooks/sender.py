"""The webhook sender: POSTs due deliveries, signed, and records each attempt and its outcome.

Deliveries are claimed in PostgreSQL (a claim moves `next_attempt_at` past the attempt's
time-out), so several senders share the work and one that dies leaves its claims to be tried
again: delivery is at least once, and a receiver de-duplicates by the event id header. At most
`webhook_subscription_concurrency` requests per subscription are in flight, and the claim
serves every subscription in turn, so a slow or dead receiver holds up only its own deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx

from projections.session import DATABASE_LOST, cancelled_beneath
from projections.webhooks.retries import RetryPolicy, settle
from projections.webhooks.signing import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from streams.settings import Settings

# Due deliveries are looked for this often besides the recorder's wake-ups (retries fall due,
# other senders' claims expire).
_POLL_S = 1.0
# How long the sender waits after a wake-up for more before it claims.
_CLAIM_LINGER_S = 0.005
# A claim outlives its attempt's time-out by this much before another sender may take it.
_CLAIM_MARGIN_S = 5.0
# How much of a refusing receiver's body the log keeps, and of any error text.
_ERROR_BODY_BYTES = 300
_ERROR_TEXT_CHARS = 500
_RECONNECT_DELAY_S = 1.0
_USER_AGENT = "stagecast-webhooks/1"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed delivery: the attempt it is about to make, and where to."""

    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    body: str
    attempt: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got: a status code, or None and why there was none."""

    response_code: int | None
    error: str | None
    duration_ms: int


def request_headers(delivery: Delivery, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of an attempt sent at `timestamp` (Unix seconds)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        EVENT_ID_HEADER: str(delivery.event_id),
        EVENT_TYPE_HEADER: delivery.event_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(delivery.secret, timestamp, body),
        ATTEMPT_HEADER: str(delivery.attempt),
    }


# Up to `room` due deliveries: for each active subscription its first due ones, as many as
# `per_subscription` minus those in flight here, read along webhook_deliveries_due; then
# subscriptions taken in turn (every first due delivery before any second).
_CLAIM = """
WITH busy AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS b(subscription_id, in_flight)
), picked AS (
    SELECT due.subscription_id, due.event_id
    FROM webhook_subscriptions s
    LEFT JOIN busy b ON b.subscription_id = s.id
    CROSS JOIN LATERAL (
        SELECT d.subscription_id, d.event_id, d.next_attempt_at,
               row_number() OVER (ORDER BY d.next_attempt_at, d.event_id) AS turn
        FROM webhook_deliveries d
        WHERE d.subscription_id = s.id AND d.status = 'PENDING' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at, d.event_id
        LIMIT greatest($3 - coalesce(b.in_flight, 0), 0)
    ) due
    WHERE s.active
    ORDER BY due.turn, due.next_attempt_at
    LIMIT $4
)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $5), updated_at = now()
FROM picked p, webhook_subscriptions s
WHERE d.subscription_id = p.subscription_id AND d.event_id = p.event_id
    AND s.id = d.subscription_id
    -- Checked again once the row is locked: another sender may have claimed it meanwhile.
    AND d.status = 'PENDING' AND d.next_attempt_at <= now()
RETURNING d.subscription_id, d.event_id, d.event_type, d.body, d.attempts + 1 AS attempt,
    s.url, s.secret
"""
# The attempt and its outcome in one statement (one round trip, one transaction). The outcome
# applies only over the attempt before it: a delivery deleted (FAILED) meanwhile keeps its status.
_RECORD = """
WITH attempt AS (
    INSERT INTO webhook_attempts
        (subscription_id, event_id, attempt, attempted_at, duration_ms, response_code, error)
    VALUES ($1, $2, $3, $8, $9, $5, $6)
    ON CONFLICT DO NOTHING
)
UPDATE webhook_deliveries
SET attempts = $3, status = $4, response_code = $5, error = $6,
    next_attempt_at = CASE WHEN $7::float8 IS NULL THEN next_attempt_at
                           ELSE now() + make_interval(secs => $7) END,
    delivered_at = CASE WHEN $4 = 'DELIVERED' THEN now() END,
    updated_at = now()
WHERE subscription_id = $1 AND event_id = $2 AND attempts = $3 - 1 AND status = 'PENDING'
"""


@dataclass
class SenderStats:
    """Attempts made since the sender started, by what they made of their delivery."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0


class WebhookSender:
    """Sends due deliveries until stopped; `wake` says new ones are there."""

    def __init__(self, settings: Settings, wake: asyncio.Event) -> None:
        self.settings = settings
        self.wake = wake
        self.policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_base_s,
            settings.webhook_backoff_max_s,
        )
        self.stats = SenderStats()
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Requests under way now."""
        return len(self._tasks)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; a lost database is waited out."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except DATABASE_LOST as exc:
                if stop.is_set():
                    break
                log.warning("webhook sender lost the database (%r); resuming", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RECONNECT_DELAY_S)
            except asyncio.CancelledError:
                if not cancelled_beneath():
                    raise
                log.warning(
                    "webhook sender: an operation was cancelled beneath it; resuming",
                    exc_info=True,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RECONNECT_DELAY_S)

    async def _session(self, stop: asyncio.Event) -> None:
        settings = self.settings
        pool = await asyncpg.create_pool(
            settings.require_database(),
            min_size=1,
            max_size=8,
            server_settings={"application_name": "stagecast-webhook-sender"},
        )
        # No proxies from the environment: a receiver is called at the address it gave.
        client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
        )
        try:
            while not stop.is_set():
                self.wake.clear()
                room = settings.webhook_concurrency - len(self._tasks)
                if room > 0:
                    for delivery in await self._claim(pool, room):
                        self._start(pool, client, delivery)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_either(stop, self.wake), _POLL_S)
                # Attempts ending close together free their places in one claim, not one each.
                await asyncio.sleep(_CLAIM_LINGER_S)
        finally:
            await self._finish_in_flight()
            await client.aclose()
            await pool.close()

    async def _claim(self, pool: asyncpg.Pool, room: int) -> list[Delivery]:
        busy = [(sid, n) for sid, n in self._in_flight.items() if n > 0]
        rows = await pool.fetch(
            _CLAIM,
            [sid for sid, _ in busy],
            [n for _, n in busy],
            self.settings.webhook_subscription_concurrency,
            room,
            self.settings.webhook_timeout_s + _CLAIM_MARGIN_S,
        )
        return [Delivery(**dict(row)) for row in rows]

    def _start(self, pool: asyncpg.Pool, client: httpx.AsyncClient, delivery: Delivery) -> None:
        self._in_flight[delivery.subscription_id] += 1
        task = asyncio.create_task(self._deliver(pool, client, delivery))
        self._tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._in_flight[delivery.subscription_id] -= 1
            if self._in_flight[delivery.subscription_id] <= 0:
                del self._in_flight[delivery.subscription_id]
            self.wake.set()  # room for another claim

        task.add_done_callback(finished)

    async def _finish_in_flight(self) -> None:
        """Let attempts under way end (they are bounded by the time-out), then stop the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.settings.webhook_timeout_s + 1)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _deliver(
        self, pool: asyncpg.Pool, client: httpx.AsyncClient, delivery: Delivery
    ) -> None:
        """One attempt, then its outcome; what cannot be recorded is tried again once the claim
        lapses."""
        attempted_at = time.time()
        answer = await self.attempt(client, delivery, int(attempted_at))
        settled = settle(self.policy, delivery.attempt, answer.response_code, random.random())
        try:
            await pool.execute(
                _RECORD,
                delivery.subscription_id,
                delivery.event_id,
                delivery.attempt,
                settled.status,
                answer.response_code,
                answer.error,
                settled.retry_in_s,
                datetime.fromtimestamp(attempted_at, UTC),
                answer.duration_ms,
            )
        except DATABASE_LOST as exc:
            log.warning(
                "webhook %s of event %s: outcome not recorded (%r); it is sent again later",
                delivery.subscription_id,
                delivery.event_id,
                exc,
            )
            return
        except Exception:  # a bug: the claim lapses and the delivery is tried again
            log.exception(
                "webhook %s of event %s: outcome not recorded; it is sent again later",
                delivery.subscription_id,
                delivery.event_id,
            )
            return
        if settled.status == "DELIVERED":
            self.stats.delivered += 1
        elif settled.status == "PENDING":
            self.stats.retried += 1
        else:
            self.stats.failed += 1
        if settled.status == "FAILED":
            log.warning(
                "webhook %s gave up on event %s after attempt %d: %s",
                delivery.subscription_id,
                delivery.event_id,
                delivery.attempt,
                answer.error,
            )

    async def attempt(self, client: httpx.AsyncClient, delivery: Delivery, now: int) -> Answer:
        """POST the delivery once; never raises for anything the receiver or network does."""
        body = delivery.body.encode()
        headers = request_headers(delivery, body, now)
        limit = self.settings.webhook_timeout_s
        started = time.monotonic()
        code: int | None = None
        error: str | None = None
        try:
            # httpx's time-out is per read; this one bounds a receiver trickling its answer.
            async with asyncio.timeout(limit):
                async with client.stream(
                    "POST", delivery.url, content=body, headers=headers
                ) as response:
                    code = response.status_code
                    if not 200 <= code < 300:
                        error = f"HTTP {code}"
                    # Read, so that the connection goes back to the pool (unless the body is
                    # longer than what the log keeps).
                    head = await _head(response)
                    if error is not None:
                        error += _excerpt(head)
        # Once the status has come, it is the answer, whatever happens to the body after it.
        except (TimeoutError, httpx.TimeoutException):
            if code is None:
                error = f"no answer within {limit:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if code is None:
                error = _text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        duration_ms = int((time.monotonic() - started) * 1000)
        return Answer(code, error, duration_ms)


async def _head(response: httpx.Response) -> bytes:
    """The first bytes of a response body, without reading the rest; what arrived of it when
    the body breaks off or cannot be decoded."""
    head = b""
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= _ERROR_BODY_BYTES:
                break
    return head[:_ERROR_BODY_BYTES]


def _excerpt(head: bytes) -> str:
    text = _text(head.decode("utf-8", "replace")).strip()
    return f": {text}" if text else ""


def _text(text: str) -> str:
    """Text the log can hold: no NUL (PostgreSQL text has none), at most a few hundred chars."""
    return text.replace("\x00", "\ufffd")[:_ERROR_TEXT_CHARS]


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Return when either event is set."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
