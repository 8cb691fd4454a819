"""The Starlette app: routes, lifespan (pool, publisher, LISTEN), and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from api.artifacts import download_artifact, list_artifacts
from api.auth import AuthMiddleware
from api.cancel import cancel_job
from api.dashboard import Dashboard
from api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware, error_response
from api.feed import FeedNotifier, job_events
from api.firehose import firehose_events
from api.jobs import get_job, get_stages, jobs_collection
from api.metrics import ApiMetrics, HttpMetricsMiddleware, metrics_page
from api.outbox import OutboxRelay
from api.ratelimit import RateLimits
from api.runs import compare_runs, get_metrics
from api.watchdog import StageWatchdog
from api.webhooks import delete_webhook, list_deliveries, webhooks_collection
from schemas.codec import default_codec
from streams.producer import EventPublisher
from streams.settings import Settings

_CHECK_TIMEOUT_S = 2.0
# What a page on an allowed origin may send and read (besides the CORS-safelisted ones).
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "X-Request-ID",
    "X-Tenant",
)
CORS_RESPONSE_HEADERS = ("Location", "Retry-After", "WWW-Authenticate", "X-Request-ID")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """Ready only when the database answers and the broker answers with every topic."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.pool.fetchval("SELECT 1"), _CHECK_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as error:  # any database failure means "not ready", never a 500
        checks["database"] = f"unavailable: {type(error).__name__}"
    try:
        broker = await asyncio.wait_for(state.publisher.broker_state(), _CHECK_TIMEOUT_S)
    except Exception as error:  # any broker failure means "not ready", never a 500
        checks["broker"] = f"unavailable: {type(error).__name__}"
    else:
        # A restarted memory-only broker answers before its topics are created again.
        missing = broker.missing(state.settings.topics.all())
        checks["broker"] = f"missing topics: {', '.join(missing)}" if missing else "ok"
    if all(value == "ok" for value in checks.values()):
        sandboxes = await _sandboxes(state.pool)
        return JSONResponse({"status": "ready", "checks": checks, "execute": sandboxes})
    return error_response(request, 503, "NOT_READY", "not ready", checks)


async def _sandboxes(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """What the execute stage of each live worker can confine (workers report every 30 s)."""
    rows = await asyncio.wait_for(
        pool.fetch(
            "SELECT worker, protections, missing, toolchains FROM worker_sandboxes "
            "WHERE seen_at > now() - interval '90 seconds' ORDER BY worker"
        ),
        _CHECK_TIMEOUT_S,
    )
    return [
        {
            "worker": row["worker"],
            "confined": not json.loads(row["missing"]),
            "protections": json.loads(row["protections"]),
            "missing": json.loads(row["missing"]),
            "toolchains": json.loads(row["toolchains"]),
        }
        for row in rows
    ]


def create_app(settings: Settings) -> ASGIApp:
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.pool = await asyncpg.create_pool(
            settings.require_database(), min_size=1, max_size=10
        )
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

    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_page),
        Route("/jobs", jobs_collection, methods=["GET", "POST"]),
        Route("/jobs/{job_id}", get_job),
        Route("/jobs/{job_id}/stages", get_stages),
        Route("/jobs/{job_id}/metrics", get_metrics),
        Route("/jobs/{job_id}/artifacts", list_artifacts),
        Route("/jobs/{job_id}/artifacts/{name:path}", download_artifact),
        Route("/jobs/{job_id}/events", job_events),
        Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/events", firehose_events),
        Route("/runs/compare", compare_runs),
        Route("/webhooks", webhooks_collection, methods=["GET", "POST"]),
        Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
        Route("/webhooks/{webhook_id}/deliveries", list_deliveries),
        *Dashboard().routes(),
    ]
    app = Starlette(
        routes=routes,
        # CORS outside auth: a preflight carries no key, and a 401 needs the CORS headers for a
        # page to read it.
        middleware=[*_cors(settings), Middleware(AuthMiddleware, limits=RateLimits())],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
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
    )
    uvicorn.Server(config).run()
