"""Webhook subscriptions of the caller's tenant: create, list, delete, and the delivery log.

The deliveries themselves are made by the webhooks process (projections/webhooks/).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import ApiError
from api.inputs import ascii_int
from api.jobs import _tenant, read_body
from projections.webhooks.recorder import EVENT_TYPES
from projections.webhooks.signing import new_secret

MAX_BODY_BYTES = 16_384
MAX_URL_CHARS = 2_000
DELIVERY_PAGE = 100
MAX_DELIVERY_PAGE = 500
DELIVERY_STATUSES = ("PENDING", "DELIVERED", "FAILED")

# What the events topic carries (projections/webhooks/recorder.py EVENT_TYPES), spelled out so
# that the request model's schema lists them.
EventType = Literal["JobAccepted", "JobRejected", "StageChanged", "JobFinished"]


def url_problem(url: str) -> str | None:
    """Why `url` cannot receive webhooks, or None: an absolute http(s) URL with a host, no
    credentials (the signature is the authentication, and listings show the URL)."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "the URL holds whitespace or control characters"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as error:
        return f"not a URL: {error}"
    if parsed.scheme not in ("http", "https"):
        return "only http and https URLs are accepted"
    if not parsed.host:
        return "the URL has no host"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return "the port must be from 1 to 65535"
    if parsed.userinfo:
        return "the URL must not carry credentials"
    return None


