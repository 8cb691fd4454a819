"""The /docs page in headless Chromium on the real stack: Swagger UI renders the API's own
document under the page's Content-Security-Policy, with nothing loaded from elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Request, async_playwright

from tests.conftest import Pipeline
from tests.integration.test_dashboard import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration

WAIT_MS = 60_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium; a missing one fails the test (the page is not untested)."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing ({CHROMIUM}): see tests/integration/test_dashboard.py")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_docs_page_renders_every_operation_without_a_policy_violation(
    pipeline: Pipeline, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        document = (await http.get("/openapi.json")).json()
    operations = sum(len(item) for item in document["paths"].values())
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    requested: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console {message.type}: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"uncaught: {error}")

    def on_request(request: Request) -> None:
        requested.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("request", on_request)

    opened = await page.goto(f"{pipeline.api_url}/docs")
    assert opened is not None and opened.status == 200
    assert "script-src 'self'" in opened.headers["content-security-policy"]
    await page.wait_for_selector(".opblock", timeout=WAIT_MS)
    shown = await page.locator(".opblock").count()
    title = await page.text_content(".info .title")
    # Opening an operation shows its parameters and its documented answers.
    await page.click("#operations-jobs-submit_job .opblock-summary")
    await page.wait_for_selector("#operations-jobs-submit_job .responses-table", timeout=WAIT_MS)
    answers = await page.locator(
        "#operations-jobs-submit_job .responses-table tr.response"
    ).all_text_contents()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=Path(ARTIFACTS) / "docs.png", full_page=False)
    await page.close()

    assert shown == operations
    assert title is not None and title.startswith("stagecast")
    assert any(text.startswith("202") for text in answers)
    assert any(text.startswith("422") and "VALIDATION_FAILED" in text for text in answers)
    assert all(url.startswith(pipeline.api_url) or url.startswith("data:") for url in requested)
    assert problems == []


async def test_the_docs_page_and_its_files_are_served_and_nothing_else(
    pipeline: Pipeline,
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        page = await http.get("/docs")
        bundle = await http.get("/docs/assets/swagger-ui-bundle.js")
        refused = await http.get("/docs/assets/package.json")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert refused.status_code == 404
    assert refused.json()["error_code"] == "NOT_FOUND"
