"""The OpenAPI document: complete, valid OpenAPI 3.1, generated from the models."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import ValidationError
from schemathesis.specs.openapi.definitions import OPENAPI_31
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from api.app import create_app
from api.dashboard import Dashboard
from api.docs import DocsPage
from api.errors import EXCEPTION_HANDLERS
from api.models import JobSubmission
from api.operations import starlette_routes
from api.routes import operations
from api.views import Health, JobQueued, json_answer
from streams.settings import Settings

# What api/auth.py lets anyone call: the probes, the document and the static pages.
PUBLIC = {
    ("/health", "get"),
    ("/ready", "get"),
    ("/openapi.json", "get"),
    ("/docs", "get"),
    ("/docs/assets/{name}", "get"),
    ("/dashboard", "get"),
    ("/dashboard/assets/{name}", "get"),
}
AUTH_ERRORS = {"401", "403", "429"}


def _starlette(app: ASGIApp) -> Starlette:
    """The Starlette app inside the middleware create_app wraps it in."""
    while not isinstance(app, Starlette):
        app = app.app  # type: ignore[attr-defined]
    return app


@pytest.fixture(scope="module")
def app() -> Starlette:
    settings = Settings(_env_file=None, database_url="postgresql://nowhere/none")  # type: ignore[call-arg]
    return _starlette(create_app(settings))


@pytest.fixture(scope="module")
def document(app: Starlette) -> dict[str, Any]:
    return dict(app.state.openapi)


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_every_route_the_app_serves_is_in_the_document(
    app: Starlette, document: dict[str, Any]
) -> None:
    documented = set(_operations(document))
    served = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        # Starlette answers HEAD wherever it answers GET; HTTP defines HEAD by GET.
        served |= {(path, method.lower()) for method in route.methods or () if method != "HEAD"}
    assert served == documented
    assert len(served) == 24


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    # Every reference points at a component that is there.
    refs = {
        ref.split("/")[-1] for ref in _refs(document) if ref.startswith("#/components/schemas/")
    }
    assert refs <= set(document["components"]["schemas"])


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def test_every_operation_but_the_public_ones_asks_for_a_key(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key; none in open mode",
    }
    assert document["security"] == [{"bearer": []}]
    public = set()
    for key, operation in _operations(document).items():
        codes = {
            status: answer["content"]["application/json"]["schema"]["properties"]["error_code"][
                "enum"
            ]
            for status, answer in operation["responses"].items()
            if int(status) >= 400
        }
        if operation.get("security") == []:
            public.add(key)
            assert not AUTH_ERRORS & set(codes)
            continue
        assert "security" not in operation
        assert {"API_KEY_MISSING", "API_KEY_INVALID", "API_KEY_REVOKED"} <= set(codes["401"])
        assert "SCOPE_MISSING" in codes["403"]
        assert codes["429"] == ["RATE_LIMITED"]
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert "DATABASE_UNAVAILABLE" in codes["503"]
    assert public == PUBLIC
    # An operation's own 403 codes stay beside the scope's.
    listing = document["paths"]["/jobs"]["get"]["responses"]["403"]
    assert listing["content"]["application/json"]["schema"]["properties"]["error_code"]["enum"] == [
        "TENANT_FORBIDDEN",
        "SCOPE_MISSING",
    ]


def test_error_answers_name_their_codes_on_the_shared_error_body(document: dict[str, Any]) -> None:
    submit = document["paths"]["/jobs"]["post"]["responses"]
    schema = submit["422"]["content"]["application/json"]["schema"]
    assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorBody"}]
    assert "VALIDATION_FAILED" in schema["properties"]["error_code"]["enum"]
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["error", "error_code", "details", "request_id"]
    for operation in _operations(document).values():
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert "application/json" in answer["content"], (operation, status)


def test_bodies_and_parameters_come_from_the_models(document: dict[str, Any]) -> None:
    submit = document["paths"]["/jobs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSubmission"
    }
    components = document["components"]["schemas"]
    assert (
        components["JobSubmission"]["properties"]
        == (
            JobSubmission.model_json_schema(ref_template="#/components/schemas/{model}")[
                "properties"
            ]
        )
    )
    listing = {p["name"]: p for p in document["paths"]["/jobs"]["get"]["parameters"]}
    assert listing["limit"]["schema"] == {
        "default": 50,
        "maximum": 500,
        "minimum": 1,
        "type": "integer",
    }
    # An optional parameter is left out, never sent as null.
    assert listing["status"]["schema"]["type"] == "string"
    assert listing["label"]["explode"] is True
    artifact = document["paths"]["/jobs/{job_id}/artifacts/{name}"]["get"]
    assert artifact["responses"]["200"]["content"] == {
        "*/*": {"schema": {"type": "string", "format": "binary"}}
    }


def test_feeds_are_documented_as_event_streams_of_feed_events(document: dict[str, Any]) -> None:
    for path in ("/events", "/jobs/{job_id}/events"):
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        data = content["text/event-stream"]["schema"]["properties"]["data"]
        assert data["contentSchema"] == {"$ref": "#/components/schemas/FeedEvent"}
    assert (
        "JobFinished"
        in (
            document["paths"]["/events"]["get"]["responses"]["200"]["content"]["text/event-stream"][
                "schema"
            ]["properties"]["event"]["enum"]
        )
    )


def test_an_answer_that_does_not_fit_its_model_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValidationError):
        json_answer(Health, {"status": "ok", "uptime": 3})
    with pytest.raises(ValidationError):
        json_answer(JobQueued, {"job_id": "j", "status": "RUNNING", "stages": [], "links": {}})


def test_an_optional_key_left_out_stays_out() -> None:
    links = {"self": "/jobs/j", "events": "e", "metrics": "m", "artifacts": "a"}
    body = {"job_id": "j", "status": "QUEUED", "stages": ["parse"], "links": links}
    response = json_answer(JobQueued, body, 202)
    assert response.status_code == 202
    assert response.body == (
        b'{"job_id":"j","status":"QUEUED","stages":["parse"],'
        b'"links":{"self":"/jobs/j","events":"e","metrics":"m","artifacts":"a"}}'
    )


def test_a_path_listed_twice_for_one_method_is_refused() -> None:
    listed = operations(Dashboard(), DocsPage())
    with pytest.raises(ValueError, match="listed twice"):
        starlette_routes([*listed, listed[0]])


async def test_an_artifact_name_with_a_line_break_is_refused_by_its_route() -> None:
    """The name's route takes any character, so the handler's check answers (no database is
    reached: the name is refused first)."""
    routes = starlette_routes(operations(Dashboard(), DocsPage()))
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(f"/jobs/{uuid.uuid4()}/artifacts/model%0A.pt")
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_ARTIFACT_NAME"
