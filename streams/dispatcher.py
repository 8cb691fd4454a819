"""The dispatcher: validates a JobRequested, plans its stages, accepts or rejects it."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.dispatches import Claim, DispatchLedger
from streams.envelope import envelope, error_info
from streams.handoff import Handoff, hand_off
from streams.producer import EventPublisher, Outgoing, event_id_for
from streams.settings import STAGES, Settings

TARGETS = ("pytorch", "tensorflow")
MODEL_STAGES = ("parse", "compile", "codegen")
OPTIONAL_MODEL_STAGES = ("execute", "train")
LANGUAGES = ("python", "c", "javascript")
ADDED_REQUEST_FIELDS = ("language", "stdin")
IDEMPOTENCY_NAMESPACE = uuid.UUID("0d6c3a43-52a8-4e8c-b7b8-0e0a1f4f7d21")
# What a request asks for; its event id, time and source may differ between copies of it.
REQUEST_FIELDS = (
    "job_id",
    "tenant",
    "kind",
    "dsl",
    "code",
    "target",
    "stages",
    "train",
    "limits",
    "labels",
    "idempotency_key",
)

log = logging.getLogger(__name__)


def job_id_for(tenant: str, idempotency_key: str) -> str:
    """The job id a keyed request must carry: the same tenant and key always name the same job."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{tenant}\x00{idempotency_key}"))


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def plan_job(request: Mapping[str, Any], settings: Settings) -> tuple[str, ...] | Rejection:
    """The stages a request will run through, or why it cannot run at all."""
    kind = request["kind"]
    asked = list(request.get("stages") or [])
    unknown = [name for name in asked if name not in STAGES]
    if unknown:
        return Rejection(
            "UNKNOWN_STAGE", f"unknown stage(s): {', '.join(unknown)}", {"known": list(STAGES)}
        )
    if request.get("target", "pytorch") not in TARGETS:
        return Rejection(
            "TARGET_UNSUPPORTED",
            f"target {request.get('target')!r} is not supported",
            {"supported": list(TARGETS)},
        )
    if kind == "MODEL":
        plan: tuple[str, ...] = MODEL_STAGES + tuple(s for s in OPTIONAL_MODEL_STAGES if s in asked)
        problem = _check_body(request, "dsl", "code", settings.max_dsl_bytes)
    else:
        if any(name != "execute" for name in asked):
            return Rejection(
                "INVALID_REQUEST", "a CODE job runs only the execute stage", {"stages": asked}
            )
        plan = ("execute",)
        problem = _check_body(request, "code", "dsl", settings.max_code_bytes)
        language = request.get("language") or "python"
        if problem is None and language not in LANGUAGES:
            problem = Rejection(
                "LANGUAGE_UNSUPPORTED",
                f"language {language!r} is not supported",
                {"supported": list(LANGUAGES)},
            )
    if problem is not None:
        return problem
    train = request.get("train")
    if train is not None:
        try:
            settings_given = json.loads(train)
        except ValueError:
            settings_given = None
        if not isinstance(settings_given, dict):
            return Rejection("INVALID_REQUEST", "train settings must be a JSON object")
    over = _limits_over(request.get("limits") or {}, settings)
    if over:
        return Rejection(
            "LIMIT_TOO_HIGH",
            f"limits above this deployment's maxima: {', '.join(over)}",
            {"maximum": over},
        )
    key = request.get("idempotency_key")
    if key is not None and request["job_id"] != job_id_for(request["tenant"], key):
        return Rejection(
            "IDEMPOTENCY_KEY_MISMATCH",
            "a request with an idempotency key must use the job id derived from tenant and key",
            {"expected_job_id": job_id_for(request["tenant"], key)},
        )
    missing = [name for name in plan if name not in settings.enabled_stages]
    if missing:
        return Rejection(
            "STAGE_UNAVAILABLE",
            f"stage(s) {', '.join(missing)} not available on this deployment",
            {"unavailable": missing, "available": list(settings.enabled_stages)},
        )
    return plan


def _limits_over(asked: Mapping[str, Any], settings: Settings) -> dict[str, float]:
    """The limits a request asks above the deployment's maxima: name -> maximum."""
    maxima = {
        "timeout_seconds": settings.execute_max_wall_s,
        "cpu_seconds": settings.execute_max_cpu_s,
        "memory_mb": settings.execute_max_memory_mib,
        "processes": settings.execute_max_processes,
        "output_kib": settings.execute_max_output_kib,
    }
    return {
        name: bound
        for name, bound in maxima.items()
        if asked.get(name) is not None and asked[name] > bound
    }


