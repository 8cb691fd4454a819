"""Errors as JSON values: {"error", "error_code", "details", "request_id"}, never tracebacks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.views import ErrorBody

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}
# The pool connects again on the next request: a client may retry this soon.
DATABASE_RETRY_AFTER_S = 5
# What a request meets while PostgreSQL is down, restarting or out of connections.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused or reset connections; TimeoutError too (connect and pool timeouts)
    asyncpg.exceptions.InterfaceError,  # "connection is closed", "pool is closing"
    # A pooled connection whose server died mid-operation: "cannot switch to state 15".
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08: ConnectionDoesNotExistError, ...
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: the server is starting or stopping
    asyncpg.exceptions.AdminShutdownError,  # 57P01: a shutdown ended the session
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
)


class ApiError(Exception):
    """An error a client can act on, with a stable code."""

    def __init__(self, status: int, code: str, message: str, details: Any | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else {}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(
    request: Request, status: int, code: str, message: str, details: Any | None = None
) -> JSONResponse:
    body = ErrorBody(
        error=message,
        error_code=code,
        details=details if details is not None else {},
        request_id=request_id(request),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    response = error_response(request, exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    return response


async def on_database_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DATABASE_UNAVAILABLE_ERRORS)
    reason = f"{type(exc).__name__}: {exc}"
    log.warning("database unavailable on %s %s (%s)", request.method, request.url.path, reason)
    response = error_response(
        request,
        503,
        "DATABASE_UNAVAILABLE",
        "the database is unavailable; retry shortly",
        {"reason": type(exc).__name__},
    )
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "INTERNAL", "internal error")


# Starlette picks the handler of the nearest class in the exception's MRO.
EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    **dict.fromkeys(DATABASE_UNAVAILABLE_ERRORS, on_database_unavailable),
    Exception: on_unexpected,
}


class RequestIdMiddleware:
    """Tags every request with an id (the client's X-Request-ID when given) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        rid = given or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)
