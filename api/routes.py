"""Every operation of the API in one table: path, method, handler, models, answers, errors.

`create_app` builds the Starlette routes and the OpenAPI document from this table, so what is
served and what is documented are the same list.
"""

from __future__ import annotations

from pydantic import BaseModel

from api.artifacts import download_artifact, list_artifacts
from api.cancel import cancel_job
from api.dashboard import Dashboard, failures
from api.docs import DocsPage
from api.feed import job_events
from api.firehose import FEED_EVENT_TYPES, firehose_events
from api.health import health, ready
from api.jobs import get_job, get_stages, list_jobs, submit_job
from api.metrics import metrics_page
from api.models import JobSubmission
from api.openapi import openapi_json
from api.operations import Answer, Endpoint, Location, Operation
from api.parameters import (
    ArtifactPath,
    CompareQuery,
    ConditionalHeader,
    DashboardAssetPath,
    DeliveryQuery,
    DocsAssetPath,
    FailureQuery,
    FirehoseQuery,
    JobFeedQuery,
    JobListQuery,
    JobPath,
    MetricQuery,
    ResumeHeader,
    TenantHeader,
    WebhookPath,
)
from api.runs import compare_runs, get_metrics
from api.views import (
    ArtifactList,
    CancelReason,
    FailureBreakdown,
    FeedEvent,
    Health,
    Job,
    JobCancelling,
    JobDuplicate,
    JobPage,
    JobQueued,
    JobStages,
    MetricHistory,
    Readiness,
    RunComparison,
)
from api.webhooks import (
    MAX_DELIVERY_PAGE,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookList,
    WebhookRequest,
    create_webhook,
    delete_webhook,
    list_deliveries,
    list_webhooks,
)

# Whatever touches PostgreSQL may meet it down or restarting.
_DATABASE = ("DATABASE_UNAVAILABLE",)
_JOB_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_JOB_ID",),
    404: ("JOB_NOT_FOUND",),
    503: _DATABASE,
}
# What reading a JSON body may refuse, before the body's own checks.
_BODY_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_JSON", "JSON_TOO_DEEP"),
    413: ("REQUEST_TOO_LARGE",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
}
# The tenant a request acts for (api/jobs.py `_tenant`): X-Tenant in open mode, the key's.
_TENANT_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_TENANT",),
    403: ("TENANT_MISMATCH",),
    503: _DATABASE,
}
# Why the dispatcher's plan refuses a request (`streams/dispatcher.py`), checked before queuing.
_PLAN_REJECTIONS = (
    "INVALID_REQUEST",
    "LANGUAGE_UNSUPPORTED",
    "LIMIT_TOO_HIGH",
    "STAGE_UNAVAILABLE",
    "TARGET_UNSUPPORTED",
    "UNKNOWN_STAGE",
)
_TEXT = {"schema": {"type": "string"}}
_SSE = {
    "schema": {
        "description": (
            "Each message of the stream: `id` is the event's seq (resume with Last-Event-ID), "
            "`event` its type, `data` the event as JSON. Comment lines keep an idle stream "
            "alive."
        ),
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"enum": list(FEED_EVENT_TYPES)},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{FeedEvent.__name__}"},
            },
        },
        "required": ["id"],
    }
}
_SSE_ANSWER = Answer(
    "a stream of Server-Sent Events", content={"text/event-stream": _SSE}, refers_to=(FeedEvent,)
)


def _job_read(
    subpath: str,
    endpoint: Endpoint,
    operation_id: str,
    summary: str,
    tag: str,
    answer: Answer,
    query: type[BaseModel] | None = None,
) -> Operation:
    """A GET under /jobs/{job_id} that reads what the job has: the job's errors, and
    INVALID_QUERY beside them when it takes a query."""
    parameters: dict[Location, type[BaseModel]] = {"path": JobPath}
    errors = _JOB_ERRORS
    if query is not None:
        parameters["query"] = query
        errors = {**_JOB_ERRORS, 400: ("INVALID_JOB_ID", "INVALID_QUERY")}
    return Operation(
        "GET",
        f"/jobs/{{job_id}}{subpath}",
        endpoint,
        operation_id,
        summary,
        tag,
        {200: answer},
        errors,
        parameters=parameters,
    )