def _check_body(
    request: Mapping[str, Any], wanted: str, unwanted: str, limit: int
) -> Rejection | None:
    body = request.get(wanted)
    if not body:
        return Rejection("INVALID_REQUEST", f"a {request['kind']} job needs `{wanted}`")
    if request.get(unwanted):
        return Rejection(
            "INVALID_REQUEST", f"a {request['kind']} job takes `{wanted}`, not `{unwanted}`"
        )
    size = len(body.encode())
    if size > limit:
        return Rejection(
            "REQUEST_TOO_LARGE",
            f"`{wanted}` is {size} bytes; the limit is {limit}",
            {"size": size, "limit": limit},
        )
    return None


def job_spec(request: Mapping[str, Any]) -> dict[str, Any]:
    """What every stage of the job needs to know about the request."""
    return {
        "kind": request["kind"],
        "dsl": request.get("dsl"),
        "code": request.get("code"),
        "language": request.get("language") or ("python" if request["kind"] == "CODE" else None),
        "stdin": request.get("stdin"),
        "target": request.get("target", "pytorch"),
        "train": json.loads(request["train"]) if request.get("train") else {},
        "limits": request.get("limits") or {},
        "labels": dict(request.get("labels") or {}),
    }


def request_digest(request: Mapping[str, Any]) -> str:
    """Equal for two copies of one request, different for two requests under one job id."""
    asked = {name: request.get(name) for name in REQUEST_FIELDS}
    # Fields of JobRequested v2 count only when set: digests stored before them stay valid.
    asked |= {name: request[name] for name in ADDED_REQUEST_FIELDS if request.get(name) is not None}
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def conflict(request: Mapping[str, Any], source: str, settings: Settings) -> Outgoing:
    """JobRejected for a request reusing a job id with another body; the first job goes on."""
    job_id, digest = request["job_id"], request_digest(request)
    rejected = envelope(job_id, request["tenant"], source, event_id_for(job_id, "conflict", digest))
    rejected["error"] = error_info(
        "IDEMPOTENCY_CONFLICT",
        "another request with this job id and a different body was already dispatched; "
        "this one is not run",
        {"request_sha256": digest, "event_id": request.get("event_id")},
    )
    return Outgoing(settings.topics.events, "JobRejected", rejected)


def decide(request: Mapping[str, Any], settings: Settings, source: str) -> list[Outgoing]:
    """JobAccepted and the first StageCommand, or JobRejected; the same request, the same ids."""
    job_id, tenant = request["job_id"], request["tenant"]
    topics = settings.topics
    plan = plan_job(request, settings)
    if isinstance(plan, Rejection):
        rejected = envelope(job_id, tenant, source, event_id_for(job_id, "rejected"))
        rejected["error"] = error_info(plan.code, plan.message, plan.details)
        return [Outgoing(topics.events, "JobRejected", rejected)]
    accepted = envelope(job_id, tenant, source, event_id_for(job_id, "accepted"))
    accepted.update(
        kind=request["kind"],
        target=request.get("target", "pytorch"),
        stages=list(plan),
        idempotency_key=request.get("idempotency_key"),
    )
    command = envelope(job_id, tenant, source, event_id_for(job_id, "dispatch"))
    command.update(
        stage=plan[0],
        attempt=1,
        plan=list(plan),
        spec=json.dumps(job_spec(request)),
        input="{}",
        deadline_ms=None,
    )
    return [
        Outgoing(topics.events, "JobAccepted", accepted),
        Outgoing(topics.stage(plan[0]), "StageCommand", command),
    ]


class Dispatcher:
    """Consumes requests; publishes JobAccepted and the first StageCommand, or JobRejected.

    A job id is dispatched once per broker generation: a copy of a request already
    dispatched is dropped, a different request under that id is rejected as a conflict.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        settings: Settings,
        ledger: DispatchLedger,
        handoff: Handoff | None = None,
    ) -> None:
        self.publisher = publisher
        self.settings = settings
        self.ledger = ledger
        self.source = f"{settings.source}.dispatcher"
        # Where the first stage's command may run without a trip through the broker.
        self.handoff = handoff

    async def handle(self, record: Mapping[str, Any]) -> None:
        job_id = record["job_id"]
        claim = await self.ledger.claim(job_id, request_digest(record), self.publisher.generation)
        if claim is Claim.DUPLICATE:
            log.info("job %s was already dispatched; a copy of its request is dropped", job_id)
            return
        if claim is Claim.CONFLICT:
            await self.publisher.publish([conflict(record, self.source, self.settings)])
            return
        # Events first, then the command: the feed must show JobAccepted before any stage starts.
        decided = decide(record, self.settings, self.source)
        commands = [item for item in decided if item.event_type == "StageCommand"]
        await self.publisher.publish(
            [item for item in decided if item.event_type != "StageCommand"]
        )
        # The first stage before the mark: a copy of the request read in between is
        # dispatched again, with the same event ids, which every reader drops.
        await hand_off(self.handoff, self.publisher, commands)
        await self.ledger.dispatched(job_id)
