"""Experiment tracking: a job's metric history, and jobs compared side by side as runs.

A metric value is a JSON number, or the string "NaN", "Infinity" or "-Infinity" for what
JSON has no number for (as protobuf's JSON mapping writes doubles): a diverging loss is a
value like any other.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ApiError
from api.feed import parse_job_id
from api.jobs import latest_run_first, require_known_job
from api.tenancy import foreign_jobs, own_tenant, visible_to
from api.views import MetricHistory, RunComparison, json_answer
from schemas.codec import default_codec
from streams.settings import STAGES

MIN_COMPARED = 2
MAX_COMPARED = 20
MAX_METRIC_NAMES = 100
MAX_METRIC_NAME_LENGTH = 500

_HISTORY = (
    "SELECT name, step, value, stage, attempt, labels, occurred_at FROM metrics "
    "WHERE job_id = $1 AND ($3::text[] IS NULL OR name = ANY($3::text[])) "
    f"AND {visible_to('$1', '$4::text')} "
    "ORDER BY name, step, array_position($2::text[], stage) NULLS LAST, attempt, occurred_at, "
    "event_id"
)
# Each job's last value of each metric, from the stage attempt that counts.
_FINAL = (
    "SELECT DISTINCT ON (job_id, name) job_id, name, step, value, stage, attempt, occurred_at "
    "FROM metrics WHERE job_id = ANY($1::uuid[]) "
    f"ORDER BY job_id, name, {latest_run_first('$2')}, step DESC, occurred_at DESC, event_id DESC"
)
_JOBS = (
    "SELECT job_id, status, kind, target, labels, spec->'train' AS train, started_at, "
    "finished_at FROM jobs WHERE job_id = ANY($1::uuid[])"
)
_QUEUED = "SELECT job_id, request FROM request_outbox WHERE job_id = ANY($1::uuid[])"


def json_number(value: float) -> float | str:
    """A double as JSON can hold it."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def metric_names(values: list[str]) -> list[str] | None:
    """The `name` filters (repeatable), or None for every metric."""
    if not values:
        return None
    if len(values) > MAX_METRIC_NAMES:
        raise ApiError(400, "INVALID_QUERY", f"at most {MAX_METRIC_NAMES} `name` filters")
    for name in values:
        if not 0 < len(name) <= MAX_METRIC_NAME_LENGTH or not name.isprintable():
            raise ApiError(
                400,
                "INVALID_QUERY",
                f"`name` is 1 to {MAX_METRIC_NAME_LENGTH} printable characters",
                {"given": name[:64]},
            )
    return list(dict.fromkeys(values))


def compared_job_ids(values: list[str]) -> list[uuid.UUID]:
    """The job ids of `jobs=a,b,c` (the parameter may repeat), in order, each once."""
    parts = [part.strip() for value in values for part in value.split(",")]
    invalid = []
    ids: dict[uuid.UUID, None] = {}
    for part in parts:
        try:
            ids[uuid.UUID(part)] = None
        except ValueError:
            invalid.append(part[:64])
    if invalid:
        raise ApiError(
            400,
            "INVALID_JOB_ID",
            "every job id must be a UUID",
            {"invalid": invalid[:MAX_COMPARED]},
        )
    if not MIN_COMPARED <= len(ids) <= MAX_COMPARED:
        raise ApiError(
            400,
            "INVALID_QUERY",
            f"`jobs` names {MIN_COMPARED} to {MAX_COMPARED} distinct job ids, comma-separated",
            {"given": len(ids), "min": MIN_COMPARED, "max": MAX_COMPARED},
        )
    return list(ids)


def flat_params(train: Any, prefix: str = "") -> dict[str, Any]:
    """Train settings as flat parameters: nested objects become dotted names."""
    if not isinstance(train, Mapping):
        return {} if train is None else {prefix.rstrip(".") or "train": train}
    params: dict[str, Any] = {}
    for key, value in train.items():
        if isinstance(value, Mapping) and value:
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = value
    return params


