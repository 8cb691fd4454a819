"""The `stagecast` command against the running pipeline, as a person would type it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from api.client import StagecastClient
from streams.launcher import Launcher
from streams.settings import Settings
from streams.stack import free_port
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone

pytestmark = pytest.mark.integration


def stagecast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_submit_and_wait_prints_the_job_and_its_events(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "iris_mlp.neural"), "--wait", "--api", pipeline.api_url
    )
    assert done.returncode == 0, done.stderr
    accepted, _ = json.JSONDecoder().raw_decode(done.stdout)
    assert accepted["status"] == "QUEUED"
    assert "StageChanged" in done.stdout
    assert '"status": "SUCCEEDED"' in done.stdout.splitlines()[-1]

    watched = stagecast("watch", accepted["job_id"], "--api", pipeline.api_url)
    assert watched.returncode == 0
    assert watched.stdout.count("StageChanged") == 6
    resumed = stagecast(
        "watch", accepted["job_id"], "--api", pipeline.api_url, "--last-event-id", "0"
    )
    assert resumed.stdout == watched.stdout


def submitted(pipeline: Pipeline, example: Path) -> str:
    """The id of a job for `example` that has ended."""
    done = stagecast("submit", str(example), "--wait", "--api", pipeline.api_url)
    accepted, _ = json.JSONDecoder().raw_decode(done.stdout)
    return str(accepted["job_id"])


@pytest.mark.parametrize(
    ("example", "status", "exit_code"),
    [("tiny.neural", "SUCCEEDED", 0), ("invalid/unknown_layer.neural", "FAILED", 1)],
    ids=["succeeded", "failed"],
)
def test_watch_json_prints_each_event_as_one_json_object_per_line(
    pipeline: Pipeline, example: str, status: str, exit_code: int
) -> None:
    job_id = submitted(pipeline, EXAMPLES / example)
    watched = stagecast("watch", job_id, "--json", "--api", pipeline.api_url)
    assert watched.returncode == exit_code, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert all(set(event) == {"seq", "type", "data"} for event in events)
    assert all(event["data"]["job_id"] == job_id for event in events)
    assert events[0]["type"] == "JobAccepted"
    assert (events[-1]["type"], events[-1]["data"]["status"]) == ("JobFinished", status)
    # The same events, in the same order, as the plain lines name them.
    plain = stagecast("watch", job_id, "--api", pipeline.api_url)
    named = [line.split()[:2] for line in plain.stdout.splitlines()]
    assert named == [[str(event["seq"]), event["type"]] for event in events]


def test_watch_on_a_terminal_draws_progress_bars(pipeline: Pipeline) -> None:
    job_id = submitted(pipeline, EXAMPLES / "tiny.neural")
    text = watched_on_a_terminal(pipeline.api_url, job_id)
    for stage in ("parse", "compile", "codegen"):
        assert re.search(rf"✓ {stage} +━+ 100% ", text), text
    assert "✓ job SUCCEEDED" in text
    assert "StageChanged" not in text  # not the lines a pipe gets


def test_watch_on_a_terminal_draws_the_epoch_of_a_training(pipeline: Pipeline) -> None:
    iris = (EXAMPLES / "iris_mlp.neural").read_text()
    body = {"dsl": iris, "stages": ["train"], "train": {"epochs": 3, "seed": 1}}
    accepted = httpx.post(f"{pipeline.api_url}/jobs", json=body, timeout=10)
    assert accepted.status_code == 202, accepted.text
    text = watched_on_a_terminal(pipeline.api_url, accepted.json()["job_id"])
    assert re.search(r"✓ train +━+ 100% ", text), text
    # The epoch bar as it ended: the last epoch, all its steps, its loss, ETA and speed.
    assert re.search(r"✓   epoch 3/3 +━+ 100% \S+ loss \d\.\d{4}  ETA 0 s  \d+ samples/s", text), (
        text
    )
    assert re.search(r"epoch 3  loss \d\.\d{4}", text), text  # its metrics, printed above
    assert "✓ job SUCCEEDED" in text


def watched_on_a_terminal(api_url: str, job_id: str) -> str:
    """What `stagecast watch` showed on a 100-column terminal, without its colours."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    watch = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "watch", job_id, "--api", api_url],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=dict(os.environ, TERM="xterm-256color"),
    )
    os.close(terminal)
    shown = b""
    try:
        while chunk := _read(controller):
            shown += chunk
        assert watch.wait(timeout=120) == 0
    finally:
        os.close(controller)
        watch.kill()
    return re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())


