"""The path, query and header parameters of the operations, as pydantic models.

They describe the parameters in the OpenAPI document (field alias = parameter name). The
handlers read the same parameters with their own checks, which answer with an error code the
document lists; the schemathesis run in the tests sends what these models allow and more.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from api.dashboard import ASSETS as DASHBOARD_ASSETS
from api.docs import ASSETS as DOCS_ASSETS
from api.firehose import FEED_EVENT_TYPES
from api.views import JobStatus
from api.webhooks import DELIVERY_PAGE, DELIVERY_STATUSES, MAX_DELIVERY_PAGE
from streams.settings import STAGES

Uuid = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Tenant = Annotated[str, Field(min_length=1, max_length=100)]
Stage = Literal[STAGES]  # type: ignore[valid-type]
FeedEventType = Literal[FEED_EVENT_TYPES]  # type: ignore[valid-type]


class JobPath(BaseModel):
    job_id: Uuid = Field(description="the job's id")


class ArtifactPath(BaseModel):
    job_id: Uuid = Field(description="the job's id")
    name: str = Field(
        min_length=1, max_length=1024, description="the artifact's name, a `/` in it sent as %2F"
    )


class WebhookPath(BaseModel):
    webhook_id: Uuid = Field(description="the webhook's id")


class DeliveryQuery(BaseModel):
    status: Literal[DELIVERY_STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=DELIVERY_PAGE, ge=1, le=MAX_DELIVERY_PAGE)


class DashboardAssetPath(BaseModel):
    name: Literal[tuple(DASHBOARD_ASSETS)] = Field(  # type: ignore[valid-type]
        description="a file the dashboard loads"
    )


class DocsAssetPath(BaseModel):
    name: Literal[tuple(DOCS_ASSETS)] = Field(  # type: ignore[valid-type]
        description="a file the docs page loads"
    )


class TenantHeader(BaseModel):
    tenant: Tenant | None = Field(
        default=None, alias="X-Tenant", description="the tenant the job runs for"
    )


class ResumeHeader(BaseModel):
    last_event_id: Seq | None = Field(
        default=None,
        alias="Last-Event-ID",
        description="resume after this seq (an EventSource sends it when it reconnects)",
    )


class ConditionalHeader(BaseModel):
    if_none_match: str | None = Field(
        default=None, alias="If-None-Match", description="an ETag: 304 when it is the artifact's"
    )


class JobListQuery(BaseModel):
    status: JobStatus | None = None
    tenant: Tenant | None = None
    label: list[str] = Field(
        default_factory=list, max_length=20, description="key:value; a job must have every one"
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, description="the previous page's next_cursor")


class MetricQuery(BaseModel):
    name: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=100, description="only these metrics (repeatable)"
    )


class JobFeedQuery(BaseModel):
    after: Seq | None = Field(
        default=None, description="resume after this seq; Last-Event-ID wins when both are sent"
    )


class FirehoseQuery(BaseModel):
    tenant: list[Tenant] = Field(default_factory=list, max_length=100)
    type: list[FeedEventType] = Field(default_factory=list, max_length=100)
    stage: list[Stage] = Field(default_factory=list, max_length=100)
    job: list[Uuid] = Field(default_factory=list, max_length=100)
    after: Seq | None = Field(
        default=None,
        description="start after this seq (0: the whole feed); without it, the feed's end",
    )


class CompareQuery(BaseModel):
    jobs: str = Field(description="2 to 20 distinct job ids, comma-separated")


class FailureQuery(BaseModel):
    stage: list[Stage] = Field(default_factory=list, description="only these stages")
