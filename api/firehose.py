"""The firehose: every job's feed in one SSE stream, filtered by tenant, event type, stage or job.

Why paging by seq is exact: `job_events.seq` comes from one identity sequence, and only
`project_batch` draws from it, on the one connection of the one projector that holds the
projector's advisory lock (`Projector._hold_lock`; a standby waits, and a dead connection's
transaction is rolled back before its lock is released). That connection runs one transaction
at a time, so every seq a transaction draws is above every seq of the transactions committed
before it, and its rows appear together at its commit. Hence when a statement sees the row
with seq N, every row with a lower seq that will ever exist is visible to it too (rolled-back
batches leave gaps, never late arrivals), and "everything after N" read now misses nothing
that a later read would find below N. A replay writes into a schema of its own, with its own
sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from api.auth import while_key_holds
from api.errors import ApiError
from api.feed import FeedNotifier, parse_resume_point
from api.inputs import is_tenant
from api.tenancy import tenant_filter
from streams.settings import STAGES

# The types the projector writes into the feed (JobRequested is not in it).
FEED_EVENT_TYPES = (
    "JobAccepted",
    "JobRejected",
    "StageChanged",
    "ProgressReported",
    "LogEmitted",
    "MetricRecorded",
    "ArtifactStored",
    "JobFinished",
)
MAX_FILTER_VALUES = 100
# The query parameters the firehose takes; any other is refused rather than ignored, since a
# misspelt filter would otherwise widen the stream silently.
_PARAMETERS = frozenset({"tenant", "type", "stage", "job", "after"})
# Rows one query may return, and the seq range one query may scan: a filter that matches
# little still reads a backlog in bounded steps, along the seq index.
_PAGE = 500
_WINDOW = 5000
_RECHECK_LISTENING_S = 15.0
_RECHECK_POLLING_S = 1.0


@dataclass(frozen=True, slots=True)
class FirehoseFilter:
    """Which events a firehose passes: each non-empty field must hold the event's value."""

    tenants: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    jobs: tuple[uuid.UUID, ...] = ()

    def where(self, first_parameter: int) -> tuple[str, list[Any]]:
        """SQL conditions on job_events (joined by AND, or TRUE) and their arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, values, sql_type in (
            # A job's tenant is in each of its events: no join with `jobs` needed.
            ("payload->>'tenant'", list(self.tenants), "text"),
            ("type", list(self.types), "text"),
            ("stage", list(self.stages), "text"),
            ("job_id", list(self.jobs), "uuid"),
        ):
            if values:
                args.append(values)
                clauses.append(f"{column} = ANY(${first_parameter + len(args) - 1}::{sql_type}[])")
        return (" AND ".join(clauses) or "TRUE"), args


def _invalid(message: str, details: dict[str, Any]) -> ApiError:
    return ApiError(400, "INVALID_QUERY", message, details)


def _shown(text: str) -> str:
    """A given value as an error may quote it: cut short, any lone surrogate escaped."""
    return text[:100].encode("utf-8", "backslashreplace").decode()


def _values(params: Iterable[tuple[str, str]], name: str, *, commas: bool) -> list[str]:
    """Every value of a repeatable parameter; comma lists split where values hold no comma."""
    found: list[str] = []
    for key, value in params:
        if key == name:
            found.extend(value.split(",") if commas else [value])
    if len(found) > MAX_FILTER_VALUES:
        raise _invalid(f"at most {MAX_FILTER_VALUES} `{name}` values", {"given": len(found)})
    return found


def _known(name: str, given: list[str], known: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [_shown(value) for value in given if value not in known]
    if unknown:
        raise _invalid(f"unknown `{name}`", {"unknown": unknown[:20], "known": list(known)})
    return tuple(dict.fromkeys(given))


def firehose_filter(params: Iterable[tuple[str, str]]) -> FirehoseFilter:
    """The filter a query string asks for; INVALID_QUERY naming any value that cannot match.

    `type`, `stage` and `job` repeat or take comma lists; `tenant` only repeats, since a
    tenant's name may hold a comma.
    """
    params = list(params)
    unknown = sorted({_shown(key) for key, _ in params} - _PARAMETERS)
    if unknown:
        raise _invalid(
            "unknown query parameter", {"unknown": unknown, "known": sorted(_PARAMETERS)}
        )
    tenants = _values(params, "tenant", commas=False)
    bad_tenants = [_shown(tenant) for tenant in tenants if not is_tenant(tenant)]
    if bad_tenants:
        raise _invalid("`tenant` must be 1-100 printable characters", {"given": bad_tenants[:20]})
    jobs: list[uuid.UUID] = []
    for text in _values(params, "job", commas=True):
        try:
            jobs.append(uuid.UUID(text))
        except ValueError:
            raise _invalid("`job` must be a job id (UUID)", {"given": _shown(text)}) from None
    return FirehoseFilter(
        tenants=tuple(dict.fromkeys(tenants)),
        types=_known("type", _values(params, "type", commas=True), FEED_EVENT_TYPES),
        stages=_known("stage", _values(params, "stage", commas=True), STAGES),
        jobs=tuple(dict.fromkeys(jobs)),
    )


_FEED_END = "SELECT COALESCE(max(seq), 0) FROM job_events"


async def firehose_feed(
    pool: asyncpg.Pool, notifier: FeedNotifier, wanted: FirehoseFilter, after: int
) -> AsyncGenerator[dict[str, Any], None]:
    """Every event after `after` that `wanted` passes, in seq order, for as long as one listens.

    The first message carries only `after` as its id: an EventSource remembers it, so a client
    that drops before any event resumes where it started, not at the end of the feed then.
    """
    conditions, args = wanted.where(first_parameter=4)
    query = (
        "SELECT seq, type, payload FROM job_events "
        f"WHERE seq > $1 AND seq <= $2 AND {conditions} ORDER BY seq LIMIT $3"
    )
    yield {"id": str(after)}
    scanned = after
    while True:
        # Watch before reading: a commit landing mid-query still wakes us.
        with notifier.watch_every_commit() as committed:
            end = await pool.fetchval(_FEED_END)
            while scanned < end:
                upto = min(end, scanned + _WINDOW)
                rows = await pool.fetch(query, scanned, upto, _PAGE, *args)
                for row in rows:
                    yield {"id": str(row["seq"]), "event": row["type"], "data": row["payload"]}
                scanned = rows[-1]["seq"] if len(rows) == _PAGE else upto
            recheck = _RECHECK_LISTENING_S if notifier.listening else _RECHECK_POLLING_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committed.wait(), recheck)


async def firehose_events(request: Request) -> Response:
    """GET /events: live from the feed's end, or after Last-Event-ID / `?after=` (0: all)."""
    asked = firehose_filter(request.query_params.multi_items())
    wanted = replace(asked, tenants=tuple(tenant_filter(request, asked.tenants)))
    resume = parse_resume_point(request)
    state = request.app.state
    end = await state.pool.fetchval(_FEED_END)
    if resume is not None and resume > end:
        # No such event has been written: this id is from another database, or made up.
        raise ApiError(
            400,
            "INVALID_LAST_EVENT_ID",
            "Last-Event-ID is past the end of the feed",
            {"given": resume, "last_seq": end},
        )
    after = end if resume is None else resume
    feed = firehose_feed(state.pool, state.notifier, wanted, after)
    events = state.metrics.connected("all", while_key_holds(request, feed))
    return EventSourceResponse(
        events, ping=state.settings.sse_heartbeat_s, headers={"Cache-Control": "no-store"}
    )
