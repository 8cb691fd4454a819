"""What a caller's tenant may see: with an API key, only that tenant's jobs.

Another tenant's job is answered as if it did not exist (404 JOB_NOT_FOUND, not 403), so a
key cannot learn which job ids are in use. Filters naming another tenant are refused (403):
that reveals nothing, and a filter quietly widened or emptied would. A route on one job checks
the owner in the query that reads the job (`visible_to`, or the owner it read), not in a query
of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
from starlette.requests import Request

from api.auth import caller
from api.errors import ApiError

# Whose job it is: the projection's row, or the outbox's before it is projected.
_OWNERS = """
SELECT asked.job_id, COALESCE(j.tenant, o.tenant) AS tenant
FROM unnest($1::uuid[]) AS asked(job_id)
LEFT JOIN jobs j ON j.job_id = asked.job_id
LEFT JOIN request_outbox o ON o.job_id = asked.job_id
"""


def own_tenant(request: Request) -> str | None:
    """The only tenant the caller may see, or None when it may see all (open mode)."""
    return caller(request).tenant


def tenant_filter(request: Request, asked: Sequence[str]) -> list[str]:
    """The tenants a listing may show: what was asked, narrowed to the caller's own."""
    own = own_tenant(request)
    if own is None:
        return list(asked)
    if any(tenant != own for tenant in asked):
        raise ApiError(
            403,
            "TENANT_FORBIDDEN",
            "this API key reads its own tenant's jobs only",
            {"tenant": own},
        )
    return [own]


async def foreign_jobs(
    request: Request, pool: asyncpg.Pool, job_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """The jobs among `job_ids` the caller may not see (every job is visible in open mode)."""
    own = own_tenant(request)
    if own is None:
        return []
    rows = await pool.fetch(_OWNERS, list(job_ids))
    return [row["job_id"] for row in rows if row["tenant"] is not None and row["tenant"] != own]


def visible_to(job_id: str, tenant: str) -> str:
    """A SQL condition: the job `job_id` is not another tenant's than `tenant` (both SQL
    expressions, `tenant` a text parameter), by its projection's row or, before it is
    projected, its request in the outbox. A NULL tenant (open mode) sees every job: `<>` with
    NULL is never true."""
    return (
        f"NOT EXISTS (SELECT 1 FROM jobs WHERE job_id = {job_id} AND tenant <> {tenant}) "
        f"AND NOT EXISTS "
        f"(SELECT 1 FROM request_outbox WHERE job_id = {job_id} AND tenant <> {tenant})"
    )


def require_visible(request: Request, job_id: uuid.UUID, owner: str | None) -> None:
    """JOB_NOT_FOUND for another tenant's job, as for one that does not exist; `owner` is the
    tenant the route read with the job (None: no job read)."""
    own = own_tenant(request)
    if own is not None and owner is not None and owner != own:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})
