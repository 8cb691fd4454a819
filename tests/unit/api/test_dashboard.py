"""The dashboard's page and files, served from a directory of this test's making."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from api.dashboard import ASSETS, Dashboard
from api.docs import DocsPage
from api.errors import EXCEPTION_HANDLERS
from api.operations import starlette_routes
from api.routes import operations
from api.static_page import CONTENT_SECURITY_POLICY, WEB_DIR


def _client(web_dir: Path) -> httpx.AsyncClient:
    """The dashboard's routes called in process (they need no database or broker)."""
    routes = starlette_routes(operations(Dashboard(web_dir), DocsPage(web_dir)))
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A web directory with every file the page loads."""
    (tmp_path / "vendor").mkdir()
    (tmp_path / "dashboard.html").write_text("<!doctype html><title>t</title>")
    for path, _ in ASSETS.values():
        (tmp_path / path).write_text("/* a file */")
    yield tmp_path


async def test_without_the_vendored_files_the_page_says_to_run_make_install(
    installed: Path,
) -> None:
    (installed / "vendor" / "uPlot.iife.min.js").unlink()
    async with _client(installed) as client:
        page = await client.get("/dashboard")
        script = await client.get("/dashboard/assets/dashboard.js")
    for response in (page, script):
        assert response.status_code == 503
        body = response.json()
        assert body["error_code"] == "DASHBOARD_NOT_INSTALLED"
        assert "make install" in body["error"]
        assert body["details"]["missing"] == ["vendor/uPlot.iife.min.js"]


async def test_the_page_forbids_inline_scripts_and_other_origins(installed: Path) -> None:
    async with _client(installed) as client:
        page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"


async def test_only_the_named_files_are_served(installed: Path) -> None:
    (installed / "package.json").write_text("{}")
    async with _client(installed) as client:
        served = {name: await client.get(f"/dashboard/assets/{name}") for name in ASSETS}
        refused = await client.get("/dashboard/assets/package.json")
    assert {name: r.status_code for name, r in served.items()} == dict.fromkeys(ASSETS, 200)
    assert served["uPlot.min.css"].headers["content-type"].startswith("text/css")
    assert refused.status_code == 404
    assert refused.json()["error_code"] == "NOT_FOUND"


def test_the_page_has_no_inline_script_or_style() -> None:
    """The page as shipped keeps to its policy: code and styles only in files."""
    html = (WEB_DIR / "dashboard.html").read_text()
    assert "<style" not in html
    assert re.findall(r"<[^>]*\sstyle\s*=", html) == []
    assert re.findall(r"<[^>]*\son[a-z]+\s*=", html) == []  # onclick= and the like
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(" src=" in tag for tag in scripts)