class WebhookRequest(BaseModel):
    """The body of POST /webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    # The types delivered; empty (the default) delivers every type.
    event_types: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES))

    @field_validator("url")
    @classmethod
    def _receivable(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class Webhook(BaseModel):
    """A subscription as listed: never its secret."""

    id: uuid.UUID
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(Webhook):
    """The answer to POST /webhooks: the only time the secret is shown."""

    secret: str


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class WebhookAttempt(BaseModel):
    attempt: int
    attempted_at: datetime
    duration_ms: int
    response_code: int | None
    error: str | None


class WebhookDelivery(BaseModel):
    """One event for one subscription: its state now, and every attempt made."""

    event_id: uuid.UUID
    event_type: str
    job_id: uuid.UUID | None
    occurred_at: datetime
    status: Literal["PENDING", "DELIVERED", "FAILED"]
    attempts: int
    response_code: int | None
    error: str | None
    # When the next attempt is due; None once the delivery has ended.
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    history: list[WebhookAttempt]


class WebhookDeliveryList(BaseModel):
    webhook_id: uuid.UUID
    deliveries: list[WebhookDelivery]


def caller_tenant(request: Request) -> str:
    """The tenant a request acts for, as for a submission: the API key's; in open mode
    X-Tenant, else the default."""
    return _tenant(request, request.app.state.settings)


def _webhook_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(
            400, "INVALID_WEBHOOK_ID", "webhook id must be a UUID", {"given": raw[:64]}
        ) from None


def _not_found(webhook_id: uuid.UUID) -> ApiError:
    return ApiError(404, "WEBHOOK_NOT_FOUND", "no such webhook", {"id": str(webhook_id)})


async def create_webhook(request: Request) -> Response:
    tenant = caller_tenant(request)
    body = await read_body(request, MAX_BODY_BYTES)
    try:
        wanted = WebhookRequest.model_validate(body)
    except ValidationError as error:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
            for e in error.errors()
        ]
        if any(e["loc"][:1] == ("url",) for e in error.errors()):
            raise ApiError(
                400, "INVALID_WEBHOOK_URL", "the webhook URL is refused", details
            ) from None
        raise ApiError(
            400, "INVALID_WEBHOOK", "the webhook request is not valid", details
        ) from None
    row = await request.app.state.pool.fetchrow(
        "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, secret) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id, url, event_types, active, created_at, secret",
        uuid.uuid4(),
        tenant,
        wanted.url,
        sorted(set(wanted.event_types)),
        new_secret(),
    )
    created = WebhookCreated.model_validate(dict(row))
    headers = {"Location": f"/webhooks/{created.id}"}
    return JSONResponse(created.model_dump(mode="json"), status_code=201, headers=headers)


async def list_webhooks(request: Request) -> Response:
    tenant = caller_tenant(request)
    rows = await request.app.state.pool.fetch(
        "SELECT id, url, event_types, active, created_at FROM webhook_subscriptions "
        "WHERE tenant = $1 AND active ORDER BY created_at, id",
        tenant,
    )
    listed = WebhookList(webhooks=[Webhook.model_validate(dict(row)) for row in rows])
    return JSONResponse(listed.model_dump(mode="json"))


async def delete_webhook(request: Request) -> Response:
    """Stop a subscription: nothing more is recorded or sent for it, and what was still pending
    ends FAILED in its log."""
    tenant = caller_tenant(request)
    webhook_id = _webhook_id(request.path_params["webhook_id"])
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            "UPDATE webhook_subscriptions SET active = false, deleted_at = now() "
            "WHERE id = $1 AND tenant = $2 AND active RETURNING id",
            webhook_id,
            tenant,
        )
        if deleted is None:
            raise _not_found(webhook_id)
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'FAILED', error = 'the webhook was deleted', "
            "updated_at = now() WHERE subscription_id = $1 AND status = 'PENDING'",
            webhook_id,
        )
    return Response(status_code=204)


def _delivery_query(request: Request) -> tuple[str | None, int]:
    """The `status` and `limit` asked; INVALID_QUERY for anything else."""
    params = request.query_params
    unknown = sorted(set(params) - {"status", "limit"})
    if unknown:
        raise ApiError(400, "INVALID_QUERY", "unknown query parameter", {"unknown": unknown})
    status = params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ApiError(
            400,
            "INVALID_QUERY",
            f"status must be one of {', '.join(DELIVERY_STATUSES)}",
            {"given": status[:64]},
        )
    limit = ascii_int(params.get("limit", str(DELIVERY_PAGE)))
    if limit is None or not 1 <= limit <= MAX_DELIVERY_PAGE:
        raise ApiError(
            400, "INVALID_QUERY", f"limit must be an integer from 1 to {MAX_DELIVERY_PAGE}"
        )
    return status, limit


_DELIVERIES = """
SELECT d.event_id, d.event_type, d.job_id, d.occurred_at, d.status, d.attempts,
       d.response_code, d.error,
       CASE WHEN d.status = 'PENDING' THEN d.next_attempt_at END AS next_attempt_at,
       d.delivered_at, d.created_at,
       coalesce((SELECT json_agg(json_build_object(
                     'attempt', a.attempt, 'attempted_at', a.attempted_at,
                     'duration_ms', a.duration_ms, 'response_code', a.response_code,
                     'error', a.error) ORDER BY a.attempt)
                 FROM webhook_attempts a
                 WHERE a.subscription_id = d.subscription_id AND a.event_id = d.event_id),
                '[]')::text AS history
FROM webhook_deliveries d
WHERE d.subscription_id = $1 AND ($2::text IS NULL OR d.status = $2)
ORDER BY d.created_at DESC, d.occurred_at DESC, d.event_id
LIMIT $3
"""


async def list_deliveries(request: Request) -> Response:
    """The newest deliveries of one of the tenant's webhooks, newest first."""
    tenant = caller_tenant(request)
    webhook_id = _webhook_id(request.path_params["webhook_id"])
    status, limit = _delivery_query(request)
    pool = request.app.state.pool
    known = await pool.fetchval(
        "SELECT true FROM webhook_subscriptions WHERE id = $1 AND tenant = $2 AND active",
        webhook_id,
        tenant,
    )
    if not known:
        raise _not_found(webhook_id)
    rows = await pool.fetch(_DELIVERIES, webhook_id, status, limit)
    listed = WebhookDeliveryList(
        webhook_id=webhook_id,
        deliveries=[
            WebhookDelivery.model_validate({**dict(row), "history": json.loads(row["history"])})
            for row in rows
        ],
    )
    return JSONResponse(listed.model_dump(mode="json"))
