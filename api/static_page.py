"""A page and the files it may load, served from `api/web/` without a CDN or a build step.

The dashboard and the docs page are both such a page: an HTML file, its own script and style,
and dist files that `make install` copies from the npm packages pinned in
`api/web/package-lock.json` into `api/web/vendor/`. Only the files a page names are served
(never package.json or node_modules), and while any of them is not installed every route of the
page answers 503 with the page's own error code and what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from api.errors import ApiError

WEB_DIR = Path(__file__).resolve().parent / "web"
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


class StaticPage:
    """A page read from `web_dir` (the installed package's by default); a subclass names its
    files and what it answers when they are not installed."""

    # The page's HTML file under the web directory.
    html: ClassVar[str]
    # What the page may load, by the name in its URL: the file under the web directory and
    # its media type.
    assets: ClassVar[Mapping[str, tuple[str, str]]]
    # The 503's error code and message while files are missing.
    not_installed_code: ClassVar[str]
    not_installed: ClassVar[str]
    # The 404's message for a name not in `assets`.
    no_such_asset: ClassVar[str]

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.web_dir = web_dir

    def _require_files(self) -> None:
        files = [self.html, *(path for path, _ in self.assets.values())]
        missing = [path for path in files if not (self.web_dir / path).is_file()]
        if missing:
            raise ApiError(
                503,
                self.not_installed_code,
                self.not_installed,
                {"missing": missing, "directory": str(self.web_dir)},
            )

    async def page(self, request: Request) -> Response:
        self._require_files()
        return FileResponse(
            self.web_dir / self.html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.assets:
            raise ApiError(404, "NOT_FOUND", self.no_such_asset, {"known": sorted(self.assets)})
        self._require_files()
        path, media_type = self.assets[name]
        return FileResponse(self.web_dir / path, media_type=media_type, headers=_ASSET_HEADERS)
