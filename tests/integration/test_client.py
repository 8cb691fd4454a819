"""The Python SDK (api/client.py) against the running pipeline: listing, waiting, typed errors,
and the README's example as it is written."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.client import ApiRequestError, StagecastClient, StagecastError, WaitTimeout
from streams.launcher import Launcher
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
TINY = (EXAMPLES / "tiny.neural").read_text()
INVALID = (EXAMPLES / "invalid" / "unknown_layer.neural").read_text()


async def test_jobs_filters_by_label_and_status_and_pages_with_the_cursor(
    pipeline: Pipeline,
) -> None:
    run = uuid.uuid4().hex
    async with StagecastClient(pipeline.api_url) as client:
        submitted = [
            (await client.submit(dsl, labels={"run": run}))["job_id"]
            for dsl in (TINY, INVALID, TINY)
        ]
        for job_id in submitted:
            await client.wait(job_id, max_wait_s=60)
        first = await client.jobs(labels={"run": run}, limit=2)
        second = await client.jobs(labels={"run": run}, limit=2, cursor=first["next_cursor"])
        every = [job["job_id"] async for job in client.all_jobs(labels={"run": run}, page_size=2)]
        failed = await client.jobs(labels={"run": run}, status="FAILED")
        elsewhere = await client.jobs(labels={"run": run}, tenant="no-such-tenant")

    newest_first = submitted[::-1]
    assert [job["job_id"] for job in first["jobs"]] == newest_first[:2]
    assert [job["job_id"] for job in second["jobs"]] == newest_first[2:]
    assert "next_cursor" not in second
    assert every == newest_first
    assert [job["job_id"] for job in failed["jobs"]] == [submitted[1]]
    assert elsewhere["jobs"] == []


async def test_wait_returns_the_job_as_it_ended(pipeline: Pipeline) -> None:
    async with StagecastClient(pipeline.api_url) as client:
        good = await client.submit(TINY)
        bad = await client.submit(INVALID)
        succeeded = await client.wait(good["job_id"], max_wait_s=60)
        failed = await client.wait(bad["job_id"], max_wait_s=60)
        stages = await client.stages(good["job_id"])
    assert succeeded["status"] == "SUCCEEDED"
    assert [stage["stage"] for stage in succeeded["stages"]] == ["parse", "compile", "codegen"]
    assert failed["status"] == "FAILED"
    assert failed["error"]["code"] == "DSL_UNKNOWN_LAYER"
    assert [(s["stage"], s["status"]) for s in stages] == [
        ("parse", "SUCCEEDED"),
        ("compile", "SUCCEEDED"),
        ("codegen", "SUCCEEDED"),
    ]


async def test_refusals_carry_the_api_error_code(pipeline: Pipeline) -> None:
    unknown = str(uuid.uuid4())
    async with StagecastClient(pipeline.api_url) as client:
        with pytest.raises(ApiRequestError) as not_found:
            await client.job(unknown)
        with pytest.raises(ApiRequestError) as bad_status:
            await client.jobs(status="SOMEWHERE")
        with pytest.raises(ApiRequestError) as bad_limit:
            await client.jobs(limit=0)
        with pytest.raises(ApiRequestError) as bad_cursor:
            await client.jobs(cursor="yesterday")
        with pytest.raises(ApiRequestError) as no_stages:
            await client.stages(unknown)
        ended = await client.submit(TINY)
        await client.wait(ended["job_id"], max_wait_s=60)
        with pytest.raises(ApiRequestError) as finished:
            await client.cancel(ended["job_id"])

    assert isinstance(not_found.value, StagecastError)
    assert (not_found.value.status, not_found.value.code) == (404, "JOB_NOT_FOUND")
    assert not_found.value.message == "no such job (yet)"
    assert not_found.value.details == {"job_id": unknown}
    assert not_found.value.request_id
    assert (bad_status.value.status, bad_status.value.code) == (400, "INVALID_QUERY")
    assert "SUCCEEDED" in bad_status.value.details["known"]
    assert bad_limit.value.code == "INVALID_QUERY" and "`limit`" in bad_limit.value.message
    assert bad_cursor.value.code == "INVALID_QUERY" and "`cursor`" in bad_cursor.value.message
    assert no_stages.value.code == "JOB_NOT_FOUND"
    assert (finished.value.status, finished.value.code) == (409, "JOB_FINISHED")


@pytest.fixture(scope="module")
def lone_api(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API with nothing behind it: its jobs stay queued and their feeds idle."""
    with api_alone(stack.isolated(), tmp_path_factory.mktemp("lone-api")) as launcher:
        yield launcher


async def test_wait_gives_up_after_max_wait_s(lone_api: Launcher) -> None:
    async with StagecastClient(lone_api.api_url) as client:
        accepted = await client.submit(TINY)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as gave_up:
            await client.wait(accepted["job_id"], max_wait_s=1.5)
        waited = time.monotonic() - started
    # Its feed is open and idle (heartbeats every second): only the limit ended the wait.
    assert 1.5 <= waited < 5.0
    assert (gave_up.value.job_id, gave_up.value.max_wait_s) == (accepted["job_id"], 1.5)
    assert str(gave_up.value) == f"job {accepted['job_id']} had not ended after 1.5 s"


def readme_example() -> str:
    """The Python block of the README's "Python SDK" section."""
    section = README.read_text().split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one example"
    return str(blocks[0])


def test_the_readme_example_runs_against_the_stack(pipeline: Pipeline, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run(
        [sys.executable, str(script), pipeline.api_url],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[1:] == ["JobAccepted"]
    assert "status SUCCEEDED stages ['parse', 'compile', 'codegen']" in lines
    assert any(re.fullmatch(r"artifact model\.py \d+ bytes", line) for line in lines)
    assert any(re.fullmatch(r"newest [0-9a-f-]{36} more: True", line) for line in lines)
    statuses = next(line for line in lines if line.startswith("all "))
    assert statuses.count("'") == 4  # two jobs, each SUCCEEDED or CANCELLED
    assert lines[-1] == "refused 404 JOB_NOT_FOUND"
