"""Serves a process's Prometheus metrics on a port of its own: `GET /metrics`, nothing else.

The worker (faust) and the projector have no HTTP server; this one runs in a daemon thread
(prometheus_client's metrics are thread-safe), so it never waits on their event loops. The
text is prometheus_client's own exposition; only the routing is ours, so a wrong path or
method gets a 4xx with an `error_code` as on the API.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

METRICS_PATH = "/metrics"

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def metrics_app(registry: CollectorRegistry) -> Callable[[dict[str, Any], StartResponse], Any]:
    """A WSGI app: the registry's exposition on GET/HEAD /metrics, a JSON 4xx otherwise."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path != METRICS_PATH:
            return _error(start_response, "404 Not Found", "NOT_FOUND", f"only {METRICS_PATH}")
        if method not in ("GET", "HEAD"):
            return _error(
                start_response,
                "405 Method Not Allowed",
                "METHOD_NOT_ALLOWED",
                f"{METRICS_PATH} answers GET",
                [("Allow", "GET, HEAD")],
            )
        result: Iterable[bytes] = exposition(environ, start_response)
        return result

    return app


def _error(
    start_response: StartResponse,
    status: str,
    code: str,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json.dumps({"error": message, "error_code": code, "details": {}}).encode()
    given = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, given + (headers or []))
    return [body]


# Each connection holds a thread: one that sends nothing (or too slowly) is closed after this.
IDLE_TIMEOUT_S = 10.0


class MetricsServer:
    """`GET /metrics` for one registry on host:port (0: any free port) in a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.idle_timeout_s = idle_timeout_s
        self._server: _Server | None = None

    def start(self) -> int:
        """Listen and serve; the port listened on."""
        server = make_server(
            self.host,
            self.port,
            metrics_app(self.registry),
            server_class=_Server,
            handler_class=type("Handler", (_QuietHandler,), {"timeout": self.idle_timeout_s}),
        )
        self._server = server
        self.port = server.server_port
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int | None, process: str
) -> MetricsServer | None:
    """Serve the registry when a port is set; a port in use is logged, never fatal: the
    process does its work without metrics rather than not at all."""
    if port is None:
        return None
    server = MetricsServer(registry, host, port)
    try:
        bound = server.start()
    except OSError as error:
        log.error("%s metrics not served: cannot listen on %s:%d (%s)", process, host, port, error)
        return None
    # A port of its choosing is said where it shows: nobody could find it otherwise.
    said = log.warning if port == 0 else log.info
    said("%s metrics at http://%s:%d%s", process, host, bound, METRICS_PATH)
    return server
