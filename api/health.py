"""GET /health and GET /ready: is the process up, and can it serve."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import error_response
from api.views import Health, Readiness, json_answer

_CHECK_TIMEOUT_S = 2.0


async def health(request: Request) -> JSONResponse:
    return json_answer(Health, {"status": "ok"})


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
        return json_answer(Readiness, {"status": "ready", "checks": checks, "execute": sandboxes})
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
