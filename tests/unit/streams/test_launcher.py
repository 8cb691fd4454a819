"""Which processes a stack runs: N workers under names of their own, each running `worker`."""

from __future__ import annotations

from pathlib import Path

from streams.launcher import Launcher, command_of, worker_names
from streams.settings import Settings


def test_the_first_worker_keeps_its_name_and_replicas_are_numbered() -> None:
    assert worker_names(1) == ["worker"]
    assert worker_names(3) == ["worker", "worker-2", "worker-3"]


def test_every_worker_replica_runs_the_worker_command_and_the_rest_their_own() -> None:
    assert [command_of(name) for name in worker_names(3)] == ["worker"] * 3
    assert [command_of(name) for name in ("projector", "webhooks", "api")] == [
        "projector",
        "webhooks",
        "api",
    ]


def test_a_stack_runs_as_many_workers_as_its_settings_say(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path, workers=2)  # type: ignore[call-arg]
    assert Launcher(settings).process_names() == [
        "worker",
        "worker-2",
        "projector",
        "webhooks",
        "api",
    ]
