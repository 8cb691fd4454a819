"""The API's own counts: requests by route template, and SSE clients while a feed streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.errors import EXCEPTION_HANDLERS
from api.metrics import OTHER_METHOD, UNMATCHED, ApiMetrics, HttpMetricsMiddleware


async def a_job(request: Request) -> Response:
    return JSONResponse({"job_id": request.path_params["job_id"]})


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug")


def client(metrics: ApiMetrics) -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/jobs/{job_id}", a_job), Route("/broken", broken)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    transport = httpx.ASGITransport(
        app=HttpMetricsMiddleware(app, metrics), raise_app_exceptions=False
    )
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def requests(metrics: ApiMetrics, route: str, method: str, status: int) -> float | None:
    labels = {"route": route, "method": method, "status": str(status)}
    return metrics.registry.get_sample_value("stagecast_http_requests_total", labels)


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    metrics = ApiMetrics()
    async with client(metrics) as api:
        for job in ("a", "b"):
            assert (await api.get(f"/jobs/{job}")).status_code == 200
        assert (await api.post("/jobs/a")).status_code == 405
        assert (await api.get("/no/such/path")).status_code == 404
        assert (await api.get("/broken")).status_code == 500
    assert requests(metrics, "/jobs/{job_id}", "GET", 200) == 2
    assert requests(metrics, "/jobs/{job_id}", "POST", 405) == 1
    # Paths no route knows share one label: a client cannot make up new series.
    assert requests(metrics, UNMATCHED, "GET", 404) == 1
    assert requests(metrics, "/broken", "GET", 500) == 1


async def test_made_up_methods_share_one_label() -> None:
    metrics = ApiMetrics()
    async with client(metrics) as api:
        for method in ("BREW", "FROB", "X-ANYTHING"):
            assert (await api.request(method, "/jobs/a")).status_code == 405
    assert requests(metrics, "/jobs/{job_id}", OTHER_METHOD, 405) == 3
    for method in ("BREW", "FROB", "X-ANYTHING"):
        assert requests(metrics, "/jobs/{job_id}", method, 405) is None


async def test_a_feed_counts_as_a_client_while_it_streams_and_is_closed_after() -> None:
    metrics = ApiMetrics()
    closed = []

    async def feed() -> AsyncGenerator[int, None]:
        try:
            for n in range(3):
                yield n
        finally:
            closed.append(True)

    def clients() -> float | None:
        return metrics.registry.get_sample_value("stagecast_sse_clients", {"feed": "job"})

    stream = metrics.connected("job", feed())
    assert await anext(stream) == 0
    assert clients() == 1
    # A client that goes away closes the stream mid-feed.
    await stream.aclose()
    assert clients() == 0
    assert closed == [True]
