"""POST /jobs/{id}/cancel: a CancelRequested on the control topic, heard by every worker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka.errors import KafkaError
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ApiError
from api.feed import parse_job_id
from api.inputs import unstorable_strings
from api.jobs import PUBLISH_WAIT_S, read_body
from api.tenancy import require_visible
from api.views import JobCancelling, json_answer
from streams.envelope import envelope
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import Settings

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELLED")
MAX_REASON = 500

# The job as the projection knows it, or as the outbox holds it before it is projected.
_JOB = """
SELECT COALESCE(j.tenant, o.tenant) AS tenant, j.status
FROM (SELECT $1::uuid AS job_id) AS asked
LEFT JOIN jobs j ON j.job_id = asked.job_id
LEFT JOIN request_outbox o ON o.job_id = asked.job_id
"""


async def _reason(request: Request, settings: Settings) -> str:
    """The optional `{"reason": "..."}` body; no body at all is fine."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "")
    if length in (None, "0") and not chunked:
        return ""
    body: Any = await read_body(request, settings.max_request_bytes)
    if body is None or body == {}:
        return ""
    reason = body.get("reason", "") if isinstance(body, dict) else None
    if not isinstance(reason, str) or set(body) - {"reason"} or len(reason) > MAX_REASON:
        raise ApiError(
            422,
            "VALIDATION_FAILED",
            f'the body is {{"reason": "..."}} with at most {MAX_REASON} characters',
        )
    problems = unstorable_strings({"reason": reason})
    if problems:
        raise ApiError(422, "VALIDATION_FAILED", "the reason cannot be stored", problems)
    return reason


async def cancel_job(request: Request) -> JSONResponse:
    job_id = parse_job_id(request.path_params["job_id"])
    state = request.app.state
    settings: Settings = state.settings
    reason = await _reason(request, settings)
    job = await state.pool.fetchrow(_JOB, job_id)
    require_visible(request, job_id, None if job is None else job["tenant"])
    if job is None or job["tenant"] is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job", {"job_id": str(job_id)})
    if job["status"] in TERMINAL:
        raise ApiError(
            409,
            "JOB_FINISHED",
            f"the job has already ended ({job['status']})",
            {"job_id": str(job_id), "status": job["status"]},
        )
    publisher: EventPublisher = state.publisher
    text = str(job_id)
    # One id per request: two cancels are two requests, and either stops the job.
    event_id = event_id_for(text, "cancel", uuid.uuid4())
    record = envelope(text, job["tenant"], f"{settings.source}.api", event_id)
    record["reason"] = reason
    outgoing = Outgoing(settings.topics.control, "CancelRequested", record)
    try:
        await asyncio.wait_for(publisher.publish([outgoing]), PUBLISH_WAIT_S)
    except (TimeoutError, KafkaError) as error:
        raise ApiError(
            503,
            "BROKER_UNAVAILABLE",
            "the cancel could not be sent; retry",
            {"reason": type(error).__name__},
        ) from None
    body = {
        "job_id": text,
        "status": "CANCELLING",
        "links": {"self": f"/jobs/{text}", "events": f"/jobs/{text}/events"},
    }
    return json_answer(JobCancelling, body, 202)
