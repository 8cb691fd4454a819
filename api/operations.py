"""An operation: one method on one path, its handler and everything its documentation says.

The Starlette routes are built from the operations (`starlette_routes`) and so is the OpenAPI
document (`api/openapi.py`): a route cannot exist without its documentation.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]
Method = Literal["GET", "POST", "DELETE"]
# Where a parameter travels, as OpenAPI names it.
Location = Literal["path", "query", "header"]
# A path converter in a Starlette path ("{name:path}"), which OpenAPI does not write.
_CONVERTER = re.compile(r"\{(\w+):\w+\}")


@dataclass(frozen=True)
class Answer:
    """One documented response: a JSON body given by `model`, or `content` by media type
    (whose schemas may refer to the component schemas of the models in `refers_to`)."""

    description: str
    model: type[BaseModel] | None = None
    content: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    refers_to: tuple[type[BaseModel], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One method on one path: the handler, and what it takes and answers.

    `parameters` maps where parameters travel to a pydantic model whose fields (by alias) are
    the parameters; `errors` maps each error status to the `error_code`s it may carry. Which
    need an API key, and with which scope, api/auth.py says (`required_scope`).
    """

    method: Method
    path: str
    endpoint: Endpoint
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    parameters: Mapping[Location, type[BaseModel]] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_required: bool = True
    description: str = ""

    @property
    def document_path(self) -> str:
        """The path as OpenAPI writes it: `{name:path}` becomes `{name}`."""
        return _CONVERTER.sub(r"{\1}", self.path)


def _by_method(endpoints: Mapping[str, Endpoint]) -> Endpoint:
    """One endpoint for a path that several operations share (Starlette routes by path)."""
    if len(endpoints) == 1:
        return next(iter(endpoints.values()))

    async def dispatch(request: Request) -> Response:
        # The route allows only these methods, and HEAD only where GET is one of them.
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


def starlette_routes(operations: list[Operation]) -> list[Route]:
    """One route per path, in the order the operations list them; a 405 names every method."""
    paths: dict[str, dict[str, Endpoint]] = {}
    for operation in operations:
        methods = paths.setdefault(operation.path, {})
        if operation.method in methods:
            raise ValueError(f"{operation.method} {operation.path} is listed twice")
        methods[operation.method] = operation.endpoint
    return [
        Route(path, _by_method(endpoints), methods=list(endpoints))
        for path, endpoints in paths.items()
    ]
