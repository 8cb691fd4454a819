"""Bad HTTP requests get a 4xx with an error code; the API keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.client import StagecastClient
from streams.launcher import Launcher, prepare
from streams.stack import EmbeddedDatabase, create_database
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
# The JSON text of DIGITS, for bodies written out by hand.
DIGITS_JSON = json.dumps(DIGITS)


@pytest.fixture(scope="module")
def lone_api(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API with topics and a database of its own and nothing behind it: nothing projects."""
    with api_alone(stack.isolated(), tmp_path_factory.mktemp("lone-api")) as launcher:
        yield launcher


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    assert body["error"]
    assert "details" in body
    assert body["request_id"] == response.headers["x-request-id"]


async def test_health_and_ready_answer_when_broker_and_database_do(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "INVALID_JSON"),
        (b'{"dsl": 5}', {"content-type": "application/json"}, 422, "VALIDATION_FAILED"),
        (
            b'{"dsl": "x", "surprise": 1}',
            {"content-type": "application/json"},
            422,
            "VALIDATION_FAILED",
        ),
        (b'{"kind": "MODEL"}', {"content-type": "application/json"}, 422, "INVALID_REQUEST"),
        (
            b'{"dsl": "x", "target": "jax"}',
            {"content-type": "application/json"},
            422,
            "VALIDATION_FAILED",
        ),
        (
            b'{"dsl": "x", "stages": ["deploy"]}',
            {"content-type": "application/json"},
            422,
            "UNKNOWN_STAGE",
        ),
        (
            b"dsl=x",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (b"[]", {"content-type": "application/json"}, 422, "VALIDATION_FAILED"),
    ],
)
async def test_bad_job_requests_get_4xx_with_an_error_code(
    pipeline: Pipeline, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post("/jobs", content=body, headers=headers)
    assert_error(response, status, code)


async def test_oversized_bodies_and_dsl_are_refused(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        huge_body = await http.post("/jobs", json={"dsl": "#" * 2_000_000})
        huge_dsl = await http.post("/jobs", json={"dsl": "#" * 300_000})
    assert_error(huge_body, 413, "REQUEST_TOO_LARGE")
    assert_error(huge_dsl, 413, "REQUEST_TOO_LARGE")


async def test_bad_job_ids_and_unknown_jobs(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        assert_error(await http.get("/jobs/not-a-uuid"), 400, "INVALID_JOB_ID")
        assert_error(await http.get(f"/jobs/{uuid.uuid4()}"), 404, "JOB_NOT_FOUND")
        assert_error(await http.get(f"/jobs/{uuid.uuid4()}/stages"), 404, "JOB_NOT_FOUND")
        assert_error(await http.get("/jobs/not-a-uuid/events"), 400, "INVALID_JOB_ID")
        bad_resume = await http.get(
            f"/jobs/{uuid.uuid4()}/events", headers={"Last-Event-ID": "yesterday"}
        )
        assert_error(bad_resume, 400, "INVALID_LAST_EVENT_ID")
        too_far = await http.get(
            f"/jobs/{uuid.uuid4()}/events", headers={"Last-Event-ID": str(2**63)}
        )
        assert_error(too_far, 400, "INVALID_LAST_EVENT_ID")
        assert_error(await http.get("/jobs?cursor=yesterday"), 400, "INVALID_QUERY")
        assert_error(await http.get("/nowhere"), 404, "NOT_FOUND")
        not_allowed = await http.delete("/jobs")
        assert_error(not_allowed, 405, "METHOD_NOT_ALLOWED")
        assert {"GET", "POST"} <= set(not_allowed.headers["allow"].replace(" ", "").split(","))
        assert_error(await http.get("/jobs?limit=0"), 400, "INVALID_QUERY")
        assert_error(await http.get("/jobs?status=DONE"), 400, "INVALID_QUERY")
        assert_error(
            await http.post("/jobs", json={"dsl": DIGITS}, headers={"X-Tenant": "t" * 101}),
            400,
            "INVALID_TENANT",
        )
        # After all that, the API still takes a good job.
        good = await http.post("/jobs", json={"dsl": DIGITS})
    assert good.status_code == 202
    assert good.json()["links"]["events"].endswith("/events")


async def test_list_jobs_filters_by_status(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.get("/jobs", params={"status": "SUCCEEDED", "limit": 5})
    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert 1 <= len(jobs) <= 5
    assert {job["status"] for job in jobs} == {"SUCCEEDED"}


async def test_list_jobs_pages_with_a_cursor_without_overlap(pipeline: Pipeline) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        for _ in range(4):
            accepted = await client.submit(DIGITS)
            _ = [event async for event in client.events(accepted["job_id"])]
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        first = (await http.get("/jobs", params={"limit": 2})).json()
        second = (
            await http.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        everything = (await http.get("/jobs", params={"limit": 4})).json()
    seen = [job["job_id"] for job in first["jobs"] + second["jobs"]]
    assert len(seen) == len(set(seen)) == 4
    assert seen == [job["job_id"] for job in everything["jobs"]]


async def test_resuming_a_finished_feed_after_its_last_event_is_no_content(
    pipeline: Pipeline,
) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(DIGITS)
        events = [event async for event in client.events(accepted["job_id"])]
    last = max(e.seq for e in events if e.type == "JobFinished")
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.get(
            f"/jobs/{accepted['job_id']}/events", headers={"Last-Event-ID": str(last)}
        )
    assert response.status_code == 204


@pytest.mark.parametrize(
    ("path", "headers", "params", "code"),
    [
        ("events", {b"Last-Event-ID": b"\xb2"}, {}, "INVALID_LAST_EVENT_ID"),  # '²' in latin-1
        ("events", {}, {"after": "\u00b2"}, "INVALID_LAST_EVENT_ID"),
        ("events", {}, {"after": "\u0661"}, "INVALID_LAST_EVENT_ID"),  # int() reads it as 1
        ("events", {}, {"after": "1" * 5000}, "INVALID_LAST_EVENT_ID"),  # int() refuses it
        ("events", {}, {"after": "-1"}, "INVALID_LAST_EVENT_ID"),
        ("list", {}, {"limit": "\u00b2"}, "INVALID_QUERY"),
        ("list", {}, {"limit": "\u0661"}, "INVALID_QUERY"),
        ("list", {}, {"limit": "1" * 5000}, "INVALID_QUERY"),
        ("list", {}, {"limit": " 5"}, "INVALID_QUERY"),
    ],
    ids=[
        "header-superscript",
        "after-superscript",
        "after-arabic-indic",
        "after-5000-digits",
        "after-negative",
        "limit-superscript",
        "limit-arabic-indic",
        "limit-5000-digits",
        "limit-space",
    ],
)
async def test_only_ascii_digits_are_numbers(
    pipeline: Pipeline,
    path: str,
    headers: dict[bytes, bytes],
    params: dict[str, str],
    code: str,
) -> None:
    url = f"/jobs/{uuid.uuid4()}/events" if path == "events" else "/jobs"
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as http:
        response = await http.get(url, headers=headers, params=params)
    assert_error(response, 400, code)


def _body(text: str) -> tuple[bytes, dict[str, str]]:
    """A POST /jobs body written as JSON text (json.dumps would refuse to write some of them)."""
    return text.encode(), {"content-type": "application/json"}


DEEP = 100_000


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a": ' * DEEP + "1" + "}" * DEEP,
        f'{{"dsl": {DIGITS_JSON}, "train": {{"layers": {"[" * DEEP}{"]" * DEEP}}}}}',
        # Just past the limit, though json.loads would parse it.
        f'{{"dsl": {DIGITS_JSON}, "train": {{"a": {"[" * 31}{"]" * 31}}}}}',
    ],
    ids=["array", "object", "train", "past-the-limit"],
)
async def test_deeply_nested_json_is_refused(pipeline: Pipeline, text: str) -> None:
    body, headers = _body(text)
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post("/jobs", content=body, headers=headers)
    assert_error(response, 400, "JSON_TOO_DEEP")
    assert response.json()["details"] == {"max_depth": 32}


async def test_nesting_up_to_the_limit_and_brackets_in_strings_pass_the_depth_check(
    pipeline: Pipeline,
) -> None:
    """Refused all the same, but by validation (`dsl` is a number): past the depth check."""
    brackets = "[" * 100 + '\\"' + "{" * 100
    text = f'{{"dsl": 5, "labels": {{"b": "{brackets}"}}, "train": {{"a": {"[" * 30}{"]" * 30}}}}}'
    body, headers = _body(text)
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post("/jobs", content=body, headers=headers)
    assert_error(response, 422, "VALIDATION_FAILED")
    assert [d["field"] for d in response.json()["details"]] == ["dsl"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (r'{"dsl": "\ud800"}', "dsl"),
        (r'{"dsl": "network \udfff x"}', "dsl"),
        (r'{"dsl": "a\u0000b"}', "dsl"),
        (r'{"kind": "CODE", "code": "print(1) \ud83d"}', "code"),
        (f'{{"dsl": {DIGITS_JSON}, "labels": {{"\\ud800": "x"}}}}', "labels.\\ud800"),
        (f'{{"dsl": {DIGITS_JSON}, "labels": {{"team": "\\udc00"}}}}', "labels.team"),
        (f'{{"dsl": {DIGITS_JSON}, "labels": {{"team": "a\\u0000"}}}}', "labels.team"),
        (f'{{"dsl": {DIGITS_JSON}, "idempotency_key": "\\ud800"}}', "idempotency_key"),
        (f'{{"dsl": {DIGITS_JSON}, "idempotency_key": "k\\u0000"}}', "idempotency_key"),
        (f'{{"dsl": {DIGITS_JSON}, "train": {{"notes": ["ok", "\\ud800"]}}}}', "train.notes.1"),
        (f'{{"dsl": {DIGITS_JSON}, "train": {{"\\u0000": 1}}}}', "train.\\u0000"),
        (f'{{"dsl": {DIGITS_JSON}, "stages": ["\\ud800"]}}', "stages.0"),
        (f'{{"dsl": {DIGITS_JSON}, "\\ud800": 1}}', "\\ud800"),
    ],
)
async def test_strings_that_cannot_be_stored_as_text_are_refused(
    pipeline: Pipeline, text: str, field: str
) -> None:
    """Unpaired surrogates are not Unicode text; PostgreSQL cannot store NUL in text or jsonb."""
    body, headers = _body(text)
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post("/jobs", content=body, headers=headers)
    assert_error(response, 422, "VALIDATION_FAILED")
    assert [d["field"] for d in response.json()["details"]] == [field]


@pytest.mark.parametrize(
    "params",
    [
        {"tenant": "\x00"},
        {"tenant": "a\x07b"},
        {"tenant": ""},
        {"status": "\x00"},
        {"cursor": "\x00"},
        {"cursor": f"2024-01-01T00:00:00+00:00\x00|{uuid.uuid4()}"},
        {"cursor": f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}"},
        {"cursor": f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}"},
        {"cursor": f"2024-01-01T00:00:00|{uuid.uuid4()}"},
        {"cursor": f"2024-01-01T00:00:00+00:00|{uuid.uuid4()}|x"},
    ],
    ids=[
        "tenant-nul",
        "tenant-bell",
        "tenant-empty",
        "status-nul",
        "cursor-nul",
        "cursor-nul-time",
        "cursor-before-year-1",
        "cursor-after-year-9999",
        "cursor-no-offset",
        "cursor-three-parts",
    ],
)
async def test_nul_and_control_characters_in_queries_are_refused(
    pipeline: Pipeline, params: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        assert_error(await http.get("/jobs", params=params), 400, "INVALID_QUERY")


@pytest.mark.parametrize("tenant", [b"a\x01b", b"\x7f", b"a\x85b"])
async def test_control_characters_in_x_tenant_are_refused(
    pipeline: Pipeline, tenant: bytes
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post("/jobs", json={"dsl": DIGITS}, headers={b"X-Tenant": tenant})
    assert_error(response, 400, "INVALID_TENANT")


async def test_nul_in_a_header_is_refused_by_the_http_server(pipeline: Pipeline) -> None:
    """h11 answers 400 itself: the app never sees such a request (so no error body of ours)."""
    host, port = pipeline.api_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /jobs HTTP/1.1\r\nHost: x\r\nX-Tenant: a\x00b\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[:2] == [b"HTTP/1.1", b"400"]


async def test_a_cursor_pages_past_jobs_with_no_request_time(lone_api: Launcher) -> None:
    """A job known only from later events sorts as '-infinity': its cursor has no UTC offset."""
    conn = await asyncpg.connect(lone_api.settings.require_database())
    try:
        await conn.execute(
            "INSERT INTO jobs (job_id, tenant, status) VALUES ($1, 'untimed', 'RUNNING')",
            uuid.uuid4(),
        )
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=lone_api.api_url) as http:
        first = (await http.get("/jobs", params={"tenant": "untimed", "limit": 1})).json()
        assert first["next_cursor"].startswith("0001-01-01T00:00:00|")
        params = {"tenant": "untimed", "limit": 1, "cursor": first["next_cursor"]}
        after = await http.get("/jobs", params=params)
    assert after.status_code == 200, after.text
    assert after.json()["jobs"] == []


async def test_idle_feed_sends_heartbeats(lone_api: Launcher) -> None:
    """A feed with nothing to say still sends keep-alive comments (interval set for the tests)."""
    async with httpx.AsyncClient(base_url=lone_api.api_url, timeout=10) as http:
        accepted = await http.post("/jobs", json={"dsl": DIGITS})
        assert accepted.status_code == 202, accepted.text
        async with http.stream("GET", accepted.json()["links"]["events"]) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    break


async def test_the_feed_of_a_job_only_the_outbox_knows_opens(lone_api: Launcher) -> None:
    """Accepted, never projected (nothing projects here): not in `jobs`, yet its feed opens."""
    async with httpx.AsyncClient(base_url=lone_api.api_url, timeout=10) as http:
        accepted = await http.post("/jobs", json={"dsl": DIGITS, "idempotency_key": "outbox"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert_error(await http.get(f"/jobs/{job_id}"), 404, "JOB_NOT_FOUND")
        async with http.stream("GET", f"/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")


async def test_the_feed_of_an_unknown_job_is_not_found(pipeline: Pipeline) -> None:
    unknown = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as http:
        assert_error(await http.get(f"/jobs/{unknown}/events"), 404, "JOB_NOT_FOUND")
        resumed = await http.get(f"/jobs/{unknown}/events", headers={"Last-Event-ID": "7"})
    assert_error(resumed, 404, "JOB_NOT_FOUND")
    assert resumed.json()["details"] == {"job_id": unknown}


def _once_answered(request: Callable[[], httpx.Response], timeout: float = 60.0) -> httpx.Response:
    """The first answer to `request` that is not 503 DATABASE_UNAVAILABLE."""
    deadline = time.monotonic() + timeout
    while True:
        response = request()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_database_outage_is_503_until_the_database_is_back(
    stack: RunningStack, tmp_path: Path
) -> None:
    """An API on a PostgreSQL of its own, stopped mid-test and started again."""
    database = EmbeddedDatabase(tmp_path / "pg")
    database.start()
    try:
        asyncio.run(create_database(database.url(), "outage"))
        name = f"outage_{uuid.uuid4().hex[:8]}"
        settings = stack.settings.model_copy(
            update={"database_url": database.url("outage"), "topic_prefix": name, "app_id": name}
        )
        asyncio.run(prepare(settings))
        with (
            api_alone(settings, tmp_path / "api") as api,
            httpx.Client(base_url=api.api_url, timeout=10) as http,
        ):
            keyed = {"dsl": DIGITS, "idempotency_key": "before-the-outage"}
            accepted = http.post("/jobs", json=keyed)
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]

            database.stop()
            during = [
                http.post("/jobs", json=keyed),
                http.post("/jobs", json={"dsl": DIGITS}),
                http.get(f"/jobs/{job_id}"),
                http.get(f"/jobs/{job_id}/stages"),
                http.get(f"/jobs/{job_id}/events"),
                http.get("/jobs"),
            ]
            for response in during:
                assert_error(response, 503, "DATABASE_UNAVAILABLE")
                assert response.headers["retry-after"] == "5"
            assert http.get("/health").status_code == 200
            assert_error(http.get("/ready"), 503, "NOT_READY")

            database.start()
            retried = _once_answered(lambda: http.post("/jobs", json=keyed))
            assert retried.status_code == 200, retried.text
            assert retried.json()["job_id"] == job_id
            assert retried.json()["duplicate"] is True
            # Nothing projects here: the job is accepted but not in `jobs`.
            assert_error(http.get(f"/jobs/{job_id}"), 404, "JOB_NOT_FOUND")
    finally:
        database.stop()
