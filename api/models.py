"""What a client may send to POST /jobs, validated before anything reaches Kafka."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_seconds: int | None = Field(default=None, ge=1, le=86_400)
    memory_mb: int | None = Field(default=None, ge=16, le=65_536)
    cpu_seconds: int | None = Field(default=None, ge=1, le=86_400)
    processes: int | None = Field(default=None, ge=1, le=4_096)
    output_kib: int | None = Field(default=None, ge=1, le=1_048_576)


class JobSubmission(BaseModel):
    """The body of POST /jobs."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["MODEL", "CODE"] = "MODEL"
    dsl: str | None = None
    code: str | None = None
    language: Literal["python", "c", "javascript"] | None = None
    stdin: str | None = None
    target: Literal["pytorch", "tensorflow"] = "pytorch"
    stages: list[str] = Field(default_factory=list, max_length=5)
    train: dict[str, Any] | None = None
    limits: Limits | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
