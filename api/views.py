"""What the API answers, as pydantic models.

Every JSON answer is built through one of these (`json_answer`), so a body that does not fit
its model fails where it is made instead of reaching a client, and the OpenAPI document
(`api/openapi.py`) is generated from the same classes: the two cannot drift. The models forbid
extra keys for the same reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.responses import JSONResponse

# Times are RFC 3339 strings as Python's isoformat writes them ("...+00:00").
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
JobId = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
JobStatus = Literal["QUEUED", "ACCEPTED", "RUNNING", "SUCCEEDED", "FAILED", "REJECTED", "CANCELLED"]
StageStatus = Literal["STARTED", "SUCCEEDED", "FAILED", "CANCELLED"]
# A double as JSON can hold it: what JSON has no number for is written as a string.
MetricValue = float | Literal["NaN", "Infinity", "-Infinity"]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


def json_answer(
    model: type[View],
    body: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """`body` checked against `model` and sent as it serialises (keys absent stay absent)."""
    view = model.model_validate(body)
    return JSONResponse(
        view.model_dump(mode="json", by_alias=True, exclude_unset=True),
        status_code=status_code,
        headers=headers,
    )


class ErrorBody(View):
    """Every error: a message, a stable code, details that depend on the code, the request id."""

    error: str
    error_code: str
    details: Any = Field(description="an object or a list; its content depends on the code")
    request_id: str


class Health(View):
    status: Literal["ok"]


class Sandbox(View):
    worker: str
    confined: bool
    protections: dict[str, bool | str] = Field(description="each protection: on, or its value")
    missing: dict[str, str] = Field(description="each protection missing, and why")
    toolchains: dict[str, bool] = Field(description="each language: whether it can run")


class Readiness(View):
    status: Literal["ready"]
    checks: dict[str, str]
    execute: list[Sandbox] = Field(description="what each live worker's execute stage confines")


class JobLinks(View):
    self_: str = Field(alias="self")
    events: str
    metrics: str
    artifacts: str


class StageAttempt(View):
    stage: str
    attempt: int
    status: StageStatus
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration_ms: int | None
    summary: Any
    error: Any


class JobSummary(View):
    job_id: JobId
    tenant: str
    kind: str | None
    target: str | None
    status: JobStatus
    current_stage: str | None
    plan: list[str]
    progress: float
    error: Any
    labels: dict[str, str]
    idempotency_key: str | None
    requested_at: Timestamp | None
    accepted_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    links: JobLinks


class Job(JobSummary):
    stages: list[StageAttempt]


class JobPage(View):
    jobs: list[JobSummary] = Field(description="newest first")
    next_cursor: str | None = Field(
        default=None, description="present when the page is full: pass it as `cursor`"
    )


class JobQueued(View):
    """The answer to a new submission (202)."""

    job_id: JobId
    status: Literal["QUEUED"]
    stages: list[str]
    links: JobLinks


class JobDuplicate(View):
    """The answer to a submission whose idempotency key was used before for the same request."""

    job_id: JobId
    status: JobStatus
    duplicate: Literal[True]
    links: JobLinks


class CancelLinks(View):
    self_: str = Field(alias="self")
    events: str


class JobCancelling(View):
    job_id: JobId
    status: Literal["CANCELLING"]
    links: CancelLinks


class JobStages(View):
    job_id: JobId
    stages: list[StageAttempt]


class MetricPoint(View):
    step: int
    value: MetricValue
    timestamp: Timestamp
    stage: str
    attempt: int


class RecordedPoint(MetricPoint):
    labels: dict[str, str]


class MetricHistory(View):
    job_id: JobId
    metrics: dict[str, list[RecordedPoint]] = Field(description="each name's points in step order")


class ArtifactLinks(View):
    download: str
    store: str | None = Field(
        default=None, description="the file's URL in the artifact store, when it has one"
    )


class Artifact(View):
    name: str
    media_type: str
    size_bytes: int
    sha256: str
    stage: str
    attempt: int
    created_at: Timestamp
    links: ArtifactLinks


class ArtifactList(View):
    job_id: JobId
    artifacts: list[Artifact]


class Run(View):
    job_id: JobId
    status: JobStatus
    tags: dict[str, str]
    params: dict[str, Any] = Field(description="train settings flattened, plus kind and target")
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration_ms: int | None
    metrics: dict[str, MetricPoint] = Field(description="each metric's final value")


class RunComparison(View):
    runs: list[Run]
    metric_names: list[str]
    param_names: list[str]


class StageFailures(View):
    stage: str
    status: StageStatus
    error_code: str
    attempts: int
    share: float


class FailureBreakdown(View):
    failures: list[StageFailures]
    ended_attempts: dict[str, int]


class CancelReason(View):
    """The optional body of a cancel."""

    reason: str = Field(default="", max_length=500)


class FeedEvent(BaseModel):
    """The `data` of an SSE message: the event as its Avro schema in schemas/ names it.

    Every event carries these fields, and the fields of its type's schema
    (`schemas/<event>.avsc`, the SSE `event:` field names the type).
    """

    model_config = ConfigDict(extra="allow")

    event_id: str
    job_id: JobId
    tenant: str
    occurred_at: int = Field(description="milliseconds since the Unix epoch (timestamp-millis)")
    source: str
