"""How many messages each agent of a worker handles at once."""

from pathlib import Path

import pytest

from streams.app import build_app
from streams.runner import StageCommand, StageReporter
from streams.settings import Settings
from streams.stage import Outcome, StageResult


async def nothing(command: StageCommand, reporter: StageReporter) -> Outcome:
    return StageResult(output={})


def concurrency(tmp_path: Path, handoff: bool) -> dict[str, int]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers="127.0.0.1:9",
        database_url="postgresql://nobody@127.0.0.1:9/none",
        state_dir=tmp_path,
        agent_concurrency=8,
        handoff=handoff,
    )
    stages = {name: nothing for name in ("parse", "compile", "codegen", "execute", "train")}
    app = build_app(settings, stages=stages)
    return {agent.name: agent.concurrency for agent in app.agents.values()}


@pytest.mark.parametrize(
    ("handoff", "expected"),
    [
        # A message's task also runs the short stages after it: a slot per stage it holds.
        (True, {"dispatcher": 32, "parse": 24, "compile": 16, "codegen": 8}),
        (False, {"dispatcher": 8, "parse": 8, "compile": 8, "codegen": 8}),
    ],
)
def test_agents_that_hand_off_have_a_slot_for_every_stage_they_run(
    tmp_path: Path, handoff: bool, expected: dict[str, int]
) -> None:
    found = concurrency(tmp_path, handoff)
    assert {
        name: found[f"stage-{name}" if name != "dispatcher" else name] for name in expected
    } == expected
    assert found["stage-execute"] == found["stage-train"] == 8
