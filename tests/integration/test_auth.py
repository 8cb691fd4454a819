"""Tenants and API keys, rate limits, open mode and CORS, on an API process in keys mode.

The keys-mode API runs beside the shared pipeline on its database and topics, so the jobs it
accepts are run and projected by the pipeline's worker and projector.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.client import ApiRequestError, FeedEvent, StagecastClient
from api.tenancy import visible_to
from streams.launcher import Launcher
from streams.settings import Settings
from streams.stack import free_port
from tests.conftest import WARMUP_DSL, Pipeline, RunningStack, api_alone

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example"
FOREIGN_ORIGIN = "https://elsewhere.example"
FAST_STAGES = ("parse", "compile", "codegen")


@pytest.fixture(scope="module")
def keys_api(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    settings = pipeline.settings.model_copy(update={"auth": "keys", "cors_origins": (ORIGIN,)})
    with api_alone(settings, tmp_path_factory.mktemp("keys-api")) as launcher:
        yield launcher


def stagecast(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return stagecast_on(pipeline.settings, *args)


def stagecast_on(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=settings.require_database())
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def create_key(
    pipeline: Pipeline, tenant: str, scopes: str = "submit,read", rate: int = 600
) -> str:
    return create_key_on(pipeline.settings, tenant, scopes, rate)


def create_key_on(
    settings: Settings, tenant: str, scopes: str = "submit,read", rate: int = 600
) -> str:
    made = stagecast_on(
        settings, "keys", "create", "--tenant", tenant, "--scopes", scopes, "--rate", str(rate)
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def feed_end(pipeline: Pipeline) -> int:
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        return int(await conn.fetchval("SELECT COALESCE(max(seq), 0) FROM job_events"))
    finally:
        await conn.close()


async def run_job(client: StagecastClient) -> str:
    """A job submitted with the client's key, followed to its end."""
    job_id = str((await client.submit(WARMUP_DSL, stages=FAST_STAGES))["job_id"])
    async with asyncio.timeout(90):
        async for _ in client.events(job_id):
            pass
    return job_id


async def test_a_key_sees_only_its_own_tenants_jobs(pipeline: Pipeline, keys_api: Launcher) -> None:
    ours, theirs = tenant(), tenant()
    our_key, their_key = create_key(pipeline, ours), create_key(pipeline, theirs)
    start = await feed_end(pipeline)
    url = keys_api.api_url
    async with (
        StagecastClient(url, api_key=our_key) as mine,
        StagecastClient(url, api_key=their_key) as other,
    ):
        their_job = await run_job(other)
        our_job = await run_job(mine)
        assert (await mine.job(our_job))["tenant"] == ours
        assert (await other.job(their_job))["tenant"] == theirs

        async with httpx.AsyncClient(base_url=url, headers=bearer(our_key)) as http:
            for path in ("", "/stages", "/metrics", "/artifacts", "/artifacts/model.py"):
                answer = await http.get(f"/jobs/{their_job}{path}")
                assert (answer.status_code, answer.json()["error_code"]) == (404, "JOB_NOT_FOUND")
            listed = (await http.get("/jobs", params={"limit": 500})).json()["jobs"]
            asked_for_theirs = await http.get("/jobs", params={"tenant": theirs})
        with pytest.raises(ApiRequestError) as hidden:
            await mine.cancel(their_job)
        assert (hidden.value.status, hidden.value.body["error_code"]) == (404, "JOB_NOT_FOUND")
        with pytest.raises(ApiRequestError) as hidden:
            async for _ in mine.events(their_job, 0):
                pass
        assert (hidden.value.status, hidden.value.body["error_code"]) == (404, "JOB_NOT_FOUND")
        with pytest.raises(ApiRequestError) as hidden:
            await mine.compare([our_job, their_job])
        assert hidden.value.status == 404
        assert hidden.value.body["details"] == {"unknown": [their_job]}

        assert {job["tenant"] for job in listed} == {ours}
        assert our_job in {job["job_id"] for job in listed}
        assert asked_for_theirs.status_code == 403
        assert asked_for_theirs.json()["error_code"] == "TENANT_FORBIDDEN"

        seen: list[FeedEvent] = []
        firehose = mine.firehose(start)
        async with asyncio.timeout(60):
            async for event in firehose:
                seen.append(event)
                if event.type == "JobFinished" and event.data["job_id"] == our_job:
                    break
        await firehose.aclose()
        # Their job ran to its end before ours started: unfiltered, its events lie in between.
        assert {event.data["tenant"] for event in seen} == {ours}
        assert their_job not in {event.data["job_id"] for event in seen}
        with pytest.raises(ApiRequestError) as refused:
            await anext(mine.firehose(start, tenants=[theirs]))
        assert (refused.value.status, refused.value.body["error_code"]) == (
            403,
            "TENANT_FORBIDDEN",
        )


