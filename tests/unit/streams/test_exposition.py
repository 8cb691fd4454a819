"""The metrics port answers GET /metrics with prometheus_client's exposition, 4xx otherwise."""

from __future__ import annotations

import io
import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from streams.exposition import metrics_app


def call(registry: CollectorRegistry, method: str, path: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "0",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = b"".join(metrics_app(registry)(environ, start_response))
    return answer["status"], answer["headers"], body


def registry_with_a_count() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("stagecast_things", "Things.", registry=registry).inc(3)
    return registry


def test_get_metrics_is_the_text_exposition() -> None:
    status, headers, body = call(registry_with_a_count(), "GET", "/metrics")
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["stagecast_things"].samples[0].value == 3.0


def test_another_path_is_404_with_an_error_code() -> None:
    status, _, body = call(registry_with_a_count(), "GET", "/metricz")
    assert status.startswith("404")
    assert json.loads(body)["error_code"] == "NOT_FOUND"


def test_another_method_is_405_with_allow() -> None:
    status, headers, body = call(registry_with_a_count(), "POST", "/metrics")
    assert status.startswith("405")
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["error_code"] == "METHOD_NOT_ALLOWED"
