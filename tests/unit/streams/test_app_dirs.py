from pathlib import Path

import pytest

from streams.app import build_app
from streams.settings import Settings


@pytest.mark.parametrize("folder", ["state", "state {with} braces"])
def test_faust_keeps_its_directory_in_the_state_directory(tmp_path: Path, folder: str) -> None:
    state = tmp_path / folder
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers="127.0.0.1:9",
        state_dir=state,
        app_id="stagecast-t",
        enabled_stages=(),
    )
    app = build_app(settings, stages={}, dispatcher=False)
    assert app.conf.datadir == state.resolve() / "stagecast-t-faust"
