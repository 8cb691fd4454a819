"""The peer: stagecast's parse, compile and codegen functions as a Celery chain over Redis.

The Celery worker imports this module (`celery -A peer_chain worker`, run in bench/); the
broker and the result backend are the Redis server named by PEER_REDIS_URL (bench/peer.py).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chain

from consumers.codegen.logic import generate_code
from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from streams.stage import StageFailure, StageResult

REDIS_URL_VARIABLE = "PEER_REDIS_URL"


class StageRefused(Exception):
    """A stage answered with a StageFailure; the chain stops, as stagecast's job would."""


def _output(outcome: StageResult | StageFailure) -> dict[str, Any]:
    if isinstance(outcome, StageFailure):
        raise StageRefused(f"{outcome.code}: {outcome.message}")
    return outcome.output


def parse_stage(dsl: str) -> dict[str, Any]:
    return _output(parse_source(dsl))


def compile_stage(ir: dict[str, Any]) -> dict[str, Any]:
    return _output(compile_ir(ir, target="pytorch"))


def codegen_stage(checked: dict[str, Any]) -> str:
    module: str = _output(generate_code(checked))["module"]
    return module


def celery_app(redis_url: str) -> Celery:
    """Broker and result backend on one Redis; JSON between tasks, as stagecast's JSON input."""
    app = Celery("stagecast-peer", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name="peer.parse")(parse_stage)
    app.task(name="peer.compile")(compile_stage)
    app.task(name="peer.codegen")(codegen_stage)
    return app


def compile_job(app: Celery, dsl: str) -> Any:
    """Send one compile job as a three-task chain; the AsyncResult of its last task."""
    return chain(
        app.signature("peer.parse", args=(dsl,)),
        app.signature("peer.compile"),
        app.signature("peer.codegen"),
    ).apply_async()


app = celery_app(os.environ.get(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0"))