def operations(dashboard: Dashboard, docs: DocsPage) -> list[Operation]:
    """The API's operations; the pages serve their files from their own directories."""
    return [
        Operation(
            "POST",
            "/jobs",
            submit_job,
            "submit_job",
            "Submit a job",
            "jobs",
            {
                202: Answer(
                    "queued (durable: the job runs even if the broker is down now)",
                    JobQueued,
                    headers={"Location": "the job's URL"},
                ),
                200: Answer(
                    "the same request was submitted before with this idempotency key", JobDuplicate
                ),
            },
            {
                **_BODY_ERRORS,
                400: (*_BODY_ERRORS[400], "INVALID_TENANT"),
                403: ("TENANT_MISMATCH",),
                409: ("IDEMPOTENCY_CONFLICT",),
                422: ("VALIDATION_FAILED", *_PLAN_REJECTIONS),
                503: _DATABASE,
            },
            parameters={"header": TenantHeader},
            body=JobSubmission,
        ),
        Operation(
            "GET",
            "/jobs",
            list_jobs,
            "list_jobs",
            "List jobs, newest first",
            "jobs",
            {200: Answer("a page of jobs", JobPage)},
            {400: ("INVALID_QUERY",), 403: ("TENANT_FORBIDDEN",), 503: _DATABASE},
            parameters={"query": JobListQuery},
        ),
        _job_read(
            "", get_job, "get_job", "A job with its stage attempts", "jobs", Answer("the job", Job)
        ),
        _job_read(
            "/stages",
            get_stages,
            "get_stages",
            "A job's stage attempts in the order they ran",
            "jobs",
            Answer("the attempts", JobStages),
        ),
        _job_read(
            "/metrics",
            get_metrics,
            "get_metrics",
            "A job's metric history",
            "runs",
            Answer("each metric's points in step order", MetricHistory),
            query=MetricQuery,
        ),
        _job_read(
            "/artifacts",
            list_artifacts,
            "list_artifacts",
            "A job's artifacts, one per name (the attempt that counts)",
            "artifacts",
            Answer("the artifacts", ArtifactList),
        ),
        Operation(
            "GET",
            "/jobs/{job_id}/artifacts/{name:artifact_name}",
            download_artifact,
            "download_artifact",
            "An artifact's bytes, checked against its recorded size and SHA-256",
            "artifacts",
            {
                200: Answer(
                    "the bytes, as the recorded media type",
                    content={"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    headers={
                        "ETag": "the artifact's SHA-256, quoted",
                        "Content-Disposition": "attachment with the name's last segment",
                    },
                ),
                304: Answer("If-None-Match named this artifact's ETag"),
            },
            {
                400: ("INVALID_JOB_ID", "INVALID_ARTIFACT_NAME"),
                404: ("JOB_NOT_FOUND", "ARTIFACT_NOT_FOUND"),
                502: ("ARTIFACT_UNAVAILABLE", "ARTIFACT_CORRUPT"),
                503: _DATABASE,
            },
            parameters={"path": ArtifactPath, "header": ConditionalHeader},
        ),
        Operation(
            "GET",
            "/jobs/{job_id}/events",
            job_events,
            "job_events",
            "A job's events as Server-Sent Events, live, until it ends",
            "feeds",
            {200: _SSE_ANSWER, 204: Answer("the feed ended at or before the resume point")},
            {**_JOB_ERRORS, 400: ("INVALID_JOB_ID", "INVALID_LAST_EVENT_ID")},
            parameters={"path": JobPath, "query": JobFeedQuery, "header": ResumeHeader},
        ),
        Operation(
            "POST",
            "/jobs/{job_id}/cancel",
            cancel_job,
            "cancel_job",
            "Cancel a job: every worker stops its work within seconds",
            "jobs",
            {202: Answer("the cancel is sent", JobCancelling)},
            {
                **_BODY_ERRORS,
                400: ("INVALID_JOB_ID", *_BODY_ERRORS[400]),
                404: ("JOB_NOT_FOUND",),
                409: ("JOB_FINISHED",),
                422: ("VALIDATION_FAILED",),
                503: ("BROKER_UNAVAILABLE", *_DATABASE),
            },
            parameters={"path": JobPath},
            body=CancelReason,
            body_required=False,
        ),
        Operation(
            "GET",
            "/events",
            firehose_events,
            "firehose",
            "Every job's events as Server-Sent Events, filtered",
            "feeds",
            {200: _SSE_ANSWER},
            {
                400: ("INVALID_QUERY", "INVALID_LAST_EVENT_ID"),
                403: ("TENANT_FORBIDDEN",),
                503: _DATABASE,
            },
            parameters={"query": FirehoseQuery, "header": ResumeHeader},
            description="Type, stage and job repeat or take comma lists; tenant only repeats.",
        ),
        Operation(
            "GET",
            "/runs/compare",
            compare_runs,
            "compare_runs",
            "Runs side by side: status, tags, params, duration, final metrics",
            "runs",
            {200: Answer("the runs, in the order asked", RunComparison)},
            {400: ("INVALID_QUERY", "INVALID_JOB_ID"), 404: ("JOB_NOT_FOUND",), 503: _DATABASE},
            parameters={"query": CompareQuery},
        ),
        Operation(
            "POST",
            "/webhooks",
            create_webhook,
            "create_webhook",
            "Subscribe a URL to the tenant's job events (signed deliveries, retried)",
            "webhooks",
            {
                201: Answer(
                    "the subscription, with its signing secret (shown this once)",
                    WebhookCreated,
                    headers={"Location": "the webhook's URL"},
                )
            },
            {
                **_BODY_ERRORS,
                **_TENANT_ERRORS,
                400: (
                    *_BODY_ERRORS[400],
                    "INVALID_TENANT",
                    "INVALID_WEBHOOK",
                    "INVALID_WEBHOOK_URL",
                ),
            },
            parameters={"header": TenantHeader},
            body=WebhookRequest,
        ),
        Operation(
            "GET",
            "/webhooks",
            list_webhooks,
            "list_webhooks",
            "The tenant's webhook subscriptions",
            "webhooks",
            {200: Answer("the active subscriptions, oldest first", WebhookList)},
            _TENANT_ERRORS,
            parameters={"header": TenantHeader},
        ),
        Operation(
            "DELETE",
            "/webhooks/{webhook_id}",
            delete_webhook,
            "delete_webhook",
            "Stop a subscription; its pending deliveries end FAILED",
            "webhooks",
            {204: Answer("stopped")},
            {
                **_TENANT_ERRORS,
                400: ("INVALID_WEBHOOK_ID", "INVALID_TENANT"),
                404: ("WEBHOOK_NOT_FOUND",),
            },
            parameters={"path": WebhookPath, "header": TenantHeader},
        ),
        Operation(
            "GET",
            "/webhooks/{webhook_id}/deliveries",
            list_deliveries,
            "list_deliveries",
            f"A subscription's newest deliveries with every attempt (at most {MAX_DELIVERY_PAGE})",
            "webhooks",
            {200: Answer("newest first", WebhookDeliveryList)},
            {
                **_TENANT_ERRORS,
                400: ("INVALID_WEBHOOK_ID", "INVALID_QUERY", "INVALID_TENANT"),
                404: ("WEBHOOK_NOT_FOUND",),
            },
            parameters={"path": WebhookPath, "query": DeliveryQuery, "header": TenantHeader},
        ),
        Operation(
            "GET",
            "/dashboard",
            dashboard.page,
            "dashboard",
            "The live dashboard page",
            "pages",
            {200: Answer("the page", content={"text/html": _TEXT})},
            {503: ("DASHBOARD_NOT_INSTALLED",)},
        ),
        Operation(
            "GET",
            "/dashboard/assets/{name}",
            dashboard.asset,
            "dashboard_asset",
            "A file the dashboard page loads",
            "pages",
            {200: Answer("the file", content={"text/javascript": _TEXT, "text/css": _TEXT})},
            {404: ("NOT_FOUND",), 503: ("DASHBOARD_NOT_INSTALLED",)},
            parameters={"path": DashboardAssetPath},
        ),
        Operation(
            "GET",
            "/dashboard/failures",
            failures,
            "dashboard_failures",
            "Failed and cancelled stage attempts by error code",
            "pages",
            {200: Answer("most frequent first", FailureBreakdown)},
            {400: ("INVALID_QUERY",), 503: _DATABASE},
            parameters={"query": FailureQuery},
        ),
        Operation(
            "GET",
            "/health",
            health,
            "health",
            "The process is up",
            "operations",
            {200: Answer("up", Health)},
        ),
        Operation(
            "GET",
            "/ready",
            ready,
            "ready",
            "The database answers and the broker has every topic",
            "operations",
            {200: Answer("ready, with what each live worker's sandbox confines", Readiness)},
            {503: ("NOT_READY", *_DATABASE)},
        ),
        Operation(
            "GET",
            "/metrics",
            metrics_page,
            "metrics",
            "Prometheus metrics of the API and the database's figures",
            "operations",
            {
                200: Answer(
                    "the exposition, as text or OpenMetrics (by Accept)",
                    content={"text/plain": _TEXT, "application/openmetrics-text": _TEXT},
                )
            },
        ),
        Operation(
            "GET",
            "/openapi.json",
            openapi_json,
            "openapi",
            "This document",
            "operations",
            {
                200: Answer(
                    "OpenAPI 3.1", content={"application/json": {"schema": {"type": "object"}}}
                )
            },
        ),
        Operation(
            "GET",
            "/docs",
            docs.page,
            "docs",
            "This document, rendered (Swagger UI)",
            "pages",
            {200: Answer("the page", content={"text/html": _TEXT})},
            {503: ("DOCS_NOT_INSTALLED",)},
        ),
        Operation(
            "GET",
            "/docs/assets/{name}",
            docs.asset,
            "docs_asset",
            "A file the docs page loads",
            "pages",
            {
                200: Answer(
                    "the file",
                    content={"text/javascript": _TEXT, "text/css": _TEXT},
                )
            },
            {404: ("NOT_FOUND",), 503: ("DOCS_NOT_INSTALLED",)},
            parameters={"path": DocsAssetPath},
        ),
    ]
