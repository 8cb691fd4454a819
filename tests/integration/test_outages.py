"""Outages under load, on a whole `stagecast up`: every accepted job ends, visibly, in order.

One `stagecast up` runs for the module; the tests kill its processes and servers with
SIGKILL while jobs are in flight and check that the supervisor brings them back and that
every job the API accepted (202) reaches its right terminal status, with a causal feed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.client import StagecastClient
from tests.conftest import EXAMPLES
from tests.feeds import causal_problems, feeds

pytestmark = pytest.mark.integration

TINY = (EXAMPLES / "tiny.neural").read_text()
SETTLE_S = 90.0


@dataclass
class UpStack:
    """A `stagecast up` process and where its parts are."""

    process: subprocess.Popen[str]
    state: Path

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.state / "stack.json").read_text())
        return info

    @property
    def api_url(self) -> str:
        return str(self.info()["api_url"])

    @property
    def database_url(self) -> str:
        return str(self.info()["database_url"])

    def kill(self, part: str) -> int:
        """SIGKILL one part of the stack; wait until `up` has a new one running."""
        pid = int(self.info()["pids"][part])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while self.info()["pids"][part] == pid:
            assert self.process.poll() is None, "stagecast up died"
            assert time.monotonic() < deadline, f"{part} was not restarted"
            time.sleep(0.1)
        return pid


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    state = tmp_path_factory.mktemp("up")
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(STAGECAST_STATE_DIR=str(state), STAGECAST_API_PORT="0")
    log = (state / "up.out").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (state / "stack.json").exists():
            assert process.poll() is None, (state / "up.out").read_text()
            assert time.monotonic() < deadline, "stagecast up did not come up"
            time.sleep(0.2)
        yield UpStack(process, state)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


class Load:
    """Submits jobs from many concurrent clients and remembers every answer."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.accepted: list[str] = []
        self.statuses: list[int] = []

    async def submit(self, count: int, concurrency: int = 16) -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as http:

            async def one() -> None:
                async with gate:
                    try:
                        response = await http.post("/jobs", json={"dsl": TINY})
                    except httpx.TransportError:
                        self.statuses.append(0)
                        return
                self.statuses.append(response.status_code)
                if response.status_code == 202:
                    self.accepted.append(response.json()["job_id"])

            await asyncio.gather(*(one() for _ in range(count)))