def _read(fd: int) -> bytes:
    """What the terminal shows next; b"" once the program has closed it."""
    try:
        return os.read(fd, 65536)
    except OSError as error:  # EIO: every process holding the terminal has closed it
        if error.errno == errno.EIO:
            return b""
        raise


def test_submit_of_an_invalid_model_exits_non_zero(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit",
        str(EXAMPLES / "invalid" / "unknown_layer.neural"),
        "--wait",
        "--api",
        pipeline.api_url,
    )
    assert done.returncode == 1
    assert "DSL_UNKNOWN_LAYER" in done.stdout
    job_id = json.JSONDecoder().raw_decode(done.stdout)[0]["job_id"]
    assert one_line(done) == (
        f"error: DSL_UNKNOWN_LAYER: job {job_id} FAILED: unknown layer 'Conv2d'"
    )


def test_submit_refused_by_the_api_prints_the_error(restricted: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "tiny.neural"), "--stages", "train", "--api", restricted.api_url
    )
    assert done.returncode == 4
    assert one_line(done).startswith("error: STAGE_UNAVAILABLE: the API answered 422: ")


def test_bad_settings_are_reported_clearly() -> None:
    env = dict(os.environ, STAGECAST_PARTITIONS="many")
    done = stagecast("api", env=env)
    assert done.returncode == 2
    assert one_line(done) == (
        "error: INVALID_SETTINGS: invalid settings: partitions: Input should be a valid integer, "
        "unable to parse string as an integer — fix the environment variable "
        "(STAGECAST_<NAME>) or .env"
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr, with no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def no_api() -> str:
    """A URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def test_submit_watch_and_cancel_without_an_api_say_how_to_start_one(no_api: str) -> None:
    expected = (
        f"error: API_UNREACHABLE: no API at {no_api} — start one with 'stagecast up' or pass "
        "--api URL"
    )
    submitted = stagecast("submit", str(EXAMPLES / "tiny.neural"), "--api", no_api)
    watched = stagecast("watch", str(uuid.uuid4()), "--api", no_api)
    cancelled = stagecast("cancel", str(uuid.uuid4()), "--json", "--api", no_api)
    demo = stagecast("demo", "--api", no_api)
    for done in (submitted, watched, cancelled, demo):
        assert done.returncode == 3
        assert one_line(done) == expected
        assert done.stdout == ""


def test_with_no_stack_running_the_default_api_is_named(tmp_path: Path) -> None:
    port = free_port()
    env = dict(
        os.environ,
        STAGECAST_STATE_DIR=str(tmp_path),
        STAGECAST_API_HOST="127.0.0.1",
        STAGECAST_API_PORT=str(port),
    )
    done = stagecast("watch", str(uuid.uuid4()), env=env)
    assert done.returncode == 3
    assert one_line(done).startswith(
        f"error: API_UNREACHABLE: no API at http://127.0.0.1:{port} — "
    )


def test_debug_shows_the_traceback(no_api: str) -> None:
    done = stagecast("--debug", "watch", str(uuid.uuid4()), "--api", no_api)
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "httpx.ConnectError" in done.stderr


async def test_a_first_feed_connection_that_fails_is_not_retried(no_api: str) -> None:
    """Nothing to resume: the client does not spend its reconnect backoff (seconds) on it."""
    started = time.monotonic()
    async with StagecastClient(no_api) as client:
        with pytest.raises(httpx.ConnectError):
            _ = [event async for event in client.events(str(uuid.uuid4()))]
    assert time.monotonic() - started < 1.0


def test_a_bad_api_url_is_a_usage_error() -> None:
    done = stagecast("watch", str(uuid.uuid4()), "--api", "localhost:8787")
    assert done.returncode == 2
    assert one_line(done) == (
        "error: INVALID_API_URL: --api localhost:8787 is not an http:// or https:// URL — "
        "pass --api http://HOST:PORT"
    )


@pytest.mark.parametrize(
    ("args", "exit_code", "answer"),
    [
        (
            ("not-a-job",),
            4,
            "INVALID_JOB_ID: the API answered 400: job id must be a UUID — check the job id "
            "('stagecast submit' prints it)",
        ),
        (
            ("0d6c3a43-52a8-4e8c-b7b8-0e0a1f4f7d21",),
            5,
            # (watch: "no such job (yet)", cancel: "no such job")
            "JOB_NOT_FOUND: the API answered 404: no such job",
        ),
        (
            (str(uuid.uuid4()), "--last-event-id", "-1"),
            4,
            "INVALID_LAST_EVENT_ID: the API answered 400: Last-Event-ID must be a seq: an "
            "integer from 0 to 2^63-1 — pass --last-event-id a seq that an earlier watch printed",
        ),
    ],
    ids=["not-a-uuid", "unknown-job", "negative-last-event-id"],
)
@pytest.mark.parametrize("command", ["watch", "cancel"])
def test_watch_and_cancel_refused_by_the_api_say_why_in_one_line(
    pipeline: Pipeline, command: str, args: tuple[str, ...], exit_code: int, answer: str
) -> None:
    if command == "cancel" and "--last-event-id" in args:
        args = (args[0], "--reason", "x" * 501)  # longer than a reason may be
        exit_code, answer = 4, "VALIDATION_FAILED: the API answered 422: "
    done = stagecast(command, *args, "--api", pipeline.api_url)
    assert done.returncode == exit_code
    assert one_line(done).startswith(f"error: {answer}")


def test_submit_of_a_file_it_cannot_read_is_a_usage_error(tmp_path: Path, no_api: str) -> None:
    binary = tmp_path / "model.neural"
    binary.write_bytes(b"\xffnetwork")
    cases = [
        (tmp_path / "missing.neural", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (binary, "not UTF-8 text (byte 0xff at 0)"),
    ]
    for path, reason in cases:
        done = stagecast("submit", str(path), "--api", no_api)
        assert done.returncode == 2
        assert one_line(done) == (
            f"error: FILE_UNREADABLE: cannot read {path}: {reason} — pass a .neural file"
        )


@pytest.fixture(scope="module")
def lone_api(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API with nothing behind it: its jobs stay queued and their feeds idle."""
    with api_alone(stack.isolated(), tmp_path_factory.mktemp("lone-api")) as launcher:
        yield launcher


def test_ctrl_c_stops_watch_without_a_traceback(lone_api: Launcher) -> None:
    tiny = (EXAMPLES / "tiny.neural").read_text()
    accepted = httpx.post(f"{lone_api.api_url}/jobs", json={"dsl": tiny}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    port = int(lone_api.api_url.rsplit(":", 1)[1])
    watch = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "watch", job_id, "--api", lone_api.api_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_connected(watch.pid, port)
        watch.send_signal(signal.SIGINT)
        _, stderr = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 130
    assert stderr == ""


def _wait_until_connected(pid: int, port: int, timeout: float = 30.0) -> None:
    """Until process `pid` holds a connection to `port` (it is following the feed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connections = psutil.Process(pid).net_connections(kind="tcp")
        if any(c.raddr and c.raddr.port == port for c in connections):
            return
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} did not connect to port {port}")


@pytest.mark.parametrize(
    "args",
    [
        ("bogus",),
        ("submit",),
        ("submit", "model.neural", "--stages", "nowhere"),
        ("submit", "model.neural", "--wait", "--timeout", "soon"),
        ("watch",),
        ("watch", "job", "--last-event-id", "latest"),
        ("watch", "job", "--timeout", "0"),
        ("cancel",),
        ("replay", "--source", "tape"),
        ("replay", "--into", "x", "--from", "yesterday"),
        ("audit",),
        ("audit", "job"),
        ("up", "--verbose"),
        ("up", "--workers", "0"),
        ("up", "--workers", "three"),
        ("prepare", "--topics"),
        ("worker", "--dispatcher"),
        ("projector", "--standby"),
        ("webhooks", "--url", "http://x/"),
        ("api", "--port", "80"),
        ("demo", "--fast"),
    ],
    ids=lambda args: "-".join(args),
)
def test_bad_arguments_are_one_line_and_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    env = dict(os.environ, STAGECAST_STATE_DIR=str(tmp_path), DATABASE_URL="postgresql://x/y")
    done = stagecast(*args, env=env)
    assert done.returncode == 2
    assert one_line(done).startswith(("error: INVALID_ARGUMENT: ", "error: NO_SERVERS: "))
    assert done.stdout == ""


def test_submit_json_prints_the_answer_then_each_event_as_json_lines(pipeline: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "tiny.neural"), "--wait", "--json", "--api", pipeline.api_url
    )
    assert done.returncode == 0, done.stderr
    answer, *events = [json.loads(line) for line in done.stdout.splitlines()]
    assert answer["status"] == "QUEUED" and answer["stages"] == ["parse", "compile", "codegen"]
    assert [event["type"] for event in (events[0], events[-1])] == ["JobAccepted", "JobFinished"]
    assert all(event["data"]["job_id"] == answer["job_id"] for event in events)
    alone = stagecast("submit", str(EXAMPLES / "tiny.neural"), "--json", "--api", pipeline.api_url)
    assert len(alone.stdout.splitlines()) == 1
    assert json.loads(alone.stdout)["status"] == "QUEUED"


def test_cancel_json_prints_the_answer(lone_api: Launcher) -> None:
    job_id = _queued(lone_api)
    done = stagecast("cancel", job_id, "--reason", "test", "--json", "--api", lone_api.api_url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["job_id"], answer["status"]) == (job_id, "CANCELLING")
    plain = stagecast("cancel", job_id, "--api", lone_api.api_url)
    assert plain.stdout == f"cancelling {job_id}; follow it with 'stagecast watch {job_id}'\n"


def _queued(api: Launcher) -> str:
    """A job the lone API accepted: it stays queued."""
    tiny = (EXAMPLES / "tiny.neural").read_text()
    accepted = httpx.post(f"{api.api_url}/jobs", json={"dsl": tiny}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["job_id"])


def test_watch_and_submit_wait_give_up_after_their_timeout(lone_api: Launcher) -> None:
    job_id = _queued(lone_api)
    watched = stagecast("watch", job_id, "--timeout", "1.5", "--api", lone_api.api_url)
    waited = stagecast(
        "submit", str(EXAMPLES / "tiny.neural"), "--wait", "--timeout", "1.5", "--json",
        "--api", lone_api.api_url,
    )  # fmt: skip
    waited_for = json.loads(waited.stdout.splitlines()[0])["job_id"]
    for done, job in ((watched, job_id), (waited, waited_for)):
        assert done.returncode == 7
        assert one_line(done) == (
            f"error: WAIT_TIMEOUT: job {job} had not ended after 1.5 s — it goes on; follow it "
            f"with 'stagecast watch {job}'"
        )


def servers_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    """The environment of a command that uses `settings`' broker, topics and database."""
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=settings.require_kafka(),
        DATABASE_URL=settings.require_database(),
        STAGECAST_TOPIC_PREFIX=settings.topic_prefix,
        STAGECAST_APP_ID=settings.app_id,
        STAGECAST_STATE_DIR=str(state_dir),
    )


def test_prepare_creates_the_topics_and_migrates(stack: RunningStack, tmp_path: Path) -> None:
    prefix = f"prep_{uuid.uuid4().hex[:8]}"
    env = servers_env(stack.settings.model_copy(update={"topic_prefix": prefix}), tmp_path)
    env.update(STAGECAST_TOPIC_PREFIX=prefix, STAGECAST_PARTITIONS="3")
    first = stagecast("prepare", "--json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["topics"][f"{prefix}.requests"] == 3
    assert report["topics"][f"{prefix}.stage.train"] == 4
    assert report["topics"][f"{prefix}.control"] == 1
    assert sorted(report["created"]) == sorted(report["topics"]) and len(report["topics"]) == 10
    again = stagecast("prepare", env=env)
    assert again.returncode == 0, again.stderr
    assert "(created)" not in again.stdout
    assert again.stdout.endswith("topics ready, database migrated\n")


def test_commands_on_servers_that_do_not_answer_say_so(tmp_path: Path) -> None:
    nothing = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        STAGECAST_STATE_DIR=str(tmp_path),
        KAFKA_BOOTSTRAP_SERVERS=nothing,
        DATABASE_URL=f"postgresql://stagecast@{nothing}/stagecast",
    )
    audited = stagecast("audit", "verify", "--json", env=env)
    assert audited.returncode == 3
    assert one_line(audited).startswith("error: DATABASE_UNREACHABLE: cannot reach the database: ")
    for args in (("prepare",), ("replay", "--into", "nowhere", "--json")):
        done = stagecast(*args, env=env)
        assert done.returncode == 3, done.stderr
        assert one_line(done).startswith("error: SERVERS_UNREACHABLE: ")
        assert done.stdout == ""


def test_audit_job_of_a_malformed_or_unknown_id(pipeline: Pipeline, tmp_path: Path) -> None:
    env = servers_env(pipeline.settings, tmp_path)
    malformed = stagecast("audit", "job", "nope", "--json", env=env)
    assert malformed.returncode == 2
    assert one_line(malformed).startswith("error: INVALID_JOB_ID: not a job id: 'nope' — ")
    unknown = str(uuid.uuid4())
    done = stagecast("audit", "job", unknown, "--json", env=env)
    assert done.returncode == 5
    assert one_line(done) == f"error: JOB_NOT_FOUND: job {unknown} has no archived events"


def test_replay_json_and_republish_on_an_empty_stack(stack: RunningStack, tmp_path: Path) -> None:
    env = servers_env(stack.isolated(), tmp_path)
    done = stagecast("replay", "--into", "cli_json", "--compare", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["schema"], report["source"], report["events"]) == ("cli_json", "kafka", 0)
    assert report["same"] is True
    assert {table["table"] for table in report["tables"]} >= {"jobs", "job_events"}
    for force in ((), ("--force",)):
        refused = stagecast("replay", "--republish", *force, "--json", env=env)
        assert refused.returncode == 4
        assert one_line(refused) == (
            "error: REPUBLISH_REFUSED: the archive is empty: there is nothing to republish"
        )
        assert refused.stdout == ""
    bad_schema = stagecast("replay", "--into", "public", env=env)
    assert bad_schema.returncode == 2
    assert one_line(bad_schema).startswith("error: INVALID_SCHEMA: ")


def test_up_json_prints_where_everything_is(stack: RunningStack, tmp_path: Path) -> None:
    settings = stack.isolated()
    env = servers_env(settings, tmp_path)
    # The embedded broker answers JoinGroup after half the session timeout.
    env.update(
        STAGECAST_API_PORT="0", STAGECAST_SESSION_TIMEOUT_S="6", STAGECAST_FETCH_MAX_WAIT_MS="10"
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        info = json.loads(up.stdout.readline())
        assert httpx.get(f"{info['api_url']}/ready", timeout=10).status_code == 200
        assert set(info["metrics"]) == {"api", "worker", "projector", "webhooks"}
        assert info["kafka_bootstrap_servers"] == settings.kafka_bootstrap_servers
        assert info["pids"]["broker"] is None  # the configured broker, not an embedded one
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=60)
    finally:
        up.kill()
    assert up.returncode == 0
    assert out == ""  # nothing but the one JSON document
    assert err == "stopping...\n"


def test_watch_after_the_end_of_a_feed_says_it_had_ended(pipeline: Pipeline) -> None:
    job_id = submitted(pipeline, EXAMPLES / "tiny.neural")
    events = stagecast("watch", job_id, "--json", "--api", pipeline.api_url)
    last = json.loads(events.stdout.splitlines()[-1])["seq"]
    after = stagecast("watch", job_id, "--last-event-id", str(last), "--api", pipeline.api_url)
    assert after.returncode == 1
    assert after.stdout == ""
    assert one_line(after) == (
        f"error: FEED_ENDED: job {job_id} has no events after seq {last}: its feed had ended — "
        "watch without --last-event-id to see how it ended"
    )
