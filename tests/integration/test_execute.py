"""The execute stage through the whole pipeline: sandboxed programs, streamed output, cancel."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.client import StagecastClient
from tests.conftest import EXAMPLES, Pipeline

pytestmark = pytest.mark.integration

MODELS = sorted(path.stem for path in EXAMPLES.glob("*.neural"))
TINY = (EXAMPLES / "tiny.neural").read_text()


async def run(
    pipeline: Pipeline, code: str, language: str = "python", limits: dict[str, int] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """Submit a CODE job, follow it to its end; its feed and its execute stage's last change."""
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(kind="CODE", code=code, language=language, limits=limits)
        feed = [event async for event in client.events(accepted["job_id"])]
    changes = [e.data for e in feed if e.type == "StageChanged" and e.data["stage"] == "execute"]
    return feed, changes[-1]


def logs(feed: list[Any]) -> list[str]:
    return [event.data["message"] for event in feed if event.type == "LogEmitted"]


async def test_a_program_runs_with_its_stdin_and_every_line_of_output_in_order(
    pipeline: Pipeline,
) -> None:
    code = "import sys\nfor i in range(5):\n    print(i)\nprint('err', file=sys.stderr)\n"
    code += "print(sys.stdin.read().strip().upper())"
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(kind="CODE", code=code, stdin="hello\n")
        feed = [event async for event in client.events(accepted["job_id"])]
    lines = [(e.data["stream"], e.data["message"]) for e in feed if e.type == "LogEmitted"]
    assert [text for stream, text in lines if stream == "stdout"] == [
        "0",
        "1",
        "2",
        "3",
        "4",
        "HELLO",
    ]
    assert [text for stream, text in lines if stream == "stderr"] == ["err"]
    assert feed[-1].type == "JobFinished" and feed[-1].data["status"] == "SUCCEEDED"
    finished = next(
        e.data for e in feed if e.type == "StageChanged" and e.data["status"] == "SUCCEEDED"
    )
    assert finished["stage"] == "execute"


@pytest.mark.parametrize(
    ("language", "code", "said"),
    [
        ("c", '#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 0; }', "42"),
        ("javascript", "console.log(6 * 7)", "42"),
        ("python", "print(6 * 7)", "42"),
    ],
)
async def test_each_language_runs(pipeline: Pipeline, language: str, code: str, said: str) -> None:
    feed, changed = await run(pipeline, code, language)
    assert changed["status"] == "SUCCEEDED", changed
    assert logs(feed) == [said]


async def test_a_c_program_that_does_not_compile_is_a_compile_error_with_gccs_words(
    pipeline: Pipeline,
) -> None:
    feed, changed = await run(pipeline, "int main(void) { return nope; }", "c")
    assert changed["status"] == "FAILED"
    assert changed["error"]["code"] == "COMPILE_ERROR"
    assert any("nope" in line for line in logs(feed))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that counts who connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


