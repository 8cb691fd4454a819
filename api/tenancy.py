"""What a caller's tenant may see: with an API key, only that tenant's jobs.

Another tenant's job is answered as if it did not exist (404 JOB_NOT_FOUND, not 403), so a
key cannot learn which job ids are in use. Filters naming another tenant are refused (403):
that reveals nothing, and a filter quietly widened or emptied would.
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


async def require_visible(request: Request, pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    """JOB_NOT_FOUND for another tenant's job, as for one that does not exist."""
    if await foreign_jobs(request, pool, [job_id]):
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})
