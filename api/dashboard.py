"""GET /dashboard: a live page on the firehose and the REST routes, served without a build step.

The page is static: `api/web/dashboard.html`, its script and style, and uPlot's dist files,
which `make install` copies from the npm package pinned in `api/web/package-lock.json` into
`api/web/vendor/` (never fetched from a CDN). Everything it shows it reads from the API
itself: `/events` for what changes, `/jobs`, `/jobs/{id}`, `/jobs/{id}/metrics` and
`/dashboard/failures` for where things stand.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from api.errors import ApiError
from api.views import FailureBreakdown, json_answer
from streams.settings import STAGES

WEB_DIR = Path(__file__).resolve().parent / "web"
# What the page may load, by the name in its URL: the file under the web directory and its
# media type. Nothing else there (package.json, node_modules) is served.
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}
# Scripts and styles only from this origin, in files: no inline code, no eval, no other host.
# uPlot and the page's script set element styles through the CSSOM, which style-src allows.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


class Dashboard:
    """The page and its files, read from `web_dir` (the installed package's by default)."""

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.web_dir = web_dir

    def _missing(self) -> list[str]:
        files = ["dashboard.html", *(path for path, _ in ASSETS.values())]
        return [path for path in files if not (self.web_dir / path).is_file()]

    def _require_files(self) -> None:
        missing = self._missing()
        if missing:
            raise ApiError(
                503,
                "DASHBOARD_NOT_INSTALLED",
                "the dashboard's front-end files are not installed: run `make install` "
                "(it needs node and npm)",
                {"missing": missing, "directory": str(self.web_dir)},
            )

    async def page(self, request: Request) -> Response:
        self._require_files()
        return FileResponse(
            self.web_dir / "dashboard.html",
            media_type="text/html; charset=utf-8",
            headers=_PAGE_HEADERS,
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise ApiError(404, "NOT_FOUND", "no such dashboard file", {"known": sorted(ASSETS)})
        self._require_files()
        path, media_type = ASSETS[name]
        return FileResponse(self.web_dir / path, media_type=media_type, headers=_ASSET_HEADERS)


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
