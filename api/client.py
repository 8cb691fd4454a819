"""A small client for the stagecast API: submit jobs, read them, follow their SSE feeds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One SSE message of a job feed."""

    seq: int
    type: str
    data: dict[str, Any]


class ApiRequestError(Exception):
    """The API answered with an error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error_code')}: {body.get('error')}")
        self.status = status
        self.body = body


class StagecastClient:
    def __init__(self, base_url: str, tenant: str | None = None, timeout: float = 30.0) -> None:
        headers = {"X-Tenant": tenant} if tenant else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

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
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if labels:
            body["labels"] = labels
        response = await self._http.post("/jobs", json=body)
        return self._checked(response)

    async def job(self, job_id: str) -> dict[str, Any]:
        return self._checked(await self._http.get(f"/jobs/{job_id}"))

    async def events(
        self, job_id: str, last_event_id: int | None = None
    ) -> AsyncIterator[FeedEvent]:
        """The job's feed from after `last_event_id` until its terminal event."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        timeout = httpx.Timeout(30.0, read=None)
        async with aconnect_sse(
            self._http, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code != 200:
                await source.response.aread()
                raise ApiRequestError(source.response.status_code, source.response.json())
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # a heartbeat: the decoder re-reports the last id with no data
                yield FeedEvent(int(sse.id), sse.event, json.loads(sse.data))

    @staticmethod
    def _checked(response: httpx.Response) -> dict[str, Any]:
        body: dict[str, Any] = response.json()
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, body)
        return body
