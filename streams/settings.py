"""One settings object for every process, read from the environment (or `.env`) and validated."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

STAGES = ("parse", "compile", "codegen", "execute", "train")
# An origin as a browser sends it: scheme, host (a name or an IP address), optional port.
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def is_loopback(host: str) -> bool:
    """Whether an address to bind serves only this machine (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Topics:
    """Topic names, derived from one prefix so several stacks can share a cluster."""

    def __init__(self, prefix: str) -> None:
        self.requests = f"{prefix}.requests"
        self.events = f"{prefix}.events"
        self.progress = f"{prefix}.progress"
        self.control = f"{prefix}.control"
        self.deadletter = f"{prefix}.deadletter"
        self._prefix = prefix

    def stage(self, name: str) -> str:
        return f"{self._prefix}.stage.{name}"

    def all(self) -> list[str]:
        fixed = [self.requests, self.events, self.progress, self.control, self.deadletter]
        return fixed + [self.stage(name) for name in STAGES]


class Settings(BaseSettings):
    """Every knob of stagecast; `STAGECAST_` prefix, plus the standard Kafka/Postgres variables."""

    model_config = SettingsConfigDict(
        env_prefix="STAGECAST_", env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "STAGECAST_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "STAGECAST_DATABASE_URL")
    )
    state_dir: Path = Path(".stagecast")
    # Where workers write artifacts too big to travel inline, and the only place the API serves
    # `file://` artifacts from; `<state_dir>/artifacts` when unset (see artifact_root()).
    artifact_dir: Path | None = None
    # The artifact directory's address for clients, when it is served or mounted elsewhere
    # (`https://artifacts.example/stagecast/`): artifacts then carry that URL, which the API
    # maps back into the directory. Unset: `file://` URIs.
    artifact_url: str | None = Field(default=None, pattern=r"^(https?|file)://[^\s?#]+$")
    topic_prefix: str = Field(default="stagecast", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    stage_partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    # The consumer group; defaults to the topic prefix, so two stacks sharing a cluster
    # never share a group.
    app_id: str = ""
    source: str = "stagecast"
    default_tenant: str = "default"
    # Kafka's own defaults; the launcher shortens both for the embedded broker, which answers
    # JoinGroup after half the session timeout and may hold a fetch for its whole max wait.
    session_timeout_s: float = Field(default=45.0, gt=0)
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=60_000)
    # The wait while messages flow (streams/fetch_pace.py); unset: always fetch_max_wait_ms.
    fetch_busy_wait_ms: int | None = Field(default=None, ge=1, le=60_000)
    # The wait of readers off a job's path: the control feed (cancels), the dead-letter and
    # webhook recorders. Kafka answers as soon as data arrives; the embedded broker polls its
    # log through every wait, so each short-waiting idle reader costs it CPU the jobs need.
    fetch_background_wait_ms: int = Field(default=500, ge=1, le=60_000)
    producer_linger_ms: int = Field(default=0, ge=0, le=1_000)
    agent_concurrency: int = Field(default=8, ge=1, le=256)
    # How long a stopping worker may take before it exits anyway: with its broker gone, faust's
    # shutdown can wait on it forever (a worker whose launcher was killed kept trying for hours).
    stop_grace_s: float = Field(default=30.0, gt=0, le=3600)
    # A worker runs a job's next short stage at once when it reads that command's partition,
    # instead of fetching back what it just published (streams/handoff.py).
    handoff: bool = True
    # Worker processes `stagecast up` runs, all in one consumer group (`app_id`): the group
    # shares each topic's partitions among them, so more than a topic's partitions idle.
    workers: int = Field(default=1, ge=1, le=64)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8787, ge=0, le=65535)
    # Who may use the API (README "Tenants and API keys"). `open`: anyone who can reach it, as
    # any tenant (X-Tenant), so only on a loopback address; `keys`: a Bearer API key per request.
    auth: Literal["open", "keys"] = "open"
    # What `stagecast keys create` gives a key without --rate: requests a minute.
    key_rate_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    # How often an open SSE feed asks again whether its key still holds: a revoked key's feeds
    # end within this long (README "Tenants and API keys").
    key_recheck_s: float = Field(default=10.0, gt=0)
    # Browser origins (`https://app.example:8443`) whose pages may call the API; none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    max_dsl_bytes: int = Field(default=262_144, ge=1)
    max_code_bytes: int = Field(default=262_144, ge=1)
    max_request_bytes: int = Field(default=1_048_576, ge=1)
    # Kafka's default message.max.bytes is 1 MiB; a bigger event could never be delivered.
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # Metrics (README "Observability"): where the worker, the projector and the webhooks process
    # serve /metrics. Unset: not served; 0: any free port (`stagecast up` picks free ports for
    # all three and writes them to stack.json). The API serves GET /metrics on its own port.
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    projector_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    webhooks_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # How often the projector process samples every consumer's lag into `consumer_lag`.
    lag_sample_s: float = Field(default=5.0, gt=0, le=3600)
    projector_batch: int = Field(default=2_000, ge=1)
    projector_linger_ms: int = Field(default=5, ge=0)
    enabled_stages: Annotated[tuple[str, ...], NoDecode] = (
        "parse",
        "compile",
        "codegen",
        "execute",
        "train",
    )
    # The execute stage: programs at once per worker, what a run may use by default and at
    # most (a request asking more is rejected), and for the smoke run of a generated model.
    execute_concurrency: int = Field(default=2, ge=1, le=64)
    execute_wall_s: float = Field(default=10.0, gt=0)
    execute_cpu_s: int = Field(default=10, ge=1)
    execute_memory_mib: int = Field(default=512, ge=16)
    execute_processes: int = Field(default=64, ge=1)
    execute_output_kib: int = Field(default=1024, ge=1)
    execute_max_wall_s: float = Field(default=600.0, gt=0)
    execute_max_cpu_s: int = Field(default=600, ge=1)
    execute_max_memory_mib: int = Field(default=8192, ge=16)
    execute_max_processes: int = Field(default=1024, ge=1)
    execute_max_output_kib: int = Field(default=65_536, ge=1)
    model_wall_s: float = Field(default=180.0, gt=0)
    model_cpu_s: int = Field(default=360, ge=1)
    model_memory_mib: int = Field(default=4096, ge=64)
    model_processes: int = Field(default=512, ge=1)
    # At most this many output lines of one run reach its feed (the rest is counted).
    execute_log_lines: int = Field(default=10_000, ge=1)
    execute_heartbeat_s: float = Field(default=1.0, gt=0)
    # The train stage: a run's defaults (the request's limits apply as for execute), how
    # often it reports progress within an epoch, and where `file:` data sets live.
    train_wall_s: float = Field(default=1800.0, gt=0)
    train_cpu_s: int = Field(default=7200, ge=1)
    train_memory_mib: int = Field(default=4096, ge=64)
    train_processes: int = Field(default=512, ge=1)
    train_file_mib: int = Field(default=1024, ge=1)
    train_progress_every_s: float = Field(default=0.25, gt=0)
    data_dir: Path = Path("data")
    # The stage watchdog fails an attempt that has sent nothing for this long (STAGE_TIMEOUT).
    stage_timeout_s: float = Field(default=120.0, gt=0)
    # An execute or train attempt whose worker died is retried as the next attempt, this many
    # attempts at most; then the job fails WORKER_LOST (streams/attempts.py).
    stage_max_attempts: int = Field(default=3, ge=1, le=100)
    # Refuse to run code where the sandbox lacks a protection, unless this says otherwise.
    allow_unconfined: bool = False
    # Webhooks (projections/webhooks/): attempts per delivery before it is FAILED, the
    # back-off before attempt n+1 (base * 2^(n-1), capped, with jitter), one attempt's
    # time-out, and how many requests are in flight at once, per subscription and in all.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0, le=3600)
    webhook_backoff_max_s: float = Field(default=600.0, gt=0, le=86_400)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_subscription_concurrency: int = Field(default=4, ge=1, le=64)
    webhook_concurrency: int = Field(default=64, ge=1, le=1024)
    log_level: str = "INFO"

    @field_validator("enabled_stages", "cors_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("enabled_stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [origin for origin in value if not _ORIGIN.fullmatch(origin)]
        if bad:
            raise ValueError(f"{bad} are not origins: scheme://host[:port], no path, no wildcard")
        return value

    @model_validator(mode="after")
    def _group_from_prefix(self) -> Settings:
        if not self.app_id:
            object.__setattr__(self, "app_id", self.topic_prefix)
        return self

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @property
    def topics(self) -> Topics:
        # Not cached: model_copy() would carry a cached value over to a copy with another prefix.
        return Topics(self.topic_prefix)

    def artifact_root(self) -> Path:
        """The artifact directory as an absolute path with its symlinks resolved."""
        return (self.artifact_dir or self.state_dir / "artifacts").resolve()

    def artifact_uri(self, path: Path) -> str:
        """How an artifact written at `path` is named on its ArtifactStored event."""
        resolved = path.resolve()
        root = self.artifact_root()
        if self.artifact_url is None or not resolved.is_relative_to(root):
            return resolved.as_uri()
        return self.artifact_url.rstrip("/") + "/" + quote(resolved.relative_to(root).as_posix())

    def worker_ready_file(self, pid: int) -> Path:
        """Touched by a worker once its consumer group has given it partitions."""
        return self.state_dir / f"worker-{pid}.ready"

    def exposure_problem(self) -> str | None:
        """Why the API must not serve with these settings: open mode off a loopback address."""
        if self.auth == "open" and not is_loopback(self.api_host):
            return (
                f"refusing to serve without API keys on {self.api_host}: open mode is for "
                "loopback addresses only; set STAGECAST_AUTH=keys (and create keys with "
                "'stagecast keys create') or STAGECAST_API_HOST=127.0.0.1"
            )
        return None

    def require_kafka(self) -> str:
        """The bootstrap servers, or a clear error when the process has none."""
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (run `stagecast up` or set it)")
        return self.kafka_bootstrap_servers

    def require_database(self) -> str:
        """The database URL, or a clear error when the process has none."""
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (run `stagecast up` or set it)")
        return self.database_url