async def test_a_submission_takes_its_tenant_from_the_key(
    pipeline: Pipeline, keys_api: Launcher
) -> None:
    ours = tenant()
    key = create_key(pipeline, ours)
    body = {"dsl": WARMUP_DSL, "stages": list(FAST_STAGES)}
    async with httpx.AsyncClient(base_url=keys_api.api_url, headers=bearer(key)) as http:
        same = await http.post("/jobs", json=body, headers={"X-Tenant": ours})
        assert same.status_code == 202, same.text
        other = await http.post("/jobs", json=body, headers={"X-Tenant": "someone-else"})
        assert other.status_code == 403
        assert other.json()["error_code"] == "TENANT_MISMATCH"
    async with StagecastClient(keys_api.api_url, api_key=key) as client:
        async with asyncio.timeout(60):
            async for _ in client.events(same.json()["job_id"]):
                pass
        assert (await client.job(same.json()["job_id"]))["tenant"] == ours


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "API_KEY_MISSING"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "API_KEY_MISSING"),
        ({"Authorization": "Bearer not-a-key"}, "API_KEY_INVALID"),
        ({"Authorization": "Bearer sck_0123456789ab_" + "A" * 43}, "API_KEY_INVALID"),
    ],
    ids=["none", "basic", "malformed", "unknown"],
)
async def test_requests_without_a_valid_key_get_401(
    keys_api: Launcher, headers: dict[str, str], code: str
) -> None:
    async with httpx.AsyncClient(base_url=keys_api.api_url, headers=headers) as http:
        for method, path in (
            ("GET", "/jobs"),
            ("POST", "/jobs"),
            ("GET", f"/jobs/{uuid.uuid4()}"),
            ("GET", f"/jobs/{uuid.uuid4()}/events"),
            ("GET", "/events"),
            ("GET", "/metrics"),
            ("GET", "/no/such/route"),
        ):
            answer = await http.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 401, (method, path)
            assert answer.json()["error_code"] == code
            assert answer.headers["www-authenticate"].startswith("Bearer")
        for path in (
            "/health",
            "/ready",
            "/dashboard/assets/dashboard.js",
            "/openapi.json",
            "/docs",
            "/docs/assets/docs.js",
        ):
            assert (await http.get(path)).status_code == 200, path


