"""Starts a whole stack: embedded servers unless external ones are configured, then processes."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from projections.migrate import migrate
from streams.settings import Settings
from streams.stack import (
    EmbeddedBroker,
    EmbeddedDatabase,
    create_database,
    die_with_parent,
    free_port,
    stop_process,
)
from streams.topics import ensure_topics

PROCESSES = ("worker", "projector", "webhooks", "api")
# Tansu answers JoinGroup after half the session timeout (faust's 60 s default means 30 s
# joins) and can hold a multi-partition fetch for its whole max wait (~750 ms a hop measured
# with faust's 1.5 s).
EMBEDDED_SESSION_TIMEOUT_S = 6.0
EMBEDDED_FETCH_MAX_WAIT_MS = 10
# Readers off a job's path (cancels, dead letters, webhooks): a hop of ~100 ms instead of ~3, and
# each idle one costs the broker ~1.5 % of a core instead of ~6 % (measured with one reader).
EMBEDDED_FETCH_BACKGROUND_WAIT_MS = 200


def worker_names(count: int) -> list[str]:
    """The names of a stack's worker processes: `worker`, then `worker-2`, `worker-3`, ..."""
    return ["worker"] + [f"worker-{number}" for number in range(2, count + 1)]


def command_of(name: str) -> str:
    """The CLI command a process of the stack runs: every worker replica runs `worker`."""
    return "worker" if name.startswith("worker") else name


class StackBusy(RuntimeError):
    """Another launcher owns this state directory."""


async def prepare(settings: Settings) -> None:
    """Topics created and migrations applied: what every process expects to find."""
    await ensure_topics(settings)
    await migrate(settings.require_database())


