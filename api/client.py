"""The Python SDK of the stagecast API: submit jobs, list and read them, follow their feeds,
wait for them, cancel them, read their runs and download their artifacts (README "Python SDK").

What the API refuses is raised as `ApiRequestError`, carrying the API's `error_code`; what the
client itself gives up on (`WaitTimeout`, `DownloadMismatch`) derives from `StagecastError`
too. Transport failures (no API at the URL, a dropped connection that could not be resumed)
are httpx's own `httpx.TransportError`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

TERMINAL_EVENTS = frozenset({"JobFinished", "JobRejected"})
# What the API sends before it ends a feed whose key was revoked (api/auth.py); its data is the
# error body a new request would get.
FEED_DENIED = "denied"
# Heartbeats arrive every 15 s by default: a minute of silence means the connection is dead.
FEED_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One SSE message of a job feed."""

    seq: int
    type: str
    data: dict[str, Any]


class StagecastError(Exception):
    """Anything the client raises of its own (transport failures stay httpx's)."""


class ApiRequestError(StagecastError):
    """The API answered with an error body: `code` is its `error_code` (`JOB_NOT_FOUND`, ...)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error_code')}: {body.get('error')}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        return str(self.body.get("error_code"))

    @property
    def message(self) -> str:
        return str(self.body.get("error", ""))

    @property
    def details(self) -> Any:
        return self.body.get("details") or {}

    @property
    def request_id(self) -> str | None:
        rid = self.body.get("request_id")
        return None if rid is None else str(rid)


class WaitTimeout(StagecastError):
    """`wait()` gave up: the job had not ended within the time allowed."""

    def __init__(self, job_id: str, max_wait_s: float) -> None:
        super().__init__(f"job {job_id} had not ended after {max_wait_s:g} s")
        self.job_id = job_id
        self.max_wait_s = max_wait_s


class DownloadMismatch(StagecastError):
    """A downloaded artifact's bytes do not hash to the ETag the API sent with them."""


# Connections one client may hold open at once (feeds followed and requests in flight).
CONNECTIONS = 100
# An idle kept-alive connection is dropped after this long, well before uvicorn closes its end
# (5 s): at the same 5 s, a request could go out on a connection the server was closing, and
# fail with ReadError before any answer (seen once in test_replay's burst of submissions).
KEEPALIVE_EXPIRY_S = 2.0