def duration_ms(started_at: datetime | None, finished_at: datetime | None) -> int | None:
    if started_at is None or finished_at is None:
        return None
    return round((finished_at - started_at).total_seconds() * 1000)


def _point(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "step": row["step"],
        "value": json_number(row["value"]),
        "timestamp": row["occurred_at"].isoformat(),
        "stage": row["stage"],
        "attempt": row["attempt"],
    }


def history(rows: Iterable[asyncpg.Record]) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        point = _point(row)
        point["labels"] = json.loads(row["labels"])
        by_name.setdefault(row["name"], []).append(point)
    return by_name


async def get_metrics(request: Request) -> JSONResponse:
    """The job's metric history, each name's points in step order; `name` filters."""
    job_id = parse_job_id(request.path_params["job_id"])
    names = metric_names(request.query_params.getlist("name"))
    pool: asyncpg.Pool = request.app.state.pool
    tenant = own_tenant(request)
    rows = await pool.fetch(_HISTORY, job_id, list(STAGES), names, tenant)
    if not rows:
        await require_known_job(pool, job_id, tenant)
    return json_answer(MetricHistory, {"job_id": str(job_id), "metrics": history(rows)})


def _train_settings(train: Any) -> Any:
    """The request's `train`: a JSON text in a JobRequested, kept as text when it is no JSON."""
    if not isinstance(train, str):
        return train
    try:
        return json.loads(train)
    except ValueError:
        return train


def _run(
    job_id: uuid.UUID,
    status: str,
    kind: str | None,
    target: str | None,
    labels: Any,
    train: Any,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    params = flat_params(train)
    params.update(kind=kind, target=target)
    return {
        "job_id": str(job_id),
        "status": status,
        "tags": labels or {},
        "params": params,
        "started_at": started_at.isoformat() if started_at else None,
        "finished_at": finished_at.isoformat() if finished_at else None,
        "duration_ms": duration_ms(started_at, finished_at),
        "metrics": {},
    }


async def _runs(pool: asyncpg.Pool, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The runs of the known jobs among `job_ids`: projected, or accepted and still queued."""
    runs = {
        row["job_id"]: _run(
            row["job_id"],
            row["status"],
            row["kind"],
            row["target"],
            json.loads(row["labels"]),
            json.loads(row["train"]) if row["train"] is not None else None,
            row["started_at"],
            row["finished_at"],
        )
        for row in await pool.fetch(_JOBS, job_ids)
    }
    queued = [job_id for job_id in job_ids if job_id not in runs]
    if queued:
        codec = default_codec()
        for row in await pool.fetch(_QUEUED, queued):
            _, request = codec.decode(row["request"])
            runs[row["job_id"]] = _run(
                row["job_id"],
                "QUEUED",
                request.get("kind"),
                request.get("target"),
                request.get("labels"),
                _train_settings(request.get("train")),
            )
    return runs


async def compare_runs(request: Request) -> JSONResponse:
    """Jobs side by side: status, tags, params, duration and every metric's final value."""
    job_ids = compared_job_ids(request.query_params.getlist("jobs"))
    pool: asyncpg.Pool = request.app.state.pool
    foreign = set(await foreign_jobs(request, pool, job_ids))
    runs = await _runs(pool, [job_id for job_id in job_ids if job_id not in foreign])
    unknown = [str(job_id) for job_id in job_ids if job_id not in runs]
    if unknown:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"unknown": unknown})
    for row in await pool.fetch(_FINAL, job_ids, list(STAGES)):
        runs[row["job_id"]]["metrics"][row["name"]] = _point(row)
    ordered = [runs[job_id] for job_id in job_ids]
    return json_answer(
        RunComparison,
        {
            "runs": ordered,
            "metric_names": sorted({name for run in ordered for name in run["metrics"]}),
            "param_names": sorted({name for run in ordered for name in run["params"]}),
        },
    )
