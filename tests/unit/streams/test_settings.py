"""Settings: read from the environment, validated, topics derived from the prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_a_copy_with_another_prefix_names_other_topics() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.topics.events == "stagecast.events"
    copy = settings.model_copy(update={"topic_prefix": "other"})
    assert copy.topics.events == "other.events"
    assert copy.topics.stage("parse") == "other.stage.parse"


def test_environment_sets_stages_and_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECAST_ENABLED_STAGES", "parse, compile")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.enabled_stages == ("parse", "compile")
    assert settings.require_kafka() == "kafka:9092"
    assert settings.require_database() == "postgresql://db/x"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STAGECAST_ENABLED_STAGES", "parse,deploy"),
        ("STAGECAST_PARTITIONS", "0"),
        ("STAGECAST_LOG_LEVEL", "LOUD"),
        ("STAGECAST_API_PORT", "99999"),
        ("STAGECAST_WORKERS", "0"),
        ("STAGECAST_FETCH_BUSY_WAIT_MS", "0"),
        ("STAGECAST_FETCH_BACKGROUND_WAIT_MS", "0"),
        ("STAGECAST_FETCH_BACKGROUND_WAIT_MS", "soon"),
        ("STAGECAST_HANDOFF", "sometimes"),
        ("STAGECAST_STOP_GRACE_S", "0"),
        ("STAGECAST_STOP_GRACE_S", "forever"),
    ],
)
def test_bad_values_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert variable.removeprefix("STAGECAST_").lower() in str(caught.value)


def test_missing_servers_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="KAFKA_BOOTSTRAP_SERVERS"):
        settings.require_kafka()
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        settings.require_database()


def test_real_cluster_defaults_are_kafkas_and_the_group_follows_the_prefix() -> None:
    settings = Settings(_env_file=None, topic_prefix="team-a")  # type: ignore[call-arg]
    assert settings.session_timeout_s == 45.0
    assert settings.fetch_max_wait_ms == 500
    # A real broker answers a fetch as soon as data arrives: no shorter wait while busy.
    assert settings.fetch_busy_wait_ms is None
    assert settings.fetch_background_wait_ms == 500
    assert settings.app_id == "team-a"
    named = Settings(_env_file=None, topic_prefix="team-a", app_id="g")  # type: ignore[call-arg]
    assert named.app_id == "g"


def test_the_artifact_root_defaults_to_the_state_directory(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")  # type: ignore[call-arg]
    assert settings.artifact_root() == (tmp_path / "state" / "artifacts").resolve()
    assert settings.artifact_root().is_absolute()


def test_the_artifact_root_comes_from_the_environment_resolved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGECAST_ARTIFACT_DIR", "link")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.artifact_dir == Path("link")
    assert settings.artifact_root() == (tmp_path / "real").resolve()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org", "[::]"])
def test_open_mode_is_refused_off_loopback(host: str) -> None:
    settings = Settings(_env_file=None, api_host=host)  # type: ignore[call-arg]
    problem = settings.exposure_problem()
    assert problem is not None
    assert host in problem and "STAGECAST_AUTH=keys" in problem and "\n" not in problem
    keys = Settings(_env_file=None, api_host=host, auth="keys")  # type: ignore[call-arg]
    assert keys.exposure_problem() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"])
def test_open_mode_serves_on_loopback(host: str) -> None:
    settings = Settings(_env_file=None, api_host=host)  # type: ignore[call-arg]
    assert settings.auth == "open"
    assert settings.exposure_problem() is None


def test_cors_origins_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECAST_CORS_ORIGINS", "https://app.example, http://localhost:5173")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ("https://app.example", "http://localhost:5173")
    monkeypatch.delenv("STAGECAST_CORS_ORIGINS")
    assert Settings(_env_file=None).cors_origins == ()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STAGECAST_CORS_ORIGINS", "*"),
        ("STAGECAST_CORS_ORIGINS", "https://app.example/"),
        ("STAGECAST_CORS_ORIGINS", "app.example"),
        ("STAGECAST_CORS_ORIGINS", "ftp://app.example"),
        ("STAGECAST_AUTH", "none"),
        ("STAGECAST_KEY_RATE_PER_MINUTE", "0"),
        ("STAGECAST_KEY_RECHECK_S", "0"),
        ("STAGECAST_KEY_RECHECK_S", "soon"),
    ],
)
def test_bad_auth_and_cors_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]
