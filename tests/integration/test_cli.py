"""The `stagecast` command against the running pipeline, as a person would type it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, Pipeline

pytestmark = pytest.mark.integration


def stagecast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_submit_and_wait_prints_the_job_and_its_events(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "iris_mlp.neural"), "--wait", "--api", pipeline.api_url
    )
    assert done.returncode == 0, done.stderr
    accepted, _ = json.JSONDecoder().raw_decode(done.stdout)
    assert accepted["status"] == "QUEUED"
    assert "StageChanged" in done.stdout
    assert '"status": "SUCCEEDED"' in done.stdout.splitlines()[-1]

    watched = stagecast("watch", accepted["job_id"], "--api", pipeline.api_url)
    assert watched.returncode == 0
    assert watched.stdout.count("StageChanged") == 6
    resumed = stagecast(
        "watch", accepted["job_id"], "--api", pipeline.api_url, "--last-event-id", "0"
    )
    assert resumed.stdout == watched.stdout


def test_submit_of_an_invalid_model_exits_non_zero(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit",
        str(EXAMPLES / "invalid" / "unknown_layer.neural"),
        "--wait",
        "--api",
        pipeline.api_url,
    )
    assert done.returncode == 1
    assert "DSL_UNKNOWN_LAYER" in done.stdout


def test_submit_refused_by_the_api_prints_the_error(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "tiny.neural"), "--stages", "train", "--api", pipeline.api_url
    )
    assert done.returncode == 1
    assert json.loads(done.stderr)["error_code"] == "STAGE_UNAVAILABLE"


def test_bad_settings_are_reported_clearly() -> None:
    env = dict(os.environ, STAGECAST_PARTITIONS="many")
    done = stagecast("api", env=env)
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "partitions" in done.stderr