@dataclass
class Launcher:
    """Owns everything a stack started, and stops all of it."""

    settings: Settings
    broker: EmbeddedBroker | None = None
    database: EmbeddedDatabase | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_url: str = ""
    # Each worker's metrics port (two processes cannot serve on one).
    worker_ports: dict[str, int] = field(default_factory=dict)
    _lock: IO[bytes] | None = None

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    def start_servers(self) -> Settings:
        """Start the embedded servers that are not configured externally; return the settings."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._hold_state_dir()
        updates: dict[str, object] = {}
        if not self.settings.kafka_bootstrap_servers:
            self.broker = EmbeddedBroker(self.state_dir / "broker.log")
            self.broker.start()
            updates["kafka_bootstrap_servers"] = self.broker.bootstrap_servers
            given = self.settings.model_fields_set
            if "session_timeout_s" not in given:
                updates["session_timeout_s"] = EMBEDDED_SESSION_TIMEOUT_S
            if "fetch_max_wait_ms" not in given:
                updates["fetch_max_wait_ms"] = EMBEDDED_FETCH_MAX_WAIT_MS
            if "fetch_background_wait_ms" not in given:
                updates["fetch_background_wait_ms"] = EMBEDDED_FETCH_BACKGROUND_WAIT_MS
        if not self.settings.database_url:
            self.database = EmbeddedDatabase(self.state_dir / "pg")
            self.database.start()
            asyncio.run(create_database(self.database.url(), "stagecast"))
            updates["database_url"] = self.database.url("stagecast")
        if not self.settings.api_port:
            updates["api_port"] = free_port(self.settings.api_host)
        # A stack always serves its processes' metrics (README "Observability").
        for port in ("worker_metrics_port", "projector_metrics_port", "webhooks_metrics_port"):
            if not getattr(self.settings, port):
                updates[port] = free_port(self.settings.metrics_host)
        self.settings = self.settings.model_copy(update=updates)
        asyncio.run(prepare(self.settings))
        self.api_url = f"http://{self.settings.api_host}:{self.settings.api_port}"
        return self.settings

    def _worker_port(self, name: str, configured: int) -> int:
        """The first worker serves on the configured port, every replica on one of its own,
        kept across restarts."""
        if name not in self.worker_ports:
            mine = configured if name == "worker" else free_port(self.settings.metrics_host)
            self.worker_ports[name] = mine
        return self.worker_ports[name]

    def _hold_state_dir(self) -> None:
        """One launcher per state directory: a second one would fight over the database files."""
        lock = (self.state_dir / "launcher.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackBusy(f"another stagecast is running from {self.state_dir}") from None
        self._lock = lock

    def child_env(self) -> dict[str, str]:
        """The environment of a child: exactly this launcher's settings."""
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"STAGECAST_{name.upper()}"] = text
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.settings.require_kafka()
        env["DATABASE_URL"] = self.settings.require_database()
        env["STAGECAST_STATE_DIR"] = str(self.state_dir)
        return env

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) one process of the stack, logging to the state directory.

        `name` is a command (`worker`, `api`, ...) or a worker replica (`worker-2`)."""
        env = self.child_env()
        configured = self.settings.worker_metrics_port
        if command_of(name) == "worker" and configured is not None:
            env["STAGECAST_WORKER_METRICS_PORT"] = str(self._worker_port(name, configured))
        log = (self.state_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", command_of(name)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        log.close()
        self.children[name] = proc
        return proc

    def start(self, wait_ready: float = 60.0) -> None:
        self.start_servers()
        for name in self.process_names():
            self.spawn(name)
        self.wait_ready(wait_ready)
        self.write_stack_file()

    def process_names(self) -> list[str]:
        """Every process `start` runs: `settings.workers` workers, then the others."""
        workers = worker_names(self.settings.workers)
        return workers + [name for name in PROCESSES if name != "worker"]

    def wait_ready(self, timeout: float) -> None:
        """Block until the API says the broker and the database answer and every worker joined."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    log = self.state_dir / f"{name}.log"
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
            if self._api_ready() and self._workers_joined():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the stack at {self.api_url} was not ready within {timeout:.0f}s")

    def _api_ready(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        """The worker processes this launcher started, by name."""
        return {name: proc for name, proc in self.children.items() if command_of(name) == "worker"}

    def _workers_joined(self) -> bool:
        # The last worker to join has its partitions only once the group's rebalance with
        # every member ended, so all ready files mean all workers share the partitions.
        return all(
            self.settings.worker_ready_file(proc.pid).exists() for proc in self.workers().values()
        )

    def metrics_urls(self) -> dict[str, str]:
        """Where each process of the stack serves its Prometheus metrics."""
        s = self.settings
        urls = {"api": f"{self.api_url}/metrics"}
        ports: dict[str, int | None] = {
            **(self.worker_ports or {"worker": s.worker_metrics_port}),
            "projector": s.projector_metrics_port,
            "webhooks": s.webhooks_metrics_port,
        }
        for name, port in ports.items():
            if port:
                urls[name] = f"http://{s.metrics_host}:{port}/metrics"
        return urls

    def stack_info(self) -> dict[str, object]:
        """Where everything of the stack is: what stack.json holds (and `up --json` prints)."""
        pids: dict[str, int | None] = {name: proc.pid for name, proc in self.children.items()}
        pids["broker"] = self.broker.pid if self.broker else None
        pids["postgres"] = self.database.pid if self.database else None
        return {
            "api_url": self.api_url,
            "kafka_bootstrap_servers": self.settings.kafka_bootstrap_servers,
            "database_url": self.settings.database_url,
            "metrics": self.metrics_urls(),
            "launcher_pid": os.getpid(),
            "pids": pids,
        }

    def write_stack_file(self) -> None:
        # Replaced in one rename: a reader never sees half a file.
        partial = self.stack_file.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.stack_info(), indent=2))
        partial.replace(self.stack_file)

    def revive(self) -> list[str]:
        """Restart every server and process that died; say what was restarted and why."""
        said = []
        database, broker = self.database, self.broker
        if database is not None and database.exit_code is not None:
            code = database.exit_code
            database.start()
            said.append(f"postgres exited with {code}; restarted (log: {database.log_path})")
        if broker is not None and broker.exit_code is not None:
            code = broker.exit_code
            # The workers go first: with the old log's offsets they would skip work in the new.
            for name in self.workers():
                self._kill(name)
            broker.start()
            asyncio.run(ensure_topics(self.settings))
            said.append(
                f"broker exited with {code}; restarted as generation {broker.cluster_id}, topics "
                f"created again; unfinished jobs are published again (log: {broker.log_path})"
            )
        dead = [
            (name, proc.returncode)
            for name, proc in self.children.items()
            if proc.poll() is not None
        ]
        for name, code in dead:
            self.settings.worker_ready_file(self.children[name].pid).unlink(missing_ok=True)
            self.spawn(name)
            said.append(f"{name} exited with {code}; restarted (log: {self.state_dir}/{name}.log)")
        if said:
            self.write_stack_file()
        return said

    def _kill(self, name: str) -> None:
        proc = self.children.get(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        """Stop the processes, then the servers; nothing it started is left running."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children.values():
            stop_process(proc, signal.SIGTERM, timeout=15.0)
            self.settings.worker_ready_file(proc.pid).unlink(missing_ok=True)
        if self.database is not None:
            self.database.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._lock is not None:
            self.stack_file.unlink(missing_ok=True)
            self._lock.close()
            self._lock = None


def running_stack(state_dir: Path) -> dict[str, object] | None:
    """The stack another `stagecast up` is running from this state directory, if it answers."""
    stack_file = state_dir / "stack.json"
    if not stack_file.exists():
        return None
    info: dict[str, object] = json.loads(stack_file.read_text())
    try:
        if httpx.get(f"{info['api_url']}/ready", timeout=1.0).status_code == 200:
            return info
    except httpx.HTTPError:
        pass
    return None
