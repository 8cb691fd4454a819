"""POST /jobs/{id}/cancel and `stagecast cancel`: a CancelRequested every worker hears."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.settings import Settings
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone
from tests.integration.test_api import assert_error
from tests.integration.test_control import produce
from tests.integration.test_dispatch_once import feed_when_quiet, request
from tests.topics import decoded, held

pytestmark = pytest.mark.integration

TINY = (EXAMPLES / "tiny.neural").read_text()


@pytest.fixture(scope="module")
def lone_api(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API with no worker behind it: what it accepts stays unfinished."""
    with api_alone(stack.isolated(), tmp_path_factory.mktemp("cancel-api")) as launcher:
        yield launcher


async def control_messages(settings: Settings) -> list[dict[str, object]]:
    """Every CancelRequested the control topic holds."""
    found = decoded(await held(settings, settings.topics.control))
    assert {kind for kind, _ in found} <= {"CancelRequested"}
    return [record for _, record in found]


async def test_cancel_of_an_unfinished_job_publishes_one_cancel_request(lone_api: Launcher) -> None:
    async with httpx.AsyncClient(base_url=lone_api.api_url) as http:
        accepted = await http.post("/jobs", json={"dsl": TINY}, headers={"X-Tenant": "acme"})
        assert accepted.status_code == 202
        job_id = accepted.json()["job_id"]
        cancelled = await http.post(f"/jobs/{job_id}/cancel", json={"reason": "wrong model"})
        again = await http.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "CANCELLING"
    assert again.status_code == 202
    mine = [m for m in await control_messages(lone_api.settings) if m["job_id"] == job_id]
    assert [(m["tenant"], m["reason"]) for m in mine] == [("acme", "wrong model"), ("acme", "")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"reason": 5}', "VALIDATION_FAILED"),
        (b'{"reason": "x", "force": true}', "VALIDATION_FAILED"),
        (b'{"reason": "' + b"x" * 600 + b'"}', "VALIDATION_FAILED"),
        (b'{"reason": "\\ud800"}', "VALIDATION_FAILED"),
        (b"[[[[", "INVALID_JSON"),
    ],
)
async def test_bad_cancel_bodies_are_refused(lone_api: Launcher, body: bytes, code: str) -> None:
    async with httpx.AsyncClient(base_url=lone_api.api_url) as http:
        job_id = (await http.post("/jobs", json={"dsl": TINY})).json()["job_id"]
        response = await http.post(
            f"/jobs/{job_id}/cancel", content=body, headers={"content-type": "application/json"}
        )
    assert_error(response, 400 if code == "INVALID_JSON" else 422, code)


async def test_cancel_of_an_unknown_or_finished_job_is_refused(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        unknown = await http.post(f"/jobs/{uuid.uuid4()}/cancel")
        not_an_id = await http.post("/jobs/nope/cancel")
        job_id = (await http.post("/jobs", json={"dsl": TINY})).json()["job_id"]
        for _ in range(200):
            view = await http.get(f"/jobs/{job_id}")
            if view.status_code == 200 and view.json()["status"] == "SUCCEEDED":
                break
            await asyncio.sleep(0.1)
        finished = await http.post(f"/jobs/{job_id}/cancel")
        wrong_method = await http.get(f"/jobs/{job_id}/cancel")
    assert_error(unknown, 404, "JOB_NOT_FOUND")
    assert_error(not_an_id, 400, "INVALID_JOB_ID")
    assert_error(finished, 409, "JOB_FINISHED")
    assert finished.json()["details"]["status"] == "SUCCEEDED"
    assert wrong_method.status_code == 405


async def test_a_job_cancelled_before_it_runs_starts_no_stage(pipeline: Pipeline) -> None:
    job_id = str(uuid.uuid4())
    record = request(job_id, TINY)
    envelope_fields = {k: record[k] for k in ("job_id", "tenant", "occurred_at", "source")}
    cancel = default_codec().encode(
        "CancelRequested", envelope_fields | {"event_id": str(uuid.uuid4()), "reason": "stop"}
    )
    settings = pipeline.settings
    await produce(settings, (settings.topics.control, cancel))
    await asyncio.sleep(1.0)  # every worker has read it
    await produce(
        settings, (settings.topics.requests, default_codec().encode("JobRequested", record))
    )
    feed = await feed_when_quiet(pipeline, job_id)
    assert [kind for kind, _ in feed] == ["JobAccepted", "JobFinished"]
    finished = feed[-1][1]
    assert finished["status"] == "CANCELLED"
    assert finished["error"]["code"] == "CANCELLED"
    assert finished["error"]["message"] == "stop"
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        view = (await http.get(f"/jobs/{job_id}")).json()
    assert view["status"] == "CANCELLED"
    assert view["stages"] == []


def test_the_cli_cancels_and_says_so_in_one_line(lone_api: Launcher, pipeline: Pipeline) -> None:
    accepted = httpx.post(f"{lone_api.api_url}/jobs", json={"dsl": TINY}).json()
    root = Path(__file__).resolve().parents[2]

    def cli(api_url: str, job_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", "cancel", job_id, "--api", api_url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=root,
            check=False,
        )

    done = cli(lone_api.api_url, accepted["job_id"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cancelling {accepted['job_id']}; follow it with 'stagecast watch {accepted['job_id']}'"
    )
    unknown = cli(pipeline.api_url, str(uuid.uuid4()))
    assert unknown.returncode == 5
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert unknown.stderr.startswith("error: JOB_NOT_FOUND: the API answered 404: ")
    assert "Traceback" not in unknown.stderr