async def settled(
    database_url: str, job_ids: list[str], within_s: float = SETTLE_S
) -> dict[str, tuple[str, str | None]]:
    """Wait until every job is terminal; return job id -> (status, error code)."""
    ids = [uuid.UUID(j) for j in job_ids]
    deadline = time.monotonic() + within_s
    while True:
        try:
            conn = await asyncpg.connect(database_url)
            try:
                rows = await conn.fetch(
                    "SELECT job_id, status, error->>'code' AS code FROM jobs "
                    "WHERE job_id = ANY($1::uuid[])",
                    ids,
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            rows = []
        ended = {
            str(r["job_id"]): (r["status"], r["code"])
            for r in rows
            if r["status"] in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELLED")
        }
        if len(ended) == len(ids):
            return ended
        if time.monotonic() > deadline:
            stuck = sorted(set(job_ids) - set(ended))
            raise AssertionError(
                f"{len(stuck)} of {len(ids)} jobs never ended; the first ones: "
                f"{await where_stuck(database_url, stuck[:3])}"
            )
        await asyncio.sleep(0.5)


async def where_stuck(database_url: str, job_ids: list[str]) -> list[dict[str, object]]:
    """What the database knows of unfinished jobs: enough to tell which part lost them."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT o.job_id, o.published_generation, o.accepted_at, j.status, "
            "j.current_stage, d.generation AS dispatched_in, d.dispatched, "
            "(SELECT array_agg(type ORDER BY seq) FROM job_events e WHERE e.job_id = o.job_id) "
            "AS feed, (SELECT generation FROM projector_generations LIMIT 1) AS projecting "
            "FROM request_outbox o LEFT JOIN jobs j ON j.job_id = o.job_id "
            "LEFT JOIN job_dispatches d ON d.job_id = o.job_id WHERE o.job_id = ANY($1::uuid[])",
            [uuid.UUID(j) for j in job_ids],
        )
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def assert_all_succeeded_in_order(up: UpStack, job_ids: list[str]) -> None:
    ended = await settled(up.database_url, job_ids)
    assert set(ended.values()) == {("SUCCEEDED", None)}, ended
    wrong = {
        job: problems
        for job, feed in (await feeds(up.database_url, job_ids)).items()
        if (problems := causal_problems(feed))
    }
    assert wrong == {}


async def test_worker_and_projector_killed_ten_times_each_under_load(up: UpStack) -> None:
    load = Load(up.api_url)
    for part in ["worker", "projector"] * 10:
        submitting = asyncio.create_task(load.submit(8))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(up.kill, part)
        await submitting
    await load.submit(8)
    assert set(load.statuses) == {202}
    await assert_all_succeeded_in_order(up, load.accepted)


async def test_postgres_killed_under_load_answers_503_and_loses_nothing(up: UpStack) -> None:
    load = Load(up.api_url)
    await load.submit(20)
    stop = asyncio.Event()

    async def keep_submitting() -> None:
        while not stop.is_set():
            await load.submit(4, concurrency=4)

    submitting = asyncio.create_task(keep_submitting())
    await asyncio.sleep(0.3)
    await asyncio.to_thread(up.kill, "postgres")
    await asyncio.sleep(3)
    stop.set()
    await submitting
    await load.submit(20)
    assert 500 not in load.statuses
    assert set(load.statuses) == {202, 503}
    await assert_all_succeeded_in_order(up, load.accepted)
    for part in ("projector", "worker", "api"):
        said = (up.state / f"{part}.log").read_text(errors="replace")
        assert "Unclosed" not in said, f"{part} leaked a client while the database was away"


async def test_broker_killed_with_200_jobs_in_flight_every_job_ends(up: UpStack) -> None:
    load = Load(up.api_url)
    await load.submit(100)
    submitting = asyncio.create_task(load.submit(100, concurrency=8))
    await asyncio.sleep(0.2)
    killed = await asyncio.to_thread(up.kill, "broker")
    await submitting
    assert load.statuses.count(202) == 200, load.statuses
    await assert_all_succeeded_in_order(up, load.accepted)

    later = Load(up.api_url)
    await later.submit(10)
    await assert_all_succeeded_in_order(up, later.accepted)
    async with httpx.AsyncClient(base_url=up.api_url) as http:
        assert (await http.get("/ready")).status_code == 200
    assert up.info()["pids"]["broker"] != killed
    said = (up.state / "up.out").read_text()
    assert "broker exited with -9; restarted as generation" in said


def replay_cli(up: UpStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`stagecast replay` against this stack (it finds it from the state directory)."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["STAGECAST_STATE_DIR"] = str(up.state)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_after_a_broker_loss_republish_restores_the_history_and_a_replay_matches(
    up: UpStack,
) -> None:
    load = Load(up.api_url)
    await load.submit(30)
    await assert_all_succeeded_in_order(up, load.accepted)
    conn = await asyncpg.connect(up.database_url)
    try:
        ended_before = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE job_status_rank(status) = 3"
        )
        await asyncio.to_thread(up.kill, "broker")  # memory-only: its topics are gone
        restored = replay_cli(up, "--republish")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "republished" in restored.stdout
        # Now nothing is missing: a second republish is refused, with one line.
        again = replay_cli(up, "--republish")
        assert again.returncode == 4 and "nothing was lost" in again.stderr, again.stdout
        # The republished requests start no ended job again: no job has two JobFinished.
        await asyncio.sleep(5)
        twice = await conn.fetch(
            "SELECT e.job_id FROM job_events e JOIN jobs j ON j.job_id = e.job_id "
            "WHERE e.type = 'JobFinished' AND job_status_rank(j.status) = 3 "
            "GROUP BY e.job_id HAVING count(*) > 1"
        )
        assert twice == [] and ended_before > 0
    finally:
        await conn.close()
    rebuilt = replay_cli(up, "--into", "after_loss", "--compare")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "no difference" in rebuilt.stdout
    later = Load(up.api_url)
    await later.submit(5)
    await assert_all_succeeded_in_order(up, later.accepted)


async def test_worker_killed_during_an_execute_the_job_still_ends(up: UpStack) -> None:
    code = "import time\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(0.5)"
    async with StagecastClient(up.api_url) as client:
        accepted = await client.submit(kind="CODE", code=code, limits={"timeout_seconds": 60})
        job_id = accepted["job_id"]
        async for event in client.events(job_id):
            if event.type == "LogEmitted":
                break
    await asyncio.to_thread(up.kill, "worker")
    ended = await settled(up.database_url, [job_id])
    # Run again by the next worker (the command was never committed), or timed out.
    assert ended[job_id] in {("SUCCEEDED", None), ("FAILED", "STAGE_TIMEOUT")}
    feed = (await feeds(up.database_url, [job_id]))[job_id]
    assert causal_problems(feed) == []
