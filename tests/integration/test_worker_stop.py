"""A worker asked to stop after its broker is gone still exits, within its grace."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.launcher import Launcher, prepare
from streams.stack import EmbeddedBroker
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

GRACE_S = 3.0


def test_a_worker_stopped_with_its_broker_gone_exits_within_its_grace(
    stack: RunningStack, tmp_path: Path
) -> None:
    # A broker of its own: this test kills it.
    broker = EmbeddedBroker(tmp_path / "broker.log")
    broker.start()
    try:
        settings = stack.isolated(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            state_dir=tmp_path,
            stop_grace_s=GRACE_S,
            enabled_stages=("parse", "compile", "codegen"),
        )
        asyncio.run(prepare(settings))
        env = Launcher(settings).child_env()
        with (tmp_path / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 90
            while not settings.worker_ready_file(worker.pid).exists():
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker never joined its group"
                time.sleep(0.2)
            broker.stop()
            worker.send_signal(signal.SIGINT)
            # Its stop waits on the broker, then gives up at the grace: not forever.
            assert worker.wait(GRACE_S + 20) != 0
            assert "exiting now" in (tmp_path / "worker.log").read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    finally:
        broker.stop()