async def test_a_revoked_key_is_refused_at_once(pipeline: Pipeline, keys_api: Launcher) -> None:
    key = create_key(pipeline, tenant())
    key_id = key.split("_")[1]
    async with httpx.AsyncClient(base_url=keys_api.api_url, headers=bearer(key)) as http:
        assert (await http.get("/jobs")).status_code == 200
        listed = stagecast(pipeline, "keys", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        row = next(row for row in json.loads(listed.stdout) if row["key_id"] == key_id)
        assert row["revoked_at"] is None
        assert key not in listed.stdout
        revoked = stagecast(pipeline, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        answer = await http.get("/jobs")
        assert answer.status_code == 401
        assert answer.json()["error_code"] == "API_KEY_REVOKED"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    listed = stagecast(pipeline, "keys", "list")
    assert key_id in listed.stdout and "revoked" in listed.stdout and key not in listed.stdout
    unknown = stagecast(pipeline, "keys", "revoke", "0123456789ab")
    assert unknown.returncode == 5
    assert unknown.stderr.startswith("error: KEY_NOT_FOUND: no API key")
    assert unknown.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def idle_keys_api(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """A keys-mode API with no worker behind it (its jobs stay unfinished, so their feeds stay
    open) that checks open feeds' keys again twice a second."""
    settings = stack.isolated(auth="keys", key_recheck_s=0.5)
    with api_alone(settings, tmp_path_factory.mktemp("idle-keys-api")) as launcher:
        yield launcher


async def test_a_revoked_keys_open_feeds_end_with_its_401_body(idle_keys_api: Launcher) -> None:
    settings, url = idle_keys_api.settings, idle_keys_api.api_url
    ours = tenant()
    key, kept = create_key_on(settings, ours), create_key_on(settings, ours)

    async def follow(feed: AsyncIterator[FeedEvent]) -> None:
        async for _ in feed:
            pass

    async with (
        StagecastClient(url, api_key=key) as client,
        StagecastClient(url, api_key=kept) as keeper,
        httpx.AsyncClient(base_url=url, headers=bearer(key)) as http,
    ):
        job_id = str((await client.submit(WARMUP_DSL))["job_id"])
        revoked = [
            asyncio.create_task(follow(client.events(job_id))),
            asyncio.create_task(follow(client.firehose())),
        ]
        held = asyncio.create_task(follow(keeper.events(job_id)))
        # Each feed has been checked again more than once and is still open.
        await asyncio.sleep(1.5)
        assert not any(task.done() for task in [*revoked, held])
        done = stagecast_on(settings, "keys", "revoke", key.split("_")[1])
        assert done.returncode == 0, done.stderr
        for task in revoked:
            with pytest.raises(ApiRequestError) as refused:
                await asyncio.wait_for(task, 10)
            assert refused.value.code == "API_KEY_REVOKED"
        # And the key opens no feed again.
        async with http.stream("GET", f"/jobs/{job_id}/events") as answer:
            assert answer.status_code == 401
        assert not held.done(), "a feed of another key of the same tenant stays open"
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--tenant", "t", "--scopes", "read,write"), "unknown scope(s) write"),
        (("--tenant", "t", "--rate", "0"), "--rate"),
        (("--tenant", "", "--scopes", "read"), "--tenant"),
    ],
)
def test_keys_create_refuses_bad_arguments_in_one_line(
    pipeline: Pipeline, args: tuple[str, ...], problem: str
) -> None:
    made = stagecast(pipeline, "keys", "create", *args)
    assert made.returncode == 2
    assert problem in made.stderr and made.stderr.count("\n") == 1
    assert made.stdout == ""


async def test_a_key_without_the_routes_scope_gets_403(
    pipeline: Pipeline, keys_api: Launcher
) -> None:
    ours = tenant()
    reader, submitter = create_key(pipeline, ours, "read"), create_key(pipeline, ours, "submit")
    admin = create_key(pipeline, ours, "admin")
    body = {"dsl": WARMUP_DSL, "stages": list(FAST_STAGES)}
    async with httpx.AsyncClient(base_url=keys_api.api_url) as http:
        for key, method, path in (
            (reader, "POST", "/jobs"),
            (reader, "POST", f"/jobs/{uuid.uuid4()}/cancel"),
            (reader, "GET", "/metrics"),
            (reader, "GET", "/dashboard/failures"),
            (submitter, "GET", "/jobs"),
            (submitter, "GET", "/events"),
            (admin, "GET", "/jobs"),
        ):
            answer = await http.request(
                method, path, headers=bearer(key), json=body if method == "POST" else None
            )
            assert answer.status_code == 403, (method, path)
            assert answer.json()["error_code"] == "SCOPE_MISSING"
        assert (await http.get("/jobs")).status_code == 401
        metrics = await http.get("/metrics", headers=bearer(admin))
        assert metrics.status_code == 200
        # Refusals are counted under the route they were for.
        assert 'method="GET",route="/jobs",status="401"' in metrics.text
        assert 'method="POST",route="/jobs",status="403"' in metrics.text
        assert (await http.get("/jobs", headers=bearer(reader))).status_code == 200
        submitted = await http.post("/jobs", headers=bearer(submitter), json=body)
        assert submitted.status_code == 202


async def test_a_key_over_its_rate_gets_429_with_retry_after(
    pipeline: Pipeline, keys_api: Launcher
) -> None:
    ours = tenant()
    slow, other = create_key(pipeline, ours, rate=3), create_key(pipeline, ours, rate=3)
    async with httpx.AsyncClient(base_url=keys_api.api_url) as http:
        answers = [await http.get("/jobs", headers=bearer(slow)) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.json()["error_code"] == "RATE_LIMITED"
        # 3 a minute: the next token is 20 s away.
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert (await http.get("/jobs", headers=bearer(other))).status_code == 200


async def test_an_open_feed_counts_once_against_the_rate(
    pipeline: Pipeline, keys_api: Launcher
) -> None:
    key = create_key(pipeline, tenant(), rate=2)
    async with (
        httpx.AsyncClient(base_url=keys_api.api_url, headers=bearer(key)) as http,
        http.stream("GET", "/events") as feed,
    ):
        assert feed.status_code == 200
        lines = feed.aiter_lines()
        # The feed's opening message, then heartbeats (every second here) for 3 s.
        async with asyncio.timeout(10):
            while not (await anext(lines)).startswith("id:"):
                pass
        await asyncio.sleep(3.0)
        assert (await http.get("/jobs")).status_code == 200
        assert (await http.get("/jobs")).status_code == 429


def test_open_mode_refuses_to_serve_off_loopback(pipeline: Pipeline, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=pipeline.settings.require_database(),
        KAFKA_BOOTSTRAP_SERVERS=pipeline.settings.require_kafka(),
        STAGECAST_STATE_DIR=str(tmp_path),
        STAGECAST_API_HOST="0.0.0.0",
        STAGECAST_API_PORT=str(free_port()),
    )
    for command in ("api", "up"):
        refused = subprocess.run(
            [sys.executable, "-m", "streams.cli", command],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert refused.returncode != 0, command
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "refusing to serve without API keys on 0.0.0.0" in refused.stderr
    assert not (tmp_path / "pg").exists()  # `up` refused before starting anything


def test_keys_mode_serves_on_any_address(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = pipeline.settings.model_copy(update={"auth": "keys", "api_host": "0.0.0.0"})
    port = free_port()
    launcher = Launcher(settings.model_copy(update={"state_dir": tmp_path, "api_port": port}))
    launcher.api_url = f"http://127.0.0.1:{port}"
    launcher.spawn("api")
    try:
        launcher.wait_ready(60)
        assert httpx.get(f"{launcher.api_url}/jobs").status_code == 401
    finally:
        launcher.stop()


async def test_cors_answers_allowed_origins_only(pipeline: Pipeline, keys_api: Launcher) -> None:
    key = create_key(pipeline, tenant())
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, last-event-id",
    }
    async with httpx.AsyncClient(base_url=keys_api.api_url) as http:
        allowed = await http.options("/events", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        granted = allowed.headers["access-control-allow-headers"].lower()
        assert "authorization" in granted and "last-event-id" in granted
        read = await http.get("/jobs", headers={"Origin": ORIGIN, **bearer(key)})
        assert read.status_code == 200
        assert read.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in read.headers["access-control-expose-headers"].lower()
        unauthenticated = await http.get("/jobs", headers={"Origin": ORIGIN})
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["access-control-allow-origin"] == ORIGIN

        foreign = await http.options("/events", headers={"Origin": FOREIGN_ORIGIN, **preflight})
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers
        read = await http.get("/jobs", headers={"Origin": FOREIGN_ORIGIN, **bearer(key)})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers


async def test_a_job_not_projected_yet_is_hidden_from_other_tenants(pipeline: Pipeline) -> None:
    """Before the projector writes its row, a job's owner is its request in the outbox."""
    ours, theirs = tenant(), tenant()
    job_id = uuid.uuid4()
    seen = f"SELECT {visible_to('$1', '$2::text')}"
    conn = await asyncpg.connect(pipeline.settings.require_database())
    # Rolled back, never committed: the outbox relay never publishes this request.
    unpublished = conn.transaction()
    await unpublished.start()
    try:
        await conn.execute(
            "INSERT INTO request_outbox (job_id, tenant, request) VALUES ($1, $2, '')",
            job_id,
            ours,
        )
        assert await conn.fetchval(seen, job_id, ours) is True
        assert await conn.fetchval(seen, job_id, None) is True
        assert await conn.fetchval(seen, job_id, theirs) is False
        assert await conn.fetchval(seen, uuid.uuid4(), theirs) is True
    finally:
        await unpublished.rollback()
        await conn.close()
