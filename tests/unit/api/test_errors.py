"""Which exceptions become which answers, on an app with the API's handlers and nothing else."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware


def _raising(error: Exception) -> httpx.AsyncClient:
    async def route(request: Request) -> Response:
        raise error

    app = Starlette(routes=[Route("/", route)], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=RequestIdMiddleware(app), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        OSError(113, "No route to host"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed mid-operation"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection: administrator command"),
        asyncpg.exceptions.CrashShutdownError("terminating connection: another server crashed"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_lost_database_is_503_with_retry_after(error: Exception) -> None:
    async with _raising(error) as http:
        response = await http.get("/", headers={"X-Request-ID": "r1"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": "the database is unavailable; retry shortly",
        "error_code": "DATABASE_UNAVAILABLE",
        "details": {"reason": type(error).__name__},
        "request_id": "r1",
    }


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UniqueViolationError("duplicate key value"),
        asyncpg.exceptions.UndefinedTableError('relation "jobs" does not exist'),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_other_failures_stay_500_internal(error: Exception) -> None:
    async with _raising(error) as http:
        response = await http.get("/")
    assert response.status_code == 500
    assert response.json()["error_code"] == "INTERNAL"
    assert "retry-after" not in response.headers
