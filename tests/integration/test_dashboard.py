"""The /dashboard page in headless Chromium on the real stack, and its failures route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Error,
    Frame,
    Request,
    async_playwright,
)

from api.client import StagecastClient
from api.keys import create_key
from streams.launcher import Launcher
from tests.conftest import EXAMPLES, WARMUP_DSL, Pipeline, api_alone
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# What this machine's Chromium needs headless as root, without reaching for Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the test run leaves what a person may want to look at (gitignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
IRIS = (EXAMPLES / "iris_mlp.neural").read_text()
UNKNOWN_LAYER = (EXAMPLES / "invalid" / "unknown_layer.neural").read_text()
EPOCHS = 3
WAIT_MS = 120_000


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; a missing one fails the test (the dashboard is not untested)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): `make install` installs Debian's chromium when "
            "run as root; otherwise run `sudo apt-get install chromium`"
        )
    return CHROMIUM


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_a_submitted_job_appears_and_ends_on_the_dashboard_without_a_reload(
    pipeline: Pipeline, browser: Browser, artifacts: Path
) -> None:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console {message.type}: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"uncaught: {error}")

    navigations: list[str] = []

    def on_navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("framenavigated", on_navigated)

    opened = await page.goto(f"{pipeline.api_url}/dashboard")
    assert opened is not None and opened.status == 200
    assert "script-src 'self'" in opened.headers["content-security-policy"]
    await page.wait_for_selector('#feed-state[data-state="live"]', timeout=WAIT_MS)

    async with StagecastClient(pipeline.api_url, tenant="dashboard") as client:
        trained = (
            await client.submit(IRIS, stages=["train"], train={"epochs": EPOCHS, "seed": 2})
        )["job_id"]
        quick = (await client.submit(WARMUP_DSL, stages=["parse", "compile"]))["job_id"]
        broken = (await client.submit(UNKNOWN_LAYER))["job_id"]

    for job_id in (trained, quick, broken):
        await page.wait_for_selector(f'tr[data-job-id="{job_id}"]', timeout=WAIT_MS)
    # Picked while it runs: its curves grow from MetricRecorded events as they come.
    await page.click(f'tr[data-job-id="{trained}"]')
    await page.wait_for_selector(
        f'tr[data-job-id="{quick}"][data-status="SUCCEEDED"]', timeout=WAIT_MS
    )
    await page.wait_for_selector(
        f'tr[data-job-id="{broken}"][data-status="FAILED"]', timeout=WAIT_MS
    )
    await page.wait_for_selector(
        f'tr[data-job-id="{trained}"][data-status="SUCCEEDED"]', timeout=WAIT_MS
    )
    await page.wait_for_selector(
        '#timeline .attempt[data-stage="train"][data-status="SUCCEEDED"]', timeout=WAIT_MS
    )
    for family in ("loss", "accuracy"):
        await page.wait_for_selector(
            f'#curves .chart[data-metric="{family}"][data-points="{EPOCHS}"] canvas',
            timeout=WAIT_MS,
        )
    await page.wait_for_selector(
        '#failures tr[data-stage="parse"][data-error-code="DSL_UNKNOWN_LAYER"]', timeout=WAIT_MS
    )
    status = await page.text_content(f'tr[data-job-id="{trained}"] td.status')
    timeline = await page.locator("#timeline .attempt").all_text_contents()

    await page.screenshot(path=artifacts / "dashboard.png", full_page=True)
    await page.close()

    assert status == "SUCCEEDED"
    assert [line.split(" ")[0] for line in timeline] == ["parse", "compile", "codegen", "train"]
    assert navigations == [f"{pipeline.api_url}/dashboard"], "the page was reloaded"
    assert problems == []


@pytest.fixture(scope="module")
def keys_api(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API in keys mode beside the pipeline, on its database and topics."""
    settings = pipeline.settings.model_copy(update={"auth": "keys"})
    with api_alone(settings, tmp_path_factory.mktemp("dashboard-keys")) as launcher:
        yield launcher


async def _key(pipeline: Pipeline, tenant: str, scopes: tuple[str, ...]) -> str:
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        _, key = await create_key(conn, tenant, scopes, 600)
    finally:
        await conn.close()
    return key


