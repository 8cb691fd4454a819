"""Where a consumed message enters an agent: decoded, checked, handled, or dead-lettered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from schemas.codec import Codec, DecodeError
from streams.envelope import Origin, dead_letter
from streams.producer import EventPublisher
from streams.settings import Settings
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], Awaitable[None]]

# An outage, not the message's fault: the broker or the database is away for a while. The
# handling is retried (every event it publishes has a deterministic id, so a repeat is
# harmless) instead of failing the job or dead-lettering a good message.
TRANSIENT = (
    KafkaError,
    OSError,  # refused, reset and timed-out connections among them
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # A pooled connection whose server died mid-operation ("cannot switch to state 15"):
    # taken for a crash, it dead-lettered a good request and left its job QUEUED forever.
    asyncpg.InternalClientError,
)
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0


class Refused(Exception):
    """A handler's verdict that a well-formed event cannot be handled: it is dead-lettered."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class Intake:
    """Feeds one event type to its handler; nothing a message holds can take the agent down."""

    def __init__(
        self,
        expected: str,
        handler: Handler,
        publisher: EventPublisher,
        codec: Codec,
        settings: Settings,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.expected = expected
        self.handler = handler
        self.publisher = publisher
        self.codec = codec
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()

    async def receive(self, origin: Origin) -> None:
        """Handle one message; outages are waited out, everything else ends here."""
        delay = _RETRY_FIRST_S
        while True:
            try:
                await self._receive_once(origin)
                return
            except TRANSIENT as error:
                log.warning(
                    "%s at %s/%d/%d waits for the outage to end (%s: %s)",
                    self.expected,
                    origin.topic,
                    origin.partition,
                    origin.offset,
                    type(error).__name__,
                    error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _receive_once(self, origin: Origin) -> None:
        try:
            event_type, record = self.codec.decode(origin.value)
            if event_type != self.expected:
                raise Refused("WRONG_EVENT", f"expected {self.expected}, got {event_type}")
            await self.handler(record)
        except TRANSIENT:
            raise
        except DecodeError as error:
            await self._dead_letter(origin, error.code, str(error))
        except Refused as refusal:
            await self._dead_letter(origin, refusal.code, str(refusal))
        except Exception as error:  # one message must never stop the agent
            log.exception(
                "handling %s at %s/%d/%d failed",
                self.expected,
                origin.topic,
                origin.partition,
                origin.offset,
            )
            await self._dead_letter(origin, "HANDLER_CRASHED", f"{type(error).__name__}: {error}")

    async def _dead_letter(self, origin: Origin, code: str, reason: str) -> None:
        await self.publisher.publish([dead_letter(self.settings, origin, code, reason)])
        self.metrics.dead_lettered(origin.topic, code)
