"""GET /dashboard: a live page on the firehose and the REST routes, served without a build step.

The page is static: `api/web/dashboard.html`, its script and style, and uPlot's dist files,
which `make install` copies from the npm package pinned in `api/web/package-lock.json` into
`api/web/vendor/` (never fetched from a CDN). Everything it shows it reads from the API
itself: `/events` for what changes, `/jobs`, `/jobs/{id}`, `/jobs/{id}/metrics` and
`/dashboard/failures` for where things stand.
"""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ApiError
from api.static_page import StaticPage
from api.views import FailureBreakdown, json_answer
from streams.settings import STAGES

# What the page may load, by the name in its URL: the file under the web directory and its
# media type.
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}


class Dashboard(StaticPage):
    """The dashboard page and its files."""

    html = "dashboard.html"
    assets = ASSETS
    not_installed_code = "DASHBOARD_NOT_INSTALLED"
    not_installed = (
        "the dashboard's front-end files are not installed: run `make install` "
        "(it needs node and npm)"
    )
    no_such_asset = "no such dashboard file"


_FAILURES = """
SELECT stage, status, error_code, attempts, share,
       sum(attempts) OVER (PARTITION BY stage) AS ended
FROM dash_failures
WHERE stage = ANY($1::text[])
"""


async def failures(request: Request) -> JSONResponse:
    """GET /dashboard/failures[?stage=S]: failed and cancelled stage attempts by error code,
    from the dash_failures view, most frequent first, with each stage's ended attempts."""
    unknown = sorted(set(request.query_params) - {"stage"})
    if unknown:
        raise ApiError(400, "INVALID_QUERY", "unknown query parameter", {"unknown": unknown})
    stages = request.query_params.getlist("stage") or list(STAGES)
    bad = [stage[:100] for stage in stages if stage not in STAGES]
    if bad:
        raise ApiError(
            400, "INVALID_QUERY", "unknown `stage`", {"unknown": bad[:20], "known": list(STAGES)}
        )
    pool: asyncpg.Pool = request.app.state.pool
    rows = await pool.fetch(_FAILURES, stages)
    ended = {row["stage"]: row["ended"] for row in rows}
    shown = sorted(
        (row for row in rows if row["status"] != "SUCCEEDED"),
        key=lambda row: (-row["attempts"], row["stage"], row["status"], row["error_code"]),
    )
    return json_answer(
        FailureBreakdown,
        {
            "failures": [
                {
                    "stage": row["stage"],
                    "status": row["status"],
                    "error_code": row["error_code"],
                    "attempts": row["attempts"],
                    "share": float(row["share"]),
                }
                for row in shown
            ],
            "ended_attempts": {stage: int(count) for stage, count in sorted(ended.items())},
        },
    )