async def test_with_keys_the_page_asks_for_one_and_shows_only_its_tenants_jobs(
    pipeline: Pipeline, keys_api: Launcher, browser: Browser, artifacts: Path
) -> None:
    ours, theirs = f"dash-{uuid.uuid4().hex[:8]}", f"dash-{uuid.uuid4().hex[:8]}"
    reader = await _key(pipeline, ours, ("read",))
    submitter = await _key(pipeline, ours, ("submit",))
    outsider = await _key(pipeline, theirs, ("submit", "read"))
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    requests: list[Request] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser logs each 401 it is answered before the key is typed, and each 403 of
        # /dashboard/failures, which this key may not read.
        expected = ("status of 401", "status of 403")
        if message.type == "error" and not any(text in message.text for text in expected):
            problems.append(f"console {message.type}: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"uncaught: {error}")

    def on_request(request: Request) -> None:
        requests.append(request)

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("request", on_request)

    opened = await page.goto(f"{keys_api.api_url}/dashboard")
    assert opened is not None and opened.status == 200
    assert "connect-src 'self'" in opened.headers["content-security-policy"]
    await page.wait_for_selector("#key-form:not([hidden]) #api-key", timeout=WAIT_MS)
    assert await page.text_content("#feed-state") == "needs an API key"
    await page.fill("#api-key", reader)
    await page.click("#key-form button[type=submit]")
    await page.wait_for_selector('#feed-state[data-state="live"]', timeout=WAIT_MS)
    await page.wait_for_selector("#key-form", state="hidden", timeout=WAIT_MS)

    async with (
        StagecastClient(keys_api.api_url, api_key=submitter) as mine,
        StagecastClient(keys_api.api_url, api_key=outsider) as other,
    ):
        foreign = (await other.submit(WARMUP_DSL, stages=["parse", "compile"]))["job_id"]
        _ = [event async for event in other.events(foreign)]
        own = (await mine.submit(WARMUP_DSL, stages=["parse", "compile"]))["job_id"]
    await page.wait_for_selector(
        f'tr[data-job-id="{own}"][data-status="SUCCEEDED"]', timeout=WAIT_MS
    )
    await page.wait_for_selector("#failures-empty:has-text('admin scope')", timeout=WAIT_MS)
    tenants = await page.locator("#jobs tbody td.tenant").all_text_contents()
    shown = await page.locator("#jobs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.jobId)"
    )
    stored = await page.evaluate("sessionStorage.getItem('stagecast.apiKey')")

    # Typed once: a reload in the same tab goes live with the stored key.
    await page.reload()
    await page.wait_for_selector('#feed-state[data-state="live"]', timeout=WAIT_MS)
    assert await page.is_hidden("#key-form")
    await page.screenshot(path=artifacts / "dashboard-keys.png", full_page=True)
    await page.close()

    assert set(tenants) == {ours}
    assert foreign not in shown
    assert stored == reader
    api_calls = [r for r in requests if "/dashboard" not in r.url or "/failures" in r.url]
    assert all(reader not in request.url for request in requests)
    keyed = [r for r in api_calls if r.headers.get("authorization") == f"Bearer {reader}"]
    assert {r.url.split("?")[0].removeprefix(keys_api.api_url) for r in keyed} >= {
        "/events",
        "/jobs",
        f"/jobs/{own}",
        "/dashboard/failures",
    }
    assert problems == []


async def test_failures_count_failed_attempts_by_stage_and_error_code(pipeline: Pipeline) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        broken = (await client.submit(UNKNOWN_LAYER))["job_id"]
        _ = [event async for event in client.events(broken)]
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        everything = (await http.get("/dashboard/failures")).json()
        parse_only = (await http.get("/dashboard/failures", params={"stage": "parse"})).json()
        nothing = (await http.get("/dashboard/failures", params={"stage": "train"})).json()
    (row,) = [f for f in everything["failures"] if f["error_code"] == "DSL_UNKNOWN_LAYER"]
    assert row["stage"] == "parse" and row["status"] == "FAILED"
    assert 1 <= row["attempts"] <= everything["ended_attempts"]["parse"]
    # dash_failures rounds a share to 4 decimals.
    assert row["share"] == pytest.approx(
        row["attempts"] / everything["ended_attempts"]["parse"], abs=5e-5
    )
    assert {f["stage"] for f in parse_only["failures"]} == {"parse"}
    assert row in parse_only["failures"]
    assert "parse" not in nothing["ended_attempts"]
    assert all(f["status"] != "SUCCEEDED" for f in everything["failures"])


@pytest.mark.parametrize("query", ["stage=deploy", "stage=", "stages=parse", f"x={uuid.uuid4()}"])
async def test_failures_refuse_unknown_stages_and_parameters(
    pipeline: Pipeline, query: str
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        assert_error(await http.get(f"/dashboard/failures?{query}"), 400, "INVALID_QUERY")


async def test_the_page_refuses_files_it_does_not_serve(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        for name in ("package.json", "..%2Fdashboard.py", "vendor%2F.installed"):
            assert_error(await http.get(f"/dashboard/assets/{name}"), 404, "NOT_FOUND")
        script = await http.get("/dashboard/assets/uPlot.iife.min.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
