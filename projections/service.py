"""The projector process (`stagecast projector`): the live projector, with the dead-letter
recorder and the consumer-lag sampler beside it, and their metrics on a port of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from projections.dead_letters import RECORDER_NAME, DeadLetterRecorder
from projections.lag import PROJECTOR_GROUP_PREFIX, LagSampler
from projections.metrics import LagMetrics, RecorderMetrics
from projections.migrate import migrate
from projections.projector import Projector
from projections.session import cancelled_beneath
from projections.webhooks.recorder import RECORDER_NAME as WEBHOOKS_RECORDER_NAME
from schemas.codec import default_codec
from streams.diagnostics import dump_tasks_on_sigusr1
from streams.exposition import serve_metrics
from streams.settings import Settings

# A companion that fails on a bug starts again after this pause, without the projector.
_COMPANION_RESTART_S = 5.0

log = logging.getLogger(__name__)


async def run_projector_process(settings: Settings) -> None:
    """Migrate, then project, record dead letters and sample lag until SIGINT or SIGTERM."""
    await migrate(settings.require_database())
    codec = default_codec()
    projector = Projector(settings, codec)
    recorder = DeadLetterRecorder(settings, codec)
    # The webhooks process's recorder too: it keeps its offsets in the same table.
    sampler = LagSampler(
        settings, projectors=(projector.name, RECORDER_NAME, WEBHOOKS_RECORDER_NAME)
    )
    registry = CollectorRegistry()
    registry.register(projector.metrics)
    registry.register(RecorderMetrics(recorder.stats))
    own_groups = [PROJECTOR_GROUP_PREFIX + name for name in (projector.name, RECORDER_NAME)]
    registry.register(LagMetrics(sampler, own_groups))
    await run_parts(
        settings,
        "projector",
        settings.projector_metrics_port,
        registry,
        [
            projector.run,
            partial(companion, "dead-letter recorder", recorder.run),
            partial(companion, "lag sampler", sampler.run),
        ],
    )


async def run_parts(
    settings: Settings,
    process: str,
    metrics_port: int | None,
    registry: CollectorRegistry,
    parts: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]],
) -> None:
    """Run a process's parts side by side until SIGINT or SIGTERM sets their stop event, with
    its metrics on their own port (none when it is unset) and SIGUSR1 naming what each task
    waits on."""
    server = serve_metrics(registry, settings.metrics_host, metrics_port, process)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    dump_tasks_on_sigusr1()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tasks:
            for run in parts:
                tasks.create_task(run(stop))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if server is not None:
            server.stop()


async def companion(
    name: str, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run a companion of the projector (or a part of the webhooks process); a bug in it is
    logged and it starts again, while the projector goes on (its own bugs stop the process)."""
    while not stop.is_set():
        try:
            await run(stop)
        except asyncio.CancelledError:
            if not cancelled_beneath():
                raise
            log.exception(
                "%s was cancelled beneath; starting it again in %g s", name, _COMPANION_RESTART_S
            )
        except Exception:
            log.exception("%s failed; starting it again in %g s", name, _COMPANION_RESTART_S)
        else:
            continue
        # The pause the log line promises, after either failure: never a tight restart loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _COMPANION_RESTART_S)
