"""Scale-out: several workers share one consumer group (`up --workers N` is ready once all
have their share); one SIGKILLed under load leaves its partitions to the others, and every job
ends once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from api.client import StagecastClient
from projections.audit import audit_job
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.settings import Settings
from streams.stack import free_port
from tests.conftest import EXAMPLES, RunningStack
from tests.integration.test_cli import servers_env
from tests.integration.test_metrics import Samples, scrape
from tests.integration.test_projector import eventually

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
PARTITIONS = 6
WORKERS = 3
JOBS = 60
# The jobs submitted before the victim is killed; the rest arrive while the group rebalances.
KILL_AFTER = 20
ASSIGNED = "stagecast_worker_assigned_partitions"


@pytest.fixture(scope="module")
def three_workers(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """Three `stagecast worker` processes in one group on six partitions, a projector, an API."""
    settings = stack.isolated(
        partitions=PARTITIONS,
        stage_partitions=PARTITIONS,
        workers=WORKERS,
        state_dir=tmp_path_factory.mktemp("scaleout"),
        api_port=free_port(),
        worker_metrics_port=free_port(),
    )
    launcher = Launcher(settings)
    launcher.api_url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        for name in launcher.process_names():
            if name != "webhooks":
                launcher.spawn(name)
        launcher.wait_ready(120)
        yield launcher
    finally:
        launcher.stop()


def assignment(samples: Samples) -> dict[str, int]:
    """Partitions per topic a worker's metrics say the group gives it."""
    return {
        dict(labels)["topic"]: int(count)
        for (name, labels), count in samples.items()
        if name == ASSIGNED
    }


async def assignments(launcher: Launcher, names: list[str]) -> dict[str, dict[str, int]]:
    urls = launcher.metrics_urls()
    return {name: assignment(await scrape(urls[name])) for name in names}


def shared_topics(settings: Settings) -> list[str]:
    """The topics the workers' group reads (control is read by every worker outside it)."""
    return [settings.topics.requests] + [settings.topics.stage(s) for s in ("parse", "compile")]


def covered(settings: Settings, by_worker: dict[str, dict[str, int]]) -> bool:
    """Every partition of every group topic is given to exactly one of these workers."""
    return all(
        sum(given.get(topic, 0) for given in by_worker.values()) == settings.stage_partitions
        for topic in shared_topics(settings)
    )


async def test_a_worker_killed_under_load_leaves_its_partitions_to_the_others_and_every_job_ends_once(  # noqa: E501
    three_workers: Launcher,
) -> None:
    launcher = three_workers
    settings = launcher.settings
    names = list(launcher.workers())
    assert names == ["worker", "worker-2", "worker-3"]
    victim, survivors = names[-1], names[:-1]
    before = await assignments(launcher, names)
    assert covered(settings, before), before
    assert sum(before[victim].values()) > 0, before

    async with StagecastClient(launcher.api_url) as client:
        job_ids = []
        for index in range(JOBS):
            job_ids.append((await client.submit(DIGITS))["job_id"])
            if index == KILL_AFTER:
                process = launcher.children[victim]
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
            # A steady load, not one burst: the kill lands among jobs in every stage.
            await asyncio.sleep(0.05)

        async def outcome(job_id: str) -> str:
            async for event in client.events(job_id):
                if event.type == "JobFinished":
                    return str(event.data["status"])
            return "feed ended without JobFinished"

        outcomes = await asyncio.wait_for(asyncio.gather(*map(outcome, job_ids)), 240)
    assert outcomes == ["SUCCEEDED"] * JOBS

    async def taken_over() -> bool:
        return covered(settings, await assignments(launcher, survivors))

    await eventually(taken_over, within_s=60)
    after = await assignments(launcher, survivors)
    gained = sum(sum(after[n].values()) - sum(before[n].values()) for n in survivors)
    assert gained == sum(before[victim].values()), (before, after)

    conn = await asyncpg.connect(settings.require_database())
    try:
        ids = [uuid.UUID(j) for j in job_ids]
        finished = await conn.fetch(
            "SELECT job_id, count(*) AS n FROM job_events "
            "WHERE job_id = ANY($1::uuid[]) AND type = 'JobFinished' GROUP BY 1",
            ids,
        )
        audits = [await audit_job(conn, default_codec(), job_id) for job_id in ids]
    finally:
        await conn.close()
    assert {row["job_id"]: row["n"] for row in finished} == dict.fromkeys(ids, 1)
    assert None not in audits
    assert [(a.job_id, a.problems) for a in audits if a is not None and a.problems] == []


def test_up_with_workers_is_ready_only_once_every_worker_has_its_share(
    stack: RunningStack, tmp_path: Path
) -> None:
    settings = stack.isolated()
    env = servers_env(settings, tmp_path)
    env.update(
        STAGECAST_API_PORT="0", STAGECAST_SESSION_TIMEOUT_S="6", STAGECAST_FETCH_MAX_WAIT_MS="10"
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--workers", "2", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stdout is not None
        info = json.loads(up.stdout.readline())
        workers = ["worker", "worker-2"]
        assert {name: bool(info["pids"][name]) for name in workers} == dict.fromkeys(workers, True)
        assert info["metrics"]["worker"] != info["metrics"]["worker-2"]
        # Ready means both are in the group already: each holds some of every topic's partitions.
        given = {name: assignment(asyncio.run(scrape(info["metrics"][name]))) for name in workers}
        for topic in shared_topics(settings):
            counts = [given[name].get(topic, 0) for name in workers]
            assert sum(counts) == settings.stage_partitions and min(counts) > 0, given
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        up.kill()
