"""The /docs page and its files, served from a directory of this test's making."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from api.dashboard import Dashboard
from api.docs import ASSETS, DocsPage
from api.errors import EXCEPTION_HANDLERS
from api.operations import starlette_routes
from api.routes import operations
from api.static_page import CONTENT_SECURITY_POLICY, WEB_DIR


def _client(web_dir: Path) -> httpx.AsyncClient:
    """The pages' routes called in process (they need no database or broker)."""
    routes = starlette_routes(operations(Dashboard(web_dir), DocsPage(web_dir)))
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A web directory with every file the docs page loads."""
    (tmp_path / "vendor").mkdir()
    (tmp_path / "docs.html").write_text("<!doctype html><title>t</title>")
    for path, _ in ASSETS.values():
        (tmp_path / path).write_text("/* a file */")
    return tmp_path


async def test_without_swagger_ui_the_page_says_to_run_make_install(installed: Path) -> None:
    (installed / "vendor" / "swagger-ui-bundle.js").unlink()
    async with _client(installed) as client:
        page = await client.get("/docs")
        script = await client.get("/docs/assets/docs.js")
    for response in (page, script):
        assert response.status_code == 503
        body = response.json()
        assert body["error_code"] == "DOCS_NOT_INSTALLED"
        assert "make install" in body["error"]
        assert body["details"]["missing"] == ["vendor/swagger-ui-bundle.js"]


async def test_the_page_is_served_under_the_strict_policy(installed: Path) -> None:
    async with _client(installed) as client:
        page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_only_the_named_files_are_served(installed: Path) -> None:
    (installed / "package.json").write_text("{}")
    async with _client(installed) as client:
        served = {name: await client.get(f"/docs/assets/{name}") for name in ASSETS}
        refused = await client.get("/docs/assets/package.json")
    assert {name: r.status_code for name, r in served.items()} == dict.fromkeys(ASSETS, 200)
    assert served["swagger-ui.css"].headers["content-type"].startswith("text/css")
    assert served["docs.js"].headers["content-type"].startswith("text/javascript")
    assert refused.status_code == 404
    assert refused.json()["error_code"] == "NOT_FOUND"


def test_the_page_as_shipped_has_no_inline_script_or_style() -> None:
    html = (WEB_DIR / "docs.html").read_text()
    assert "<style" not in html
    assert re.findall(r"<[^>]*\sstyle\s*=", html) == []
    assert re.findall(r"<[^>]*\son[a-z]+\s*=", html) == []
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(" src=" in tag for tag in scripts)
    # Everything the page loads comes from this origin, and every file it names is served.
    loaded = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html)
    assert sorted(path.rsplit("/", 1)[1] for path in loaded) == sorted(ASSETS)
