"""GET /docs: the OpenAPI document rendered by Swagger UI, served without a CDN.

The page is `api/web/docs.html` and its script `docs.js`; Swagger UI's two dist files come
from the npm package pinned in `api/web/package-lock.json`, which `make install` copies into
`api/web/vendor/`. The page reads `/openapi.json` from the API itself.
"""

from __future__ import annotations

from api.static_page import StaticPage

# What the page may load, by the name in its URL: the file under the web directory and its
# media type.
ASSETS = {
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "swagger-ui-bundle.js": ("vendor/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("vendor/swagger-ui.css", "text/css; charset=utf-8"),
}


class DocsPage(StaticPage):
    """The docs page and its files."""

    html = "docs.html"
    assets = ASSETS
    not_installed_code = "DOCS_NOT_INSTALLED"
    not_installed = (
        "the docs page's front-end files are not installed: run `make install` "
        "(it needs node and npm); the document itself is at /openapi.json"
    )
    no_such_asset = "no such docs file"