class StagecastClient:
    """`api_key` is sent as `Authorization: Bearer` on every request (needed in keys mode);
    `tenant` as X-Tenant, which open mode takes as the submitting tenant."""

    def __init__(
        self,
        base_url: str,
        tenant: str | None = None,
        timeout: float = 30.0,
        *,
        api_key: str | None = None,
    ) -> None:
        headers = {"X-Tenant": tenant} if tenant else {}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One client follows many jobs at once, each feed holding a connection: as many kept
        # alive as may be open, so a finished feed's connection serves the next request
        # instead of a new TCP connection each time (httpx keeps 20 by default).
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=CONNECTIONS,
                max_keepalive_connections=CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
        )

    async def __aenter__(self) -> StagecastClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        dsl: str | None = None,
        *,
        kind: str = "MODEL",
        code: str | None = None,
        language: str | None = None,
        stdin: str | None = None,
        limits: dict[str, int] | None = None,
        train: dict[str, Any] | None = None,
        stages: Sequence[str] = (),
        target: str = "pytorch",
        idempotency_key: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "target": target, "stages": list(stages)}
        if dsl is not None:
            body["dsl"] = dsl
        if code is not None:
            body["code"] = code
        if language is not None:
            body["language"] = language
        if stdin is not None:
            body["stdin"] = stdin
        if limits:
            body["limits"] = limits
        if train:
            body["train"] = train
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if labels:
            body["labels"] = labels
        response = await self._http.post("/jobs", json=body)
        return self._checked(response)

    async def job(self, job_id: str) -> dict[str, Any]:
        return self._checked(await self._http.get(f"/jobs/{job_id}"))

    async def jobs(
        self,
        *,
        status: str | None = None,
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first: `{"jobs": [...], "next_cursor": ...}`; the cursor
        is there only when another page may follow, and `cursor=` asks for that page."""
        params: list[tuple[str, str | int | float | bool | None]] = [("limit", limit)]
        params += [("status", status)] if status is not None else []
        params += [("tenant", tenant)] if tenant is not None else []
        params += [("label", f"{key}:{value}") for key, value in (labels or {}).items()]
        params += [("cursor", cursor)] if cursor is not None else []
        return self._checked(await self._http.get("/jobs", params=params))

    async def all_jobs(
        self,
        *,
        status: str | None = None,
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every job matching the filters, newest first, read page by page."""
        cursor = None
        while True:
            page = await self.jobs(
                status=status, tenant=tenant, labels=labels, limit=page_size, cursor=cursor
            )
            for job in page["jobs"]:
                yield job
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    async def stages(self, job_id: str) -> list[dict[str, Any]]:
        """Every stage attempt of the job, in the order they started."""
        stages: list[dict[str, Any]] = self._checked(
            await self._http.get(f"/jobs/{job_id}/stages")
        )["stages"]
        return stages

    async def wait(self, job_id: str, max_wait_s: float | None = None) -> dict[str, Any]:
        """The job as `job()` gives it once it has ended (its feed's JobFinished or
        JobRejected), or `WaitTimeout` after `max_wait_s` seconds (None: however long)."""
        try:
            async with asyncio.timeout(max_wait_s):
                async for _ in self.events(job_id):
                    pass
        except TimeoutError:
            raise WaitTimeout(job_id, max_wait_s or 0.0) from None
        return await self.job(job_id)

    async def cancel(self, job_id: str, reason: str = "") -> dict[str, Any]:
        """Ask every worker to stop the job; 409 (ApiRequestError) once it has ended."""
        body = {"reason": reason} if reason else {}
        return self._checked(await self._http.post(f"/jobs/{job_id}/cancel", json=body))

    async def metrics(self, job_id: str, names: Sequence[str] = ()) -> dict[str, Any]:
        """The job's metric history, `{"<name>": [{"step", "value", ...}, ...]}` by step."""
        response = await self._http.get(f"/jobs/{job_id}/metrics", params={"name": list(names)})
        metrics: dict[str, Any] = self._checked(response)["metrics"]
        return metrics

    async def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's artifacts, the attempt that counts for each name."""
        artifacts: list[dict[str, Any]] = self._checked(
            await self._http.get(f"/jobs/{job_id}/artifacts")
        )["artifacts"]
        return artifacts

    async def download(self, job_id: str, name: str) -> bytes:
        """An artifact's bytes, checked against the SHA-256 the API sends as its ETag."""
        response = await self._http.get(f"/jobs/{job_id}/artifacts/{quote(name, safe='')}")
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, _error_body(response))
        content = response.content
        expected = response.headers.get("etag", "").strip('"')
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            raise DownloadMismatch(f"{name}: sha256 {actual}, the API said {expected or 'none'}")
        return content

    async def compare(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """Jobs side by side: `{"runs": [...], "metric_names": [...], "param_names": [...]}`."""
        response = await self._http.get("/runs/compare", params={"jobs": ",".join(job_ids)})
        return self._checked(response)

    async def create_webhook(self, url: str, event_types: Sequence[str] = ()) -> dict[str, Any]:
        """Subscribe `url` to the tenant's events (all types when none are named); the answer
        holds the signing `secret`, shown this once."""
        body = {"url": url, "event_types": list(event_types)}
        return self._checked(await self._http.post("/webhooks", json=body))

    async def webhooks(self) -> list[dict[str, Any]]:
        """The tenant's webhooks, without their secrets."""
        found: list[dict[str, Any]] = self._checked(await self._http.get("/webhooks"))["webhooks"]
        return found

    async def delete_webhook(self, webhook_id: str) -> None:
        """Stop a webhook; what it still had pending ends FAILED."""
        response = await self._http.delete(f"/webhooks/{webhook_id}")
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, _error_body(response))

    async def webhook_deliveries(
        self, webhook_id: str, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A webhook's delivery log, newest first, each with every attempt in `history`."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        response = await self._http.get(f"/webhooks/{webhook_id}/deliveries", params=params)
        found: list[dict[str, Any]] = self._checked(response)["deliveries"]
        return found

    async def events(
        self, job_id: str, last_event_id: int | None = None, *, reconnects: int = 5
    ) -> AsyncIterator[FeedEvent]:
        """The job's feed after `last_event_id` until its terminal event.

        Like a browser's EventSource, a dropped connection is resumed with Last-Event-ID
        (up to `reconnects` times in a row), so no event is lost or repeated. A first
        connection that fails is not retried: there was nothing to resume.
        """
        feed = self._follow(f"/jobs/{job_id}/events", [], last_event_id, reconnects)
        # Closed as soon as the job ends, not whenever the generator is collected.
        async with contextlib.aclosing(feed):
            async for event in feed:
                yield event
                if event.type in TERMINAL_EVENTS:
                    return

    async def firehose(
        self,
        after: int | None = None,
        *,
        tenants: Sequence[str] = (),
        types: Sequence[str] = (),
        stages: Sequence[str] = (),
        jobs: Sequence[str] = (),
        reconnects: int = 5,
    ) -> AsyncGenerator[FeedEvent, None]:
        """Every job's events (GET /events) after `after`, or from now on when it is None.

        It never ends by itself (`aclose()` it). A dropped connection is resumed with
        Last-Event-ID (up to `reconnects` times in a row); the feed's first message names where
        it started, so a drop before any event resumes there too. A first connection that fails
        is not retried.
        """
        params = [("tenant", tenant) for tenant in tenants]
        params += [("type", ",".join(types))] if types else []
        params += [("stage", ",".join(stages))] if stages else []
        params += [("job", ",".join(jobs))] if jobs else []
        async with contextlib.aclosing(self._follow("/events", params, after, reconnects)) as feed:
            async for event in feed:
                yield event

    async def _follow(
        self, path: str, params: list[tuple[str, str]], last: int | None, reconnects: int
    ) -> AsyncGenerator[FeedEvent, None]:
        """The events of an SSE feed after `last`, resumed with Last-Event-ID after a drop (up
        to `reconnects` times in a row), until the server ends it with a 204. A first
        connection that fails is not retried: there was nothing to resume."""
        failures = 0
        connected = False
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=FEED_READ_TIMEOUT_S),
                ) as source:
                    connected = True
                    status = source.response.status_code
                    if status == 204:
                        return
                    if status != 200:
                        await source.response.aread()
                        raise ApiRequestError(status, _error_body(source.response))
                    async for sse in source.aiter_sse():
                        if sse.event == FEED_DENIED:
                            # The key that opened the feed was revoked meanwhile.
                            raise ApiRequestError(401, _denied_body(sse.data))
                        # A heartbeat repeats the last id; the firehose opens with its start.
                        if sse.id:
                            last = int(sse.id)
                        if not sse.data:
                            continue
                        failures = 0
                        yield FeedEvent(int(sse.id), sse.event, json.loads(sse.data))
            except httpx.TransportError:
                failures += 1
                if not connected or failures > reconnects:
                    raise
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    @staticmethod
    def _checked(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, _error_body(response))
        body: dict[str, Any] = response.json()
        return body


def _denied_body(data: str) -> dict[str, Any]:
    """The error body a `denied` message carries, or one made up when it is not ours."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"error": data[:200], "error_code": "FEED_DENIED"}


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The API's error body, or one made up from a response that is not ours (a proxy's)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"error": response.text[:200], "error_code": f"HTTP_{response.status_code}"}
