"""Shared fixtures: one real embedded stack (Tansu broker + PostgreSQL) per test run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from projections.migrate import migrate
from streams.launcher import Launcher, prepare
from streams.settings import Settings
from streams.stack import create_database

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class RunningStack:
    """The embedded servers of this test run, and settings that point at them."""

    launcher: Launcher

    @property
    def settings(self) -> Settings:
        return self.launcher.settings

    def isolated(self, **overrides: object) -> Settings:
        """Settings with fresh topics and a fresh, migrated database, for tests that need their own."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        database = self.launcher.database
        assert database is not None, "isolated() needs the embedded database"
        asyncio.run(create_database(database.url(), name))
        settings = self.settings.model_copy(
            update={"topic_prefix": name, "app_id": name, "database_url": database.url(name)}
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
    )
    launcher = Launcher(settings)
    launcher.start_servers()
    try:
        yield RunningStack(launcher)
    finally:
        launcher.stop()
