"""The webhooks process (`stagecast webhooks`): the recorder that turns events into deliveries,
and the sender that makes them, side by side.

A process of its own rather than a companion in the projector's: its work waits on other
people's servers, and a burst of slow receivers or a bug in sending must not slow or stop the
projections. Several may run: one records (the others wait as standbys), all of them send.
"""

from __future__ import annotations

import asyncio
from functools import partial

from prometheus_client import CollectorRegistry

from projections.migrate import migrate
from projections.service import companion, run_parts
from projections.webhooks.metrics import WebhookMetrics
from projections.webhooks.recorder import WebhookRecorder
from projections.webhooks.sender import WebhookSender
from schemas.codec import default_codec
from streams.settings import Settings


async def run_webhooks_process(settings: Settings) -> None:
    """Migrate, then record and send webhook deliveries until SIGINT or SIGTERM."""
    await migrate(settings.require_database())
    wake = asyncio.Event()
    recorder = WebhookRecorder(settings, default_codec(), wake)
    sender = WebhookSender(settings, wake)
    registry = CollectorRegistry()
    registry.register(WebhookMetrics(recorder, sender))
    await run_parts(
        settings,
        "webhooks",
        settings.webhooks_metrics_port,
        registry,
        [
            partial(companion, "webhook recorder", recorder.run),
            partial(companion, "webhook sender", sender.run),
        ],
    )
