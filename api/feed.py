"""The SSE feed of a job: every event after Last-Event-ID, live as the projector commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import asyncpg
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from api.auth import while_key_holds
from api.errors import ApiError
from api.feed_pages import PAGE, FeedPages
from api.inputs import ascii_int
from api.tenancy import own_tenant, visible_to

NOTIFY_CHANNEL = "stagecast_events"
TERMINAL_EVENTS = frozenset({"JobFinished", "JobRejected"})
_MAX_SEQ = 2**63 - 1
# How often a feed re-reads without a NOTIFY: a safety net while LISTEN works, polling when not.
_RECHECK_LISTENING_S = 15.0
_RECHECK_POLLING_S = 1.0

log = logging.getLogger(__name__)


class FeedNotifier:
    """One LISTEN connection per API process; wakes the feeds of the jobs a commit touched.

    The projector's payload is `<max seq> <job id> <job id> ...`, or just `<max seq>` when
    the list would not fit a NOTIFY; then every feed wakes. The firehose wakes at every commit.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._every_commit: set[asyncio.Event] = set()
        self._conn: asyncpg.Connection | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """True while NOTIFYs arrive; feeds poll faster when they may not."""
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        await self._connect()
        self._keeper = asyncio.create_task(self._keep_listening())

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _keep_listening(self) -> None:
        """Reconnect when the LISTEN connection drops; feeds fall back to polling meanwhile."""
        while True:
            await asyncio.sleep(1.0)
            if self.listening:
                continue
            try:
                await self._connect()
            except Exception as error:  # the database may be down for a while: keep trying
                log.warning("LISTEN connection failed (%s); feeds are polling", error)
                continue
            self._wake_all()

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        head, *jobs = str(payload).split() or [""]
        if ascii_int(head) is None:
            return
        for event in self._every_commit:
            event.set()
        if not jobs:
            self._wake_all()
            return
        for text in jobs:
            try:
                job_id = uuid.UUID(text)
            except ValueError:
                continue
            for event in self._watchers.get(job_id, ()):
                event.set()

    def _wake_all(self) -> None:
        for events in (*self._watchers.values(), self._every_commit):
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when a commit touches `job_id`; watch before reading, so none is missed."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._watchers[job_id]
            events.discard(event)
            if not events:
                del self._watchers[job_id]

    @contextlib.contextmanager
    def watch_every_commit(self) -> Iterator[asyncio.Event]:
        """An event set after every commit that added to the feed; watch before reading."""
        event = asyncio.Event()
        self._every_commit.add(event)
        try:
            yield event
        finally:
            self._every_commit.discard(event)


def parse_last_event_id(request: Request) -> int:
    """Where a job feed resumes: Last-Event-ID, else `?after=`, else its start."""
    resume = parse_resume_point(request)
    return 0 if resume is None else resume


def parse_resume_point(request: Request) -> int | None:
    """The seq a feed resumes after: Last-Event-ID (an EventSource's reconnect), else `?after=`.

    None when neither is given (or both are empty). The header wins because a reconnecting
    EventSource sends it with the URL it first opened, `?after=` included.
    """
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if not raw:
        return None
    seq = ascii_int(raw)
    if seq is None or seq > _MAX_SEQ:
        raise ApiError(
            400,
            "INVALID_LAST_EVENT_ID",
            "Last-Event-ID must be a seq: an integer from 0 to 2^63-1",
            {"given": raw[:64]},
        )
    return seq


def parse_job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(
            400, "INVALID_JOB_ID", "job id must be a UUID", {"given": raw[:64]}
        ) from None


async def job_feed(
    pages: FeedPages,
    notifier: FeedNotifier,
    job_id: uuid.UUID,
    after: int,
) -> AsyncGenerator[dict[str, Any], None]:
    """Events of one job after `after`, in seq order, until the job's terminal event."""
    while True:
        # Watch before reading: a commit landing mid-query still wakes us.
        with notifier.watch(job_id) as changed:
            rows = await pages.page(job_id, after)
            for row in rows:
                after = row["seq"]
                yield {"id": str(row["seq"]), "event": row["type"], "data": row["payload"]}
                if row["type"] in TERMINAL_EVENTS:
                    return
            if len(rows) == PAGE:
                continue
            recheck = _RECHECK_LISTENING_S if notifier.listening else _RECHECK_POLLING_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), recheck)


# Whether the job exists (in the outbox, projected, or with events of its own) and is the
# caller's to see, and where its feed ended if it did.
_FEED_START = f"""
SELECT (EXISTS (SELECT 1 FROM request_outbox WHERE job_id = $1)
            OR EXISTS (SELECT 1 FROM jobs WHERE job_id = $1)
            OR EXISTS (SELECT 1 FROM job_events WHERE job_id = $1))
           AND {visible_to("$1", "$3::text")} AS known,
       (SELECT max(seq) FROM job_events
        WHERE job_id = $1 AND type = ANY($2::text[])) AS ended_at
"""


async def job_events(request: Request) -> Response:
    job_id = parse_job_id(request.path_params["job_id"])
    after = parse_last_event_id(request)
    state = request.app.state
    job = await state.pool.fetchrow(_FEED_START, job_id, list(TERMINAL_EVENTS), own_tenant(request))
    if not job["known"]:
        # A feed for nothing would stay open forever. A job accepted a moment ago is known:
        # its request is in the outbox before the 202, long before the projector sees it.
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (yet)", {"job_id": str(job_id)})
    ended_at = job["ended_at"]
    if ended_at is not None and ended_at <= after:
        # Nothing will follow: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204)
    feed = job_feed(state.feed_pages, state.notifier, job_id, after)
    events = state.metrics.connected("job", while_key_holds(request, feed))
    return EventSourceResponse(
        events, ping=state.settings.sse_heartbeat_s, headers={"Cache-Control": "no-store"}
    )
