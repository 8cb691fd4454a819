"""The live API against its own OpenAPI document: schemathesis over real HTTP (uvicorn), and
the answers about a real job checked against the document too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import BaseSchema, Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.client import StagecastClient
from api.dashboard import Dashboard
from api.docs import DocsPage
from api.openapi import openapi_document
from api.routes import operations
from streams.launcher import Launcher
from tests.conftest import WARMUP_DSL, Pipeline, api_alone
from tests.integration.test_auth import bearer, create_key, tenant

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
# Enough to reach every documented parameter and error of each operation, few enough that the
# run takes about a minute here.
MAX_EXAMPLES = 25
REQUEST_TIMEOUT_S = 10.0
# An SSE feed may never end (the firehose never does): schemathesis reads one for this long,
# or until MAX_STREAM_EVENTS events, then checks every event it read against the document.
# What the feed holds after the resume point arrives at once; the firehose alone meets ~160
# cases, so each waits no longer.
FEED_TIMEOUT_S = 0.5
MAX_STREAM_EVENTS = 20
FEEDS = frozenset({"/events", "/jobs/{job_id}/events"})


# The document the API serves, generated in process at collection (the live one is compared
# with it below): schemathesis makes one test per operation from it.
DOCUMENT = openapi_document(operations(Dashboard(), DocsPage()))
CONFIG = {
    "request-timeout": REQUEST_TIMEOUT_S,
    "max-stream-events": MAX_STREAM_EVENTS,
    # No stateful phase: it chains operations through links, which the document has not.
    "phases": {"stateful": {"enabled": False}},
}
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture
def api_schema(pipeline: Pipeline) -> BaseSchema:
    config = schemathesis.Config.from_dict({**CONFIG, "base-url": pipeline.api_url})
    return schemathesis.openapi.from_url(f"{pipeline.api_url}/openapi.json", config=config)


def test_the_live_document_is_the_one_generated_from_the_operations(pipeline: Pipeline) -> None:
    assert httpx.get(f"{pipeline.api_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_document_says(case: Case[Any], pipeline: Pipeline) -> None:
    timeout = FEED_TIMEOUT_S if case.operation.path in FEEDS else REQUEST_TIMEOUT_S
    case.call_and_validate(base_url=pipeline.api_url, checks=CHECKS, timeout=timeout)


async def _finished_job(api_url: str) -> str:
    async with StagecastClient(api_url) as client:
        accepted = await client.submit(WARMUP_DSL, labels={"suite": "openapi"})
        async for event in client.events(accepted["job_id"]):
            if event.type == "JobFinished":
                break
    return str(accepted["job_id"])


def test_a_real_jobs_answers_conform_to_the_document(
    pipeline: Pipeline, api_schema: BaseSchema
) -> None:
    """Random ids mostly meet 404s: these are the answers about jobs that exist."""
    first = asyncio.run(asyncio.wait_for(_finished_job(pipeline.api_url), 120))
    second = asyncio.run(asyncio.wait_for(_finished_job(pipeline.api_url), 120))
    artifacts = httpx.get(f"{pipeline.api_url}/jobs/{first}/artifacts").json()["artifacts"]
    assert artifacts, "the warm-up model's codegen stores its module"
    job = {"job_id": first}
    # Method, path, the request's parts, and the status the answer must have.
    asked: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/jobs", {"query": {"limit": 2}}, 200),
        ("GET", "/jobs", {"query": {"label": ["suite:openapi"]}}, 200),
        ("GET", "/jobs/{job_id}", {"path_parameters": job}, 200),
        ("GET", "/jobs/{job_id}/stages", {"path_parameters": job}, 200),
        ("GET", "/jobs/{job_id}/metrics", {"path_parameters": job}, 200),
        ("GET", "/jobs/{job_id}/artifacts", {"path_parameters": job}, 200),
        (
            "GET",
            "/jobs/{job_id}/artifacts/{name}",
            {"path_parameters": {**job, "name": artifacts[0]["name"]}},
            200,
        ),
        ("GET", "/jobs/{job_id}/events", {"path_parameters": job}, 200),
        ("GET", "/events", {"query": {"job": [first], "after": 0}}, 200),
        ("GET", "/runs/compare", {"query": {"jobs": f"{first},{second}"}}, 200),
        ("POST", "/jobs/{job_id}/cancel", {"path_parameters": job}, 409),
        ("GET", "/dashboard/failures", {}, 200),
        ("GET", "/ready", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/openapi.json", {}, 200),
    ]
    for method, path, parts, status in asked:
        case = api_schema[path][method].Case(**parts)
        timeout = FEED_TIMEOUT_S if path in FEEDS else REQUEST_TIMEOUT_S
        response = case.call_and_validate(checks=CHECKS, timeout=timeout)
        assert response.status_code == status, (method, path, response.text[:300])


def test_a_submission_and_its_duplicate_conform_to_the_document(
    pipeline: Pipeline, api_schema: BaseSchema
) -> None:
    body: dict[str, Any] = {
        "dsl": WARMUP_DSL,
        "stages": ["parse"],
        "idempotency_key": uuid.uuid4().hex,
    }
    submit = api_schema["/jobs"]["POST"]
    first = submit.Case(body=body).call_and_validate(checks=CHECKS)
    again = submit.Case(body=body).call_and_validate(checks=CHECKS)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["duplicate"] is True


@pytest.fixture(scope="module")
def keys_mode(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API process of its own in keys mode, on the pipeline's database and topics."""
    settings = pipeline.settings.model_copy(update={"auth": "keys"})
    with api_alone(settings, tmp_path_factory.mktemp("openapi-keys")) as launcher:
        yield launcher


def _path_parameters(operation: dict[str, Any]) -> dict[str, Any]:
    """Valid path parameters: a job id, an artifact name, or the first file a page loads."""
    values: dict[str, Any] = {}
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            schema = parameter["schema"]
            values[parameter["name"]] = (
                str(uuid.uuid4())
                if schema.get("format") == "uuid"
                else schema.get("enum", ["x"])[0]
            )
    return values


def test_keys_mode_refusals_are_the_documented_ones(
    pipeline: Pipeline, keys_mode: Launcher
) -> None:
    """Open mode never refuses: here every operation is asked without a key, and a key is
    refused for its scope and its rate, each answer checked against the document."""
    refused = {}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            case = schema[path][method.upper()].Case(path_parameters=_path_parameters(operation))
            response = case.call_and_validate(
                base_url=keys_mode.api_url, checks=CHECKS, timeout=FEED_TIMEOUT_S
            )
            refused[method, path] = response.status_code == 401
    public = {key for key, was in refused.items() if not was}
    assert public == {
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/docs/assets/{name}"),
        ("get", "/dashboard"),
        ("get", "/dashboard/assets/{name}"),
    }
    reader = create_key(pipeline, tenant(), scopes="read", rate=1)
    submit = schema["/jobs"]["POST"].Case(body={"dsl": WARMUP_DSL}, headers=bearer(reader))
    no_scope = submit.call_and_validate(base_url=keys_mode.api_url, checks=CHECKS)
    over_rate = submit.call_and_validate(base_url=keys_mode.api_url, checks=CHECKS)
    assert (no_scope.status_code, no_scope.json()["error_code"]) == (403, "SCOPE_MISSING")
    assert (over_rate.status_code, over_rate.json()["error_code"]) == (429, "RATE_LIMITED")
    headers = {name.lower(): values for name, values in over_rate.headers.items()}
    assert int(headers["retry-after"][0]) >= 1
