"""Crashes: a worker or the projector killed with SIGKILL mid-flight loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from api.client import StagecastClient
from projections.audit import audit_job
from schemas.codec import default_codec
from tests.conftest import EXAMPLES, Pipeline

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
JOBS = 40


async def _finish_all(client: StagecastClient, job_ids: list[str]) -> list[str]:
    async def outcome(job_id: str) -> str:
        async for event in client.events(job_id):
            if event.type == "JobFinished":
                return str(event.data["status"])
        return "feed ended without JobFinished"

    return await asyncio.wait_for(asyncio.gather(*(outcome(j) for j in job_ids)), 120)


async def _assert_each_job_projected_once(pipeline: Pipeline, job_ids: list[str]) -> None:
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        ids = [uuid.UUID(j) for j in job_ids]
        doubled = await conn.fetch(
            "SELECT job_id, type, stage, payload->>'status' AS status, count(*) AS n "
            "FROM job_events WHERE job_id = ANY($1::uuid[]) AND topic = $2 "
            "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
            ids,
            pipeline.settings.topics.events,
        )
        lifecycle = await conn.fetch(
            "SELECT job_id, count(*) AS n FROM job_events "
            "WHERE job_id = ANY($1::uuid[]) AND topic = $2 GROUP BY 1",
            ids,
            pipeline.settings.topics.events,
        )
        stages = await conn.fetch(
            "SELECT job_id, count(*) AS n, bool_and(status = 'SUCCEEDED') AS ok "
            "FROM job_stages WHERE job_id = ANY($1::uuid[]) GROUP BY 1",
            ids,
        )
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM jobs WHERE job_id = ANY($1::uuid[]) GROUP BY 1", ids
        )
        # Each job's archived history keeps every invariant of a job's life.
        audits = [await audit_job(conn, default_codec(), job_id) for job_id in ids]
    finally:
        await conn.close()
    assert None not in audits
    assert [(a.job_id, a.problems) for a in audits if a is not None and a.problems] == []
    assert doubled == []
    assert {r["job_id"]: r["n"] for r in lifecycle} == dict.fromkeys(ids, 8)
    assert {r["job_id"]: (r["n"], r["ok"]) for r in stages} == dict.fromkeys(ids, (3, True))
    assert {r["status"]: r["n"] for r in statuses} == {"SUCCEEDED": len(ids)}


async def _crash_mid_flight(pipeline: Pipeline, process: str) -> None:
    launcher = pipeline.launcher
    async with StagecastClient(pipeline.api_url) as client:
        job_ids = []
        for index in range(JOBS):
            accepted = await client.submit(DIGITS)
            job_ids.append(accepted["job_id"])
            if index == JOBS // 4:
                launcher.children[process].send_signal(signal.SIGKILL)
                launcher.children[process].wait(10)
        launcher.spawn(process)
        outcomes = await _finish_all(client, job_ids)
    assert outcomes == ["SUCCEEDED"] * JOBS
    await _assert_each_job_projected_once(pipeline, job_ids)


async def test_worker_killed_mid_flight_every_job_finishes_once(pipeline: Pipeline) -> None:
    await _crash_mid_flight(pipeline, "worker")


async def test_projector_killed_mid_flight_every_job_finishes_once(pipeline: Pipeline) -> None:
    await _crash_mid_flight(pipeline, "projector")


def test_up_restarts_dead_processes_refuses_a_second_up_and_stops_everything_on_sigint(
    tmp_path: Path,
) -> None:
    state = tmp_path / "up"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(STAGECAST_STATE_DIR=str(state), STAGECAST_API_PORT="0")
    up = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (state / "stack.json").exists():
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "stagecast up did not come up"
            time.sleep(0.2)
        info = json.loads((state / "stack.json").read_text())

        second = subprocess.run(
            [sys.executable, "-m", "streams.cli", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 4  # refused: one up per state directory
        assert second.stderr.startswith("error: STACK_BUSY: another stagecast is running")
        assert json.loads((state / "stack.json").read_text()) == info

        os.kill(info["pids"]["worker"], signal.SIGKILL)
        while (
            json.loads((state / "stack.json").read_text())["pids"]["worker"]
            == info["pids"]["worker"]
        ):
            assert time.monotonic() < deadline, "the dead worker was not restarted"
            time.sleep(0.2)
        info = json.loads((state / "stack.json").read_text())
        pids = [pid for pid in info["pids"].values() if pid]
        assert len(pids) == 6  # worker, projector, webhooks, api, broker, postgres
        started = [psutil.Process(pid) for pid in pids]
        descendants = [child for proc in started for child in proc.children(recursive=True)]
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    _, alive = psutil.wait_procs(started + descendants, timeout=10)
    assert alive == []
    assert not (state / "stack.json").exists()


def test_configured_servers_are_used_instead_of_embedded_ones(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    from streams.launcher import Launcher
    from streams.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=pipeline.settings.kafka_bootstrap_servers,
        database_url=pipeline.settings.database_url,
        state_dir=tmp_path,
        api_port=0,
    )
    launcher = Launcher(settings)
    try:
        chosen = launcher.start_servers()
    finally:
        launcher.stop()
    assert launcher.broker is None and launcher.database is None
    assert chosen.kafka_bootstrap_servers == pipeline.settings.kafka_bootstrap_servers
    assert chosen.database_url == pipeline.settings.database_url
    assert chosen.session_timeout_s == 45.0  # a real cluster keeps Kafka's defaults
    assert not (tmp_path / "pg").exists()
