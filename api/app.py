"""The Starlette app: routes, lifespan (pool, publisher, LISTEN), and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from api.auth import AuthMiddleware
from api.dashboard import Dashboard
from api.docs import DocsPage
from api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware
from api.feed import FeedNotifier
from api.feed_pages import FeedPages
from api.metrics import ApiMetrics, HttpMetricsMiddleware
from api.openapi import openapi_document
from api.operations import starlette_routes
from api.outbox import OutboxRelay
from api.ratelimit import RateLimits
from api.routes import operations as api_operations
from api.watchdog import StageWatchdog
from schemas.codec import default_codec
from streams.pool import open_pool
from streams.producer import EventPublisher
from streams.settings import Settings

# What a page on an allowed origin may send and read (besides the CORS-safelisted ones).
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "X-Request-ID",
    "X-Tenant",
)
CORS_RESPONSE_HEADERS = ("Location", "Retry-After", "WWW-Authenticate", "X-Request-ID")


def create_app(settings: Settings) -> ASGIApp:
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.pool = await open_pool(settings.require_database(), min_size=1, max_size=10)
        app.state.feed_pages = FeedPages(app.state.pool)
        app.state.publisher = EventPublisher(settings, default_codec())
        await app.state.publisher.start()
        app.state.notifier = FeedNotifier(settings.require_database())
        await app.state.notifier.start()
        relay = asyncio.create_task(
            OutboxRelay(app.state.pool, app.state.publisher, settings).run()
        )
        watchdog = asyncio.create_task(
            StageWatchdog(app.state.pool, app.state.publisher, settings).run()
        )
        try:
            yield
        finally:
            for task in (relay, watchdog):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.notifier.stop()
            await app.state.publisher.stop()
            await app.state.pool.close()

    operations = api_operations(Dashboard(), DocsPage())
    app = Starlette(
        routes=starlette_routes(operations),
        # CORS outside auth: a preflight carries no key, and a 401 needs the CORS headers for a
        # page to read it.
        middleware=[*_cors(settings), Middleware(AuthMiddleware, limits=RateLimits())],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.openapi = openapi_document(operations)
    # Outermost, so that even a 500 from Starlette's error middleware carries the request id
    # and is counted.
    return RequestIdMiddleware(HttpMetricsMiddleware(app, metrics))


def _cors(settings: Settings) -> list[Middleware]:
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_RESPONSE_HEADERS),
            # Keys travel in a header, never in cookies: no credentialed requests.
            allow_credentials=False,
            max_age=600,
        )
    ]


def run_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGINT/SIGTERM; refuse open mode off loopback."""
    problem = settings.exposure_problem()
    if problem is not None:
        raise SystemExit(f"stagecast: {problem}")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        # h11, not httptools even where it is installed: httptools answers a bare 400 to a header
        # with a control character, where the app answers 400 with its error code
        # (INVALID_TENANT). README "Throughput: CPU per job" has what httptools would save.
        http="h11",
    )
    uvicorn.Server(config).run()
