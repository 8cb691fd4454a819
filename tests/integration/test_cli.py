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
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    watch = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "watch", job_id, "--api", pipeline.api_url],
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
        assert watch.wait(timeout=60) == 0
    finally:
        os.close(controller)
        watch.kill()
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())  # without its colours
    for stage in ("parse", "compile", "codegen"):
        assert re.search(rf"✓ {stage} +━+ 100% ", text), text
    assert "✓ job SUCCEEDED" in text
    assert "StageChanged" not in text  # not the lines a pipe gets


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


def test_submit_refused_by_the_api_prints_the_error(restricted: Pipeline) -> None:
    done = stagecast(
        "submit", str(EXAMPLES / "tiny.neural"), "--stages", "train", "--api", restricted.api_url
    )
    assert done.returncode == 1
    assert json.loads(done.stderr)["error_code"] == "STAGE_UNAVAILABLE"


def test_bad_settings_are_reported_clearly() -> None:
    env = dict(os.environ, STAGECAST_PARTITIONS="many")
    done = stagecast("api", env=env)
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "partitions" in done.stderr


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


def test_submit_and_watch_without_an_api_say_how_to_start_one(no_api: str) -> None:
    expected = f"stagecast: no API at {no_api} — start one with 'stagecast up' or pass --api URL"
    submitted = stagecast("submit", str(EXAMPLES / "tiny.neural"), "--api", no_api)
    watched = stagecast("watch", str(uuid.uuid4()), "--api", no_api)
    for done in (submitted, watched):
        assert done.returncode == 1
        assert one_line(done) == expected


def test_with_no_stack_running_the_default_api_is_named(tmp_path: Path) -> None:
    port = free_port()
    env = dict(
        os.environ,
        STAGECAST_STATE_DIR=str(tmp_path),
        STAGECAST_API_HOST="127.0.0.1",
        STAGECAST_API_PORT=str(port),
    )
    done = stagecast("watch", str(uuid.uuid4()), env=env)
    assert done.returncode == 1
    assert one_line(done).startswith(f"stagecast: no API at http://127.0.0.1:{port} — ")


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
    assert one_line(done) == "stagecast: --api localhost:8787 is not an http:// or https:// URL"


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (
            ("not-a-job",),
            "400 INVALID_JOB_ID: job id must be a UUID — check the job id ('stagecast submit' "
            "prints it)",
        ),
        (
            ("0d6c3a43-52a8-4e8c-b7b8-0e0a1f4f7d21",),
            "404 JOB_NOT_FOUND: no such job (yet) — check the job id ('stagecast submit' prints "
            "it)",
        ),
        (
            (str(uuid.uuid4()), "--last-event-id", "-1"),
            "400 INVALID_LAST_EVENT_ID: Last-Event-ID must be a seq: an integer from 0 to 2^63-1 "
            "— pass --last-event-id a seq that an earlier watch printed",
        ),
    ],
    ids=["not-a-uuid", "unknown-job", "negative-last-event-id"],
)
def test_watch_refused_by_the_api_says_why_in_one_line(
    pipeline: Pipeline, args: tuple[str, ...], answer: str
) -> None:
    done = stagecast("watch", *args, "--api", pipeline.api_url)
    assert done.returncode == 1
    assert one_line(done) == f"stagecast: the API answered {answer}"


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
            f"stagecast: cannot read {path}: {reason} — pass the path of a .neural file"
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
