"""The OpenAPI 3.1 document, generated from the operations and their pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import required_scope
from api.operations import Answer, Operation
from api.views import ErrorBody

TITLE = "stagecast"
VERSION = "0.1.0"
DESCRIPTION = (
    "Submit jobs that parse, compile, generate, run and train neural-network models, and "
    "follow them: REST reads and Server-Sent-Events feeds. Every error is an `ErrorBody` "
    "with a stable `error_code`.\n\n"
    "In keys mode every operation but the probes, this document and the static pages takes an "
    "API key as `Authorization: Bearer <key>`, with the scope the operation names. A "
    "deployment in open mode (the embedded default, for local use) has no keys and never "
    "answers 401, 403 or 429."
)
SECURITY_SCHEME = "bearer"
_REF = "#/components/schemas/{model}"
# What a client meets on every operation that needs a key (api/auth.py, api/keys.py): the
# key is looked up in PostgreSQL, which may be away.
_AUTH_ERRORS: dict[int, tuple[str, ...]] = {
    401: ("API_KEY_MISSING", "API_KEY_INVALID", "API_KEY_REVOKED"),
    403: ("SCOPE_MISSING",),
    429: ("RATE_LIMITED",),
    503: ("DATABASE_UNAVAILABLE",),
}
_RETRY_AFTER = {"Retry-After": "seconds to wait before trying again"}
_REASONS = {
    400: "Bad request",
    401: "No valid API key",
    403: "The key may not do this",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Not valid",
    429: "Rate limited",
    502: "A stored artifact cannot be served",
    503: "Unavailable",
}


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    """The whole document: paths, parameters, bodies, answers, errors and security."""
    schemas = _Schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        item = paths.setdefault(operation.document_path, {})
        item[operation.method.lower()] = _operation(operation, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key; none in open mode",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


class _Schemas:
    """The component schemas of every model the operations name, and references to them."""

    def __init__(self, operations: list[Operation]) -> None:
        wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
            (ErrorBody, "serialization"): None
        }
        for operation in operations:
            if operation.body is not None:
                wanted[operation.body, "validation"] = None
            for answer in operation.answers.values():
                if answer.model is not None:
                    wanted[answer.model, "serialization"] = None
                for model in answer.refers_to:
                    wanted[model, "serialization"] = None
        refs, top = models_json_schema(list(wanted), ref_template=_REF)
        self.refs = refs
        self.components: dict[str, Any] = top.get("$defs", {})

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self.refs[model, mode])


def _operation(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    scope = required_scope(operation.method, operation.path)
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
    }
    needs = "Anyone may call it." if scope is None else f"Needs the `{scope}` scope."
    document["description"] = f"{operation.description}\n\n{needs}".strip()
    if scope is None:
        document["security"] = []
    parameters = [
        parameter
        for location, model in operation.parameters.items()
        for parameter in _parameters(location, model)
    ]
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": schemas.ref(operation.body, "validation")}},
        }
    responses = {
        str(status): _answer(answer, schemas)
        for status, answer in sorted(operation.answers.items())
    }
    errors = {status: dict.fromkeys(codes) for status, codes in operation.errors.items()}
    if scope is not None:
        for status, codes in _AUTH_ERRORS.items():
            errors.setdefault(status, {}).update(dict.fromkeys(codes))
    for status, known in sorted(errors.items()):
        responses[str(status)] = _error(status, tuple(known), schemas)
    document["responses"] = responses
    return document


def _parameters(location: str, model: type[BaseModel]) -> list[dict[str, Any]]:
    """One parameter per field of `model`, named by its alias, with the field's own schema."""
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = _not_null(field_schema)
        field_schema.pop("title", None)
        description = field_schema.pop("description", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": location,
            "required": location == "path" or name in required,
            "schema": field_schema,
        }
        if description:
            parameter["description"] = description
        if field_schema.get("type") == "array":
            # Repeated: ?name=a&name=b.
            parameter["style"] = "form"
            parameter["explode"] = True
        parameters.append(parameter)
    return parameters


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the null an optional field allows: a parameter is sent or
    left out, never null."""
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if len(options) == 1:
        rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
        return {**options[0], **rest}
    return dict(schema)


def _headers(headers: dict[str, str] | Any) -> dict[str, Any]:
    return {
        name: {"description": description, "schema": {"type": "string"}}
        for name, description in headers.items()
    }


def _answer(answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    document: dict[str, Any] = {"description": answer.description}
    content = {media: dict(media_type) for media, media_type in answer.content.items()}
    if answer.model is not None:
        content["application/json"] = {"schema": schemas.ref(answer.model, "serialization")}
    if content:
        document["content"] = content
    if answer.headers:
        document["headers"] = _headers(answer.headers)
    return document


def _error(status: int, codes: tuple[str, ...], schemas: _Schemas) -> dict[str, Any]:
    """An error answer whose `error_code` is one of `codes`."""
    document: dict[str, Any] = {
        "description": f"{_REASONS.get(status, 'Error')}: {', '.join(codes)}",
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [schemas.ref(ErrorBody, "serialization")],
                    "properties": {"error_code": {"enum": list(codes)}},
                }
            }
        },
    }
    if status in (429, 503):
        document["headers"] = _headers(_RETRY_AFTER)
    return document


async def openapi_json(request: Request) -> JSONResponse:
    """The document `create_app` generated for this app's operations."""
    return JSONResponse(request.app.state.openapi)
