"""Who is calling, and whether they may: API keys, scopes and rate limits on every request.

In keys mode (STAGECAST_AUTH=keys) every route but the public ones needs `Authorization:
Bearer <key>`: 401 with `WWW-Authenticate: Bearer` without a valid key, 429 with Retry-After
over the key's rate, 403 without the route's scope. In open mode every caller may do
everything, as any tenant. The caller is left in the request's state for the routes, which
show a key only its tenant's jobs (api/tenancy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import DATABASE_UNAVAILABLE_ERRORS, error_response, on_database_unavailable
from api.keys import SCOPES, ApiKey, KeyRefusal, authenticate
from api.ratelimit import RateLimits, retry_after
from streams.settings import Settings

# Routes anyone may call: probes, the API's document, and the static pages and their files
# (they hold no data; the dashboard asks for a key and sends it with every request it makes,
# the docs page's "Authorize" does the same for what it tries out).
PUBLIC_ROUTES = frozenset(
    {
        "/health",
        "/ready",
        "/openapi.json",
        "/docs",
        "/docs/assets/{name}",
        "/dashboard",
        "/dashboard/assets/{name}",
    }
)
# Routes that see across tenants: only for operators.
ADMIN_ROUTES = frozenset({"/metrics", "/dashboard/failures"})
# These start or stop work; the other routes that read a tenant's jobs need `read`.
SUBMIT_ROUTES = frozenset({("POST", "/jobs"), ("POST", "/jobs/{job_id}/cancel")})
_READ_METHODS = frozenset({"GET", "HEAD"})
# The SSE event that ends a feed whose key no longer holds; its data is the error body.
FEED_DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: a key's tenant and scopes, or anyone in open mode (tenant None)."""

    tenant: str | None
    scopes: tuple[str, ...]
    key_id: str | None = None


ANYONE = Caller(tenant=None, scopes=SCOPES)


def required_scope(method: str, route: str | None) -> str | None:
    """The scope a request needs by its method and route template; None for a public route.

    A path no route knows needs `read`, so that a caller without a key learns nothing from a
    404; a method no rule names needs `admin`.
    """
    if route in PUBLIC_ROUTES:
        return None
    if route in ADMIN_ROUTES:
        return "admin"
    if (method, route) in SUBMIT_ROUTES:
        return "submit"
    if method in _READ_METHODS or route is None:
        return "read"
    return "admin"


def caller(request: Request) -> Caller:
    """The request's caller, as AuthMiddleware found it (anyone when it did not run)."""
    found = request.scope.get("state", {}).get("caller")
    return found if isinstance(found, Caller) else ANYONE


def _route(scope: Scope) -> BaseRoute | None:
    """The route that will answer, found as the router will find it."""
    partial: BaseRoute | None = None
    route: BaseRoute
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route  # the right path with another method: a 405 follows
    return partial


class AuthMiddleware:
    """Inside the Starlette app (it reads the pool and settings from the app's state)."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = scope["app"].state.settings
        scope.setdefault("state", {})["caller"] = ANYONE
        route = _route(scope)
        if route is not None:
            # Where the router would leave it: a refused request is counted under its route.
            scope["route"] = route
        needed = required_scope(scope["method"], getattr(route, "path", None))
        if settings.auth == "open" or needed is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            found = await authenticate(
                scope["app"].state.pool, request.headers.get("authorization")
            )
        except DATABASE_UNAVAILABLE_ERRORS as error:
            await (await on_database_unavailable(request, error))(scope, receive, send)
            return
        if isinstance(found, KeyRefusal):
            response = error_response(request, 401, found.code, found.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="stagecast"'
            await response(scope, receive, send)
            return
        refusal = self._refusal(request, found, needed)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope["state"]["caller"] = Caller(found.tenant, found.scopes, found.key_id)
        await self.app(scope, receive, send)

    def _refusal(self, request: Request, key: ApiKey, needed: str) -> Response | None:
        wait = self.limits.take(key.key_id, key.rate_per_minute, time.monotonic())
        if wait > 0:
            seconds = retry_after(wait)
            response = error_response(
                request,
                429,
                "RATE_LIMITED",
                f"API key {key.key_id} is over its rate of {key.rate_per_minute} requests a minute",
                {"retry_after_s": seconds, "rate_per_minute": key.rate_per_minute},
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        if needed not in key.scopes:
            return error_response(
                request,
                403,
                "SCOPE_MISSING",
                f"this request needs the `{needed}` scope; API key {key.key_id} has "
                f"{', '.join(key.scopes)}",
                {"needed": needed, "scopes": list(key.scopes)},
            )
        return None


async def while_key_holds(
    request: Request, events: AsyncGenerator[dict[str, Any], None]
) -> AsyncGenerator[dict[str, Any], None]:
    """An SSE feed's messages for as long as the key that opened it holds.

    A key is checked once per request, but a feed can stay open for hours: every
    `key_recheck_s` it is checked again, and a revoked (or deleted) key's feed ends with a
    `denied` message carrying the error body a new request would get. An EventSource that
    reconnects then gets the 401. While the database cannot answer the feed goes on: its own
    queries fail the same way, and the next check decides. Open mode has no key to check.
    """
    key_id = caller(request).key_id
    if key_id is None:
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
        return
    pool: asyncpg.Pool = request.app.state.pool
    every = float(request.app.state.settings.key_recheck_s)
    authorization = request.headers.get("authorization")
    loop = asyncio.get_running_loop()
    check_at = loop.time() + every
    pending: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            if loop.time() >= check_at:
                check_at = loop.time() + every
                refusal = await _refusal_now(pool, authorization)
                if refusal is not None:
                    body = {"error": refusal.message, "error_code": refusal.code, "details": {}}
                    yield {"event": FEED_DENIED, "data": json.dumps(body)}
                    return
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, check_at - loop.time()))
            if pending in done:
                finished, pending = pending, None
                try:
                    event = finished.result()
                except StopAsyncIteration:
                    return
                yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()


async def _refusal_now(pool: asyncpg.Pool, authorization: str | None) -> KeyRefusal | None:
    """Why the key would be refused now; None when it holds or the database cannot say (an
    outage, a statement timeout): the next check decides."""
    try:
        found = await authenticate(pool, authorization)
    except asyncpg.PostgresError:
        return None
    except DATABASE_UNAVAILABLE_ERRORS:
        return None
    return found if isinstance(found, KeyRefusal) else None
