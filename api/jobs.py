"""The jobs resource: submit a job, read one, list them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from asyncpg.pool import PoolConnectionProxy
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ApiError
from api.feed import parse_job_id
from api.inputs import (
    MAX_JSON_DEPTH,
    ascii_int,
    is_tenant,
    nested_deeper_than,
    unstorable_strings,
)
from api.models import JobSubmission
from api.tenancy import own_tenant, require_visible, tenant_filter, visible_to
from api.views import Job, JobDuplicate, JobPage, JobQueued, JobStages, json_answer
from schemas.codec import default_codec
from streams.dispatcher import Rejection, job_id_for, plan_job, request_digest
from streams.envelope import envelope
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import Settings

TENANT_HEADER = "x-tenant"
# How long a submission waits for the broker before answering 202 anyway (it is in the outbox).
PUBLISH_WAIT_S = 2.0
log = logging.getLogger(__name__)

_TENANT_RULE = "1-100 printable characters"
JOB_STATUSES = ("QUEUED", "ACCEPTED", "RUNNING", "SUCCEEDED", "FAILED", "REJECTED", "CANCELLED")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _jsonb(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _links(job_id: str) -> dict[str, str]:
    return {
        "self": f"/jobs/{job_id}",
        "events": f"/jobs/{job_id}/events",
        "metrics": f"/jobs/{job_id}/metrics",
        "artifacts": f"/jobs/{job_id}/artifacts",
    }


async def read_body(request: Request, limit: int) -> Any:
    declared = ascii_int(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise ApiError(413, "REQUEST_TOO_LARGE", f"body larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "REQUEST_TOO_LARGE", f"body larger than {limit} bytes")
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
    if nested_deeper_than(body, MAX_JSON_DEPTH):
        raise ApiError(
            400,
            "JSON_TOO_DEEP",
            f"the body nests arrays and objects more than {MAX_JSON_DEPTH} deep",
            {"max_depth": MAX_JSON_DEPTH},
        )
    try:
        return json.loads(body)
    except ValueError as error:
        raise ApiError(
            400, "INVALID_JSON", "body is not valid JSON", {"reason": str(error)}
        ) from None


def _tenant(request: Request, settings: Settings) -> str:
    """The submission's tenant: the API key's; in open mode X-Tenant, else the default."""
    own = own_tenant(request)
    given = request.headers.get(TENANT_HEADER)
    if own is not None:
        # A key never submits for another tenant, and a conflicting header is not ignored:
        # the client believes it is someone else, which it should hear about.
        if given is not None and given.strip() != own:
            raise ApiError(
                403,
                "TENANT_MISMATCH",
                "X-Tenant names another tenant than the API key's; leave it out or send the "
                "key's own",
                {"tenant": own},
            )
        return own
    tenant = (settings.default_tenant if given is None else given).strip()
    if not is_tenant(tenant):
        raise ApiError(400, "INVALID_TENANT", f"X-Tenant must be {_TENANT_RULE}")
    return tenant


def job_requested(submission: JobSubmission, tenant: str, source: str) -> dict[str, Any]:
    """The JobRequested record for a submission; keyed submissions get their derived job id."""
    key = submission.idempotency_key
    job_id = job_id_for(tenant, key) if key else str(uuid.uuid4())
    record = envelope(job_id, tenant, source, event_id_for(job_id, "requested", uuid.uuid4()))
    record.update(
        kind=submission.kind,
        dsl=submission.dsl,
        code=submission.code,
        language=submission.language,
        stdin=submission.stdin,
        target=submission.target,
        stages=list(submission.stages),
        train=json.dumps(submission.train) if submission.train is not None else None,
        limits=submission.limits.model_dump() if submission.limits else None,
        labels=dict(submission.labels),
        idempotency_key=key,
    )
    return record


async def _reserve_key(
    conn: PoolConnectionProxy, tenant: str, key: str, job_id: str, submission: JobSubmission
) -> JSONResponse | None:
    """Reserve `key` for this request; for a retry, the answer to give instead of queuing."""
    digest = hashlib.sha256(
        json.dumps(submission.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    reserved = await conn.fetchrow(
        "INSERT INTO idempotency_keys (tenant, idempotency_key, job_id, request_sha256) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, idempotency_key) DO NOTHING "
        "RETURNING job_id",
        tenant,
        key,
        uuid.UUID(job_id),
        digest,
    )
    if reserved is not None:
        return None
    first = await conn.fetchrow(
        "SELECT k.request_sha256, j.status FROM idempotency_keys k "
        "LEFT JOIN jobs j ON j.job_id = k.job_id "
        "WHERE k.tenant = $1 AND k.idempotency_key = $2",
        tenant,
        key,
    )
    assert first is not None  # keys are never freed
    if first["request_sha256"] != digest:
        raise ApiError(
            409,
            "IDEMPOTENCY_CONFLICT",
            "this idempotency key was used for a different request",
            {"job_id": job_id},
        )
    return _duplicate(job_id, first["status"])


def _duplicate(job_id: str, status: str | None) -> JSONResponse:
    body = {
        "job_id": job_id,
        "status": status or "QUEUED",
        "duplicate": True,
        "links": _links(job_id),
    }
    return json_answer(JobDuplicate, body)


_STORE_REQUEST = (
    "INSERT INTO request_outbox (job_id, tenant, request) VALUES ($1, $2, $3) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING true"
)


async def _accept(
    pool: asyncpg.Pool, record: dict[str, Any], raw: bytes, submission: JobSubmission
) -> JSONResponse | None:
    """Make the request durable before anyone hears of it; a retry gets its first answer.

    The key's reservation and the request's row in the outbox commit together: once this
    returns None, the job will run even if the broker never hears of it from this process.
    """
    job_id, tenant, key = record["job_id"], record["tenant"], submission.idempotency_key
    async with pool.acquire() as conn:
        if key is None:
            # Nothing to reserve: one statement that commits alone, not BEGIN, INSERT, COMMIT
            # (a third of the round trips of a submission).
            if await conn.fetchval(_STORE_REQUEST, uuid.UUID(job_id), tenant, raw):
                return None
        else:
            async with conn.transaction():
                duplicate = await _reserve_key(conn, tenant, key, job_id, submission)
                if duplicate is not None:
                    return duplicate
                if await conn.fetchval(_STORE_REQUEST, uuid.UUID(job_id), tenant, raw):
                    return None
        # The key's job id was first used by a system producing straight into Kafka.
        first = await conn.fetchrow(
            "SELECT o.request, j.status FROM request_outbox o "
            "LEFT JOIN jobs j ON j.job_id = o.job_id WHERE o.job_id = $1",
            uuid.UUID(job_id),
        )
    assert first is not None
    _, earlier = default_codec().decode(first["request"])
    if request_digest(earlier) != request_digest(record):
        raise ApiError(
            409,
            "IDEMPOTENCY_CONFLICT",
            "this idempotency key's job was requested with a different body",
            {"job_id": job_id},
        )
    return _duplicate(job_id, first["status"])


async def submit_job(request: Request) -> JSONResponse:
    state = request.app.state
    settings: Settings = state.settings
    publisher: EventPublisher = state.publisher
    tenant = _tenant(request, settings)
    raw = await read_body(request, settings.max_request_bytes)
    unstorable = unstorable_strings(raw)
    if unstorable:
        raise ApiError(422, "VALIDATION_FAILED", "the job request is not valid", unstorable)
    try:
        submission = JobSubmission.model_validate(raw)
    except ValidationError as error:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
            for e in error.errors()
        ]
        raise ApiError(422, "VALIDATION_FAILED", "the job request is not valid", details) from None
    record = job_requested(submission, tenant, f"{settings.source}.api")
    plan = plan_job(record, settings)
    if isinstance(plan, Rejection):
        status = 413 if plan.code == "REQUEST_TOO_LARGE" else 422
        raise ApiError(status, plan.code, plan.message, plan.details)
    job_id = record["job_id"]
    try:
        outgoing = publisher.encoded(Outgoing(settings.topics.requests, "JobRequested", record))
    except ValueError as error:
        raise ApiError(413, "REQUEST_TOO_LARGE", str(error)) from None
    assert outgoing.raw is not None
    answered = await _accept(state.pool, record, outgoing.raw, submission)
    if answered is not None:
        return answered
    try:
        await asyncio.wait_for(publisher.publish([outgoing]), PUBLISH_WAIT_S)
    except (TimeoutError, KafkaError) as error:
        # Accepted all the same: the outbox relay publishes it once the broker is back.
        log.warning("job %s is accepted but not on the broker yet (%r)", job_id, error)
    body = {"job_id": job_id, "status": "QUEUED", "stages": list(plan), "links": _links(job_id)}
    return json_answer(JobQueued, body, 202, headers={"Location": f"/jobs/{job_id}"})


_STAGES = (
    f"SELECT * FROM job_stages WHERE job_id = $1 AND {visible_to('$1', '$2::text')} "
    "ORDER BY started_at NULLS LAST, stage, attempt"
)


async def _stages(
    pool: asyncpg.Pool, job_id: uuid.UUID, tenant: str | None
) -> list[dict[str, Any]]:
    """A job's stage attempts in the order they ran; none for another tenant's job."""
    return [_stage_view(row) for row in await pool.fetch(_STAGES, job_id, tenant)]


def _stage_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "stage": row["stage"],
        "attempt": row["attempt"],
        "status": row["status"],
        "started_at": _json(row["started_at"]),
        "finished_at": _json(row["finished_at"]),
        "duration_ms": row["duration_ms"],
        "summary": _jsonb(row["summary"]),
        "error": _jsonb(row["error"]),
    }


def _job_view(row: asyncpg.Record) -> dict[str, Any]:
    job_id = str(row["job_id"])
    return {
        "job_id": job_id,
        "tenant": row["tenant"],
        "kind": row["kind"],
        "target": row["target"],
        "status": row["status"],
        "current_stage": row["current_stage"],
        "plan": list(row["stages"] or []),
        "progress": row["progress"],
        "error": _jsonb(row["error"]),
        "labels": _jsonb(row["labels"]),
        "idempotency_key": row["idempotency_key"],
        "requested_at": _json(row["requested_at"]),
        "accepted_at": _json(row["accepted_at"]),
        "started_at": _json(row["started_at"]),
        "finished_at": _json(row["finished_at"]),
        "links": _links(job_id),
    }


_JOB_COLUMNS = (
    "job_id, tenant, kind, target, status, current_stage, stages, progress, error, labels, "
    "idempotency_key, requested_at, accepted_at, started_at, finished_at"
)
# Whether the job is projected, and the caller's to see ($2 NULL: every tenant's).
_PROJECTED = "SELECT 1 FROM jobs WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2)"


async def get_job(request: Request) -> JSONResponse:
    job_id = parse_job_id(request.path_params["job_id"])
    pool: asyncpg.Pool = request.app.state.pool
    row = await pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
    if row is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})
    require_visible(request, job_id, row["tenant"])
    view = _job_view(row)
    view["stages"] = await _stages(pool, job_id, own_tenant(request))
    return json_answer(Job, view)


async def get_stages(request: Request) -> JSONResponse:
    job_id = parse_job_id(request.path_params["job_id"])
    pool: asyncpg.Pool = request.app.state.pool
    tenant = own_tenant(request)
    stages = await _stages(pool, job_id, tenant)
    if not stages and await pool.fetchval(_PROJECTED, job_id, tenant) is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})
    return json_answer(JobStages, {"job_id": str(job_id), "stages": stages})


_KNOWN = (
    "SELECT (EXISTS (SELECT 1 FROM jobs WHERE job_id = $1) "
    "OR EXISTS (SELECT 1 FROM request_outbox WHERE job_id = $1)) "
    f"AND {visible_to('$1', '$2::text')}"
)


async def require_known_job(pool: asyncpg.Pool, job_id: uuid.UUID, tenant: str | None) -> None:
    """JOB_NOT_FOUND unless the job is projected or accepted (its request in the outbox), and
    not another tenant's than `tenant` (None: every tenant's)."""
    if not await pool.fetchval(_KNOWN, job_id, tenant):
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})


def latest_run_first(stages: str) -> str:
    """ORDER BY terms putting first the stage attempt that counts among several with one name.

    The later stage of the pipeline wins (`stages` is the SQL parameter holding STAGES), then
    the later attempt: a retried stage replaces what its failed attempt recorded, and train's
    model.py replaces codegen's.
    """
    return f"array_position({stages}::text[], stage) DESC NULLS LAST, attempt DESC"


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None or not low <= value <= high:
        raise ApiError(400, "INVALID_QUERY", f"`{name}` must be an integer from {low} to {high}")
    return value


async def list_jobs(request: Request) -> JSONResponse:
    """Newest first; `status`, `tenant`, `label` filters; `limit`; `cursor` from the last page."""
    pool: asyncpg.Pool = request.app.state.pool
    limit = _int_param(request, "limit", 50, 1, 500)
    clauses: list[str] = []
    args: list[object] = []
    status = request.query_params.get("status")
    if status is not None:
        if status not in JOB_STATUSES:
            raise ApiError(400, "INVALID_QUERY", "unknown status", {"known": list(JOB_STATUSES)})
        args.append(status)
        clauses.append(f"status = ${len(args)}")
    asked = request.query_params.get("tenant")
    if asked is not None and not is_tenant(asked):
        raise ApiError(400, "INVALID_QUERY", f"`tenant` must be {_TENANT_RULE}")
    for tenant in tenant_filter(request, [] if asked is None else [asked]):
        args.append(tenant)
        clauses.append(f"tenant = ${len(args)}")
    for wanted in label_filters(request.query_params.getlist("label")):
        args.append(json.dumps(wanted))
        clauses.append(f"labels @> ${len(args)}::jsonb")
    cursor = request.query_params.get("cursor")
    if cursor is not None:
        args.extend(_parse_cursor(cursor))
        clauses.append(f"({_SORT_KEY}, job_id) < (${len(args) - 1}, ${len(args)})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    rows = await pool.fetch(
        f"SELECT {_JOB_COLUMNS}, {_SORT_KEY} AS sort_key FROM jobs {where} "
        f"ORDER BY {_SORT_KEY} DESC, job_id DESC LIMIT ${len(args)}",
        *args,
    )
    body: dict[str, Any] = {"jobs": [_job_view(r) for r in rows]}
    if len(rows) == limit:
        last = rows[-1]
        body["next_cursor"] = f"{last['sort_key'].isoformat()}|{last['job_id']}"
    return json_answer(JobPage, body)


MAX_LABEL_FILTERS = 20


def label_filters(values: list[str]) -> list[dict[str, str]]:
    """`label=key:value` query values, each as the labels a job must contain (all of them).

    The key ends at the first colon, so a value may hold colons and a key may not.
    """
    if len(values) > MAX_LABEL_FILTERS:
        raise ApiError(400, "INVALID_QUERY", f"at most {MAX_LABEL_FILTERS} `label` filters at once")
    filters = []
    for text in values:
        key, colon, value = text.partition(":")
        if not colon or not key:
            raise ApiError(400, "INVALID_QUERY", "`label` must be key:value", {"given": text[:100]})
        problems = unstorable_strings({key: value})
        if problems:
            raise ApiError(400, "INVALID_QUERY", "`label` holds text no label can", problems)
        filters.append({key: value})
    return filters


_SORT_KEY = "COALESCE(requested_at, accepted_at, '-infinity'::timestamptz)"


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A next_cursor value: `<time with its UTC offset>|<job id>`.

    fromisoformat alone takes a time cut short by a NUL, a time without an offset (which the
    driver reads as local time), and one whose UTC is before year 1 (an OverflowError).
    """
    invalid = ApiError(400, "INVALID_QUERY", "`cursor` must be a next_cursor value")
    if not (cursor.isascii() and cursor.isprintable()):
        raise invalid
    moment, _, job_id = cursor.partition("|")
    try:
        at = datetime.fromisoformat(moment)
        if at.tzinfo is not None:
            return at.astimezone(UTC), uuid.UUID(job_id)
        # The one time the driver reads without an offset: datetime.min for '-infinity'.
        if at != datetime.min:
            raise invalid
        return at, uuid.UUID(job_id)
    except (ValueError, OverflowError):
        raise invalid from None
