"""Shared fixtures: one real embedded stack (Tansu broker + PostgreSQL) per test run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from projections.migrate import migrate
from streams.launcher import PROCESSES, Launcher, prepare
from streams.settings import Settings
from streams.stack import create_database, free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class RunningStack:
    """The embedded servers of this test run, and settings that point at them."""

    launcher: Launcher

    @property
    def settings(self) -> Settings:
        return self.launcher.settings

    def isolated(self, **overrides: object) -> Settings:
        """Settings with fresh topics and a fresh migrated database, for tests needing their own."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        database = self.launcher.database
        assert database is not None, "isolated() needs the embedded database"
        asyncio.run(create_database(database.url(), name))
        # Without metrics ports: the shared stack's processes hold those.
        settings = self.settings.model_copy(
            update={
                "topic_prefix": name,
                "app_id": name,
                "database_url": database.url(name),
                "worker_metrics_port": None,
                "projector_metrics_port": None,
                "webhooks_metrics_port": None,
            }
            | overrides
        )
        asyncio.run(prepare(settings))
        asyncio.run(migrate(settings.require_database()))
        return settings


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Broker and database started once per run; topics created; migrations applied."""
    state = tmp_path_factory.mktemp("stack")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=None,
        database_url=None,
        state_dir=state,
        api_port=0,
        sse_heartbeat_s=1.0,
    )
    launcher = Launcher(settings)
    launcher.start_servers()
    try:
        yield RunningStack(launcher)
    finally:
        launcher.stop()


@dataclass
class Pipeline:
    """Worker, projector and API processes running on the shared stack."""

    stack: RunningStack

    @property
    def launcher(self) -> Launcher:
        return self.stack.launcher

    @property
    def settings(self) -> Settings:
        return self.launcher.settings

    @property
    def api_url(self) -> str:
        return self.launcher.api_url


@contextlib.contextmanager
def api_alone(settings: Settings, state_dir: Path) -> Iterator[Launcher]:
    """An API process of its own on `settings`, with no worker or projector behind it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(settings.api_host)
    launcher = Launcher(settings.model_copy(update={"state_dir": state_dir, "api_port": port}))
    launcher.api_url = f"http://{settings.api_host}:{port}"
    launcher.spawn("api")
    try:
        launcher.wait_ready(60)
        yield launcher
    finally:
        launcher.stop()


WARMUP_DSL = (EXAMPLES / "tiny.neural").read_text()


async def _warm_up(api_url: str) -> None:
    """One job through every stage: the worker has joined its group when it finishes."""
    from api.client import StagecastClient

    async with StagecastClient(api_url) as client:
        accepted = await client.submit(WARMUP_DSL)
        async for event in client.events(accepted["job_id"]):
            if event.type == "JobFinished":
                return


@pytest.fixture(scope="session")
def pipeline(stack: RunningStack) -> Iterator[Pipeline]:
    """The full pipeline as separate processes, every one `stagecast up` runs, warmed up by
    one job."""
    launcher = stack.launcher
    for name in PROCESSES:
        launcher.spawn(name)
    launcher.wait_ready(60)
    asyncio.run(asyncio.wait_for(_warm_up(launcher.api_url), 90))
    yield Pipeline(stack)


# The stages a restricted deployment runs: the rest are refused or fail STAGE_UNAVAILABLE.
RESTRICTED_STAGES = ("parse", "compile", "codegen")


@pytest.fixture(scope="session")
def restricted(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Worker, projector and API of their own on fresh topics and database, running only
    RESTRICTED_STAGES: how a deployment that leaves stages out behaves."""
    settings = stack.isolated(
        enabled_stages=RESTRICTED_STAGES,
        state_dir=tmp_path_factory.mktemp("restricted"),
        api_port=free_port(),
    )
    launcher = Launcher(settings)
    launcher.api_url = f"http://{settings.api_host}:{settings.api_port}"
    for name in ("worker", "projector", "api"):
        launcher.spawn(name)
    try:
        launcher.wait_ready(90)
        asyncio.run(asyncio.wait_for(_warm_up(launcher.api_url), 90))
        yield Pipeline(RunningStack(launcher))
    finally:
        launcher.stop()