HOSTILE = {
    "fork bomb": ("import os\nwhile True:\n    os.fork()", {"processes": 16}, "PROCESS_LIMIT"),
    "10 GB": ("b = bytearray(10 * 1024**3)\nb[::4096] = b'x' * len(b[::4096])", {}, "MEMORY_LIMIT"),
    "busy loop": ("while True:\n    pass", {"cpu_seconds": 1}, "CPU_LIMIT"),
    "sleep forever": ("import time\ntime.sleep(10**6)", {"timeout_seconds": 2}, "TIME_LIMIT"),
    "1 GB of output": ("while True:\n    print('x' * 1000)", {"output_kib": 256}, "OUTPUT_LIMIT"),
    "2 GB file": (
        "with open('big', 'wb') as f:\n    for _ in range(2048):\n        f.write(b'x' * 2**20)",
        {},
        "OUTPUT_LIMIT",
    ),
    # The stack's state directory holds the database password; the sandbox does not see it.
    "read outside": ("print(open('{state}/pg.password').read())", {}, "NONZERO_EXIT"),
    "kill parent": ("import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\nprint('alive')", {}, None),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_programs_end_with_their_own_code_and_the_worker_serves_on(
    pipeline: Pipeline, name: str
) -> None:
    code, limits, expected = HOSTILE[name]
    assert (pipeline.launcher.state_dir / "pg.password").exists()
    code = code.replace("{state}", str(pipeline.launcher.state_dir.resolve()))
    limits = {"timeout_seconds": 20} | limits
    feed, changed = await run(pipeline, code, limits=limits)
    if expected is None:
        assert changed["status"] in ("SUCCEEDED", "FAILED")
    else:
        assert changed["status"] == "FAILED"
        assert changed["error"]["code"] == expected, changed["error"]
    assert not any("postgres" in line for line in logs(feed))
    after, still = await run(pipeline, "print('still serving')")
    assert still["status"] == "SUCCEEDED"
    assert logs(after) == ["still serving"]


async def test_a_connect_to_a_loopback_port_fails_inside_the_sandbox(
    pipeline: Pipeline, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "print('connected')"
    )
    feed, changed = await run(pipeline, code)
    assert changed["status"] == "FAILED"
    assert changed["error"]["code"] == "NONZERO_EXIT"
    assert "connected" not in logs(feed)
    with pytest.raises(BlockingIOError):
        listener.accept()


async def test_lines_reach_the_feed_while_the_program_runs(pipeline: Pipeline) -> None:
    code = "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.02)"
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(kind="CODE", code=code)
        first_line_at = ended_at = None
        async for event in client.events(accepted["job_id"]):
            if event.type == "LogEmitted" and first_line_at is None:
                first_line_at = time.monotonic()
            if event.type == "StageChanged" and event.data["status"] != "STARTED":
                ended_at = time.monotonic()
                changed = event.data
    assert changed["status"] == "SUCCEEDED"
    assert first_line_at is not None and ended_at is not None
    # The program takes 2 s; its first line arrived long before it ended.
    assert ended_at - first_line_at > 1.0


async def test_cancel_kills_a_running_program_within_two_seconds(pipeline: Pipeline) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(600)"
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(kind="CODE", code=code, limits={"timeout_seconds": 120})
        sent_at = None
        async for event in client.events(accepted["job_id"]):
            if event.type == "LogEmitted" and sent_at is None:
                sent_at = time.monotonic()
                await client.cancel(accepted["job_id"], "taking too long")
            if event.type == "StageChanged" and event.data["status"] != "STARTED":
                stopped_at, changed = time.monotonic(), event.data
            if event.type == "JobFinished":
                finished = event.data
        view = await client.job(accepted["job_id"])
    assert sent_at is not None
    assert changed["status"] == "CANCELLED"
    assert stopped_at - sent_at < 2.0
    assert finished["status"] == "CANCELLED"
    assert finished["error"]["message"] == "taking too long"
    assert view["status"] == "CANCELLED"
    assert [s["status"] for s in view["stages"] if s["stage"] == "execute"] == ["CANCELLED"]


@pytest.mark.parametrize("target", ["pytorch", "tensorflow"])
@pytest.mark.parametrize("name", MODELS)
async def test_every_example_model_runs_with_the_output_shape_compile_gave(
    pipeline: Pipeline, name: str, target: str
) -> None:
    dsl = (EXAMPLES / f"{name}.neural").read_text()
    async with StagecastClient(pipeline.api_url) as client:
        accepted = await client.submit(dsl, stages=["execute"], target=target)
        feed = [event async for event in client.events(accepted["job_id"])]
    succeeded = {
        e.data["stage"]: e.data
        for e in feed
        if e.type == "StageChanged" and e.data["status"] != "STARTED"
    }
    assert feed[-1].data["status"] == "SUCCEEDED", succeeded
    compiled = json.loads(succeeded["compile"]["summary"])
    executed = json.loads(succeeded["execute"]["summary"])
    assert executed["output_shape"] == compiled["output_shape"]
    assert executed["ms_per_batch"] > 0 and executed["peak_rss_kib"] > 0
    assert executed["target"] == target


async def test_limits_above_the_deployment_maxima_are_refused(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        response = await http.post(
            "/jobs",
            json={"kind": "CODE", "code": "print(1)", "limits": {"timeout_seconds": 86_400}},
        )
    assert response.status_code == 422
    assert response.json()["error_code"] == "LIMIT_TOO_HIGH"


async def test_ready_says_which_protections_the_workers_runs_have(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url) as http:
        ready = (await http.get("/ready")).json()
    workers = ready["execute"]
    assert workers, ready
    assert all(w["confined"] for w in workers)
    assert workers[0]["protections"]["network"] == "isolated"
    assert workers[0]["toolchains"] == {"python": True, "c": True, "javascript": True}
