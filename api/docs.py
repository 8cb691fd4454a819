"""GET /docs: the OpenAPI document rendered by Swagger UI, served without a CDN.

The page is `api/web/docs.html` and its script `docs.js`; Swagger UI's two dist files come
from the npm package pinned in `api/web/package-lock.json`, which `make install` copies into
`api/web/vendor/`. The page reads `/openapi.json` from the API itself.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from api.dashboard import CONTENT_SECURITY_POLICY, WEB_DIR
from api.errors import ApiError

# What the page may load, by the name in its URL: the file under the web directory and its
# media type.
ASSETS = {
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "swagger-ui-bundle.js": ("vendor/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("vendor/swagger-ui.css", "text/css; charset=utf-8"),
}
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


class DocsPage:
    """The page and its files, read from `web_dir` (the installed package's by default)."""

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.web_dir = web_dir

    def _require_files(self) -> None:
        files = ["docs.html", *(path for path, _ in ASSETS.values())]
        missing = [path for path in files if not (self.web_dir / path).is_file()]
        if missing:
            raise ApiError(
                503,
                "DOCS_NOT_INSTALLED",
                "the docs page's front-end files are not installed: run `make install` "
                "(it needs node and npm); the document itself is at /openapi.json",
                {"missing": missing, "directory": str(self.web_dir)},
            )

    async def page(self, request: Request) -> Response:
        self._require_files()
        return FileResponse(
            self.web_dir / "docs.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise ApiError(404, "NOT_FOUND", "no such docs file", {"known": sorted(ASSETS)})
        self._require_files()
        path, media_type = ASSETS[name]
        return FileResponse(self.web_dir / path, media_type=media_type, headers=_ASSET_HEADERS)
