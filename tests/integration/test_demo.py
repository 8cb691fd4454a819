"""`stagecast demo` against the running pipeline: every bundled example ends as it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.demo import run_demo
from tests.conftest import Pipeline

pytestmark = pytest.mark.integration


async def test_every_bundled_example_ends_the_way_it_should(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(pipeline.api_url, echo=False)
    out = capsys.readouterr().out
    assert "jobs ended the way they should" in out
    assert " BAD " not in out  # the mark of a row that ended otherwise


def test_the_demo_twice_in_one_state_directory_ends_every_job_both_times(
    tmp_path: Path,
) -> None:
    # The second run starts a new (memory-only) broker beside a database that remembers the
    # first run's offsets: a new broker generation, whose jobs must all be projected too.
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["STAGECAST_STATE_DIR"] = str(tmp_path / "state")
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"run {run}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        summary = re.search(r"(\d+)/(\d+) jobs ended the way they should", done.stdout)
        assert summary is not None, done.stdout[-3000:]
        assert summary[1] == summary[2], f"run {run}: {summary[0]}"
        assert int(summary[2]) >= 20
