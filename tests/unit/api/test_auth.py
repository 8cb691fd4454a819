"""Which scope each route needs."""

from __future__ import annotations

import pytest

from api.auth import required_scope


@pytest.mark.parametrize(
    ("method", "route", "scope"),
    [
        ("GET", "/health", None),
        ("GET", "/ready", None),
        ("GET", "/dashboard", None),
        ("GET", "/dashboard/assets/{name}", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", "/docs/assets/{name}", None),
        ("POST", "/jobs", "submit"),
        ("POST", "/jobs/{job_id}/cancel", "submit"),
        ("GET", "/jobs", "read"),
        ("GET", "/jobs/{job_id}", "read"),
        ("HEAD", "/jobs/{job_id}", "read"),
        ("GET", "/jobs/{job_id}/events", "read"),
        ("GET", "/events", "read"),
        ("GET", "/runs/compare", "read"),
        ("GET", "/metrics", "admin"),
        ("GET", "/dashboard/failures", "admin"),
        ("DELETE", "/jobs/{job_id}", "admin"),
        ("GET", None, "read"),
        ("PUT", None, "read"),
    ],
)
def test_each_route_needs_its_scope(method: str, route: str | None, scope: str | None) -> None:
    assert required_scope(method, route) == scope
