"""What every reader of the log that keeps its offsets in PostgreSQL does alike: open a session
(a connection and a consumer), resume it when a server is lost, hold its name alone, tell a lost
database from a bug, and notice when the broker starts a new log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from streams.generation import broker_state
from streams.settings import Settings

# What a restarted, unreachable or terminated database looks like (ConnectionError included,
# an OSError); anything else is a bug.
DATABASE_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.CrashShutdownError,
)
# While nothing is fetched the broker is asked its generation this often: after a restart,
# fetches at the old positions may bring nothing, and nothing fetched would mean no check.
IDLE_GENERATION_CHECK_S = 2.0
# A session that lost a server starts again from the stored offsets after this pause.
_RECONNECT_DELAY_S = 1.0

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What GenerationWatch needs of a client's connection to a broker."""

    def connected(self) -> bool: ...


def cancelled_beneath() -> bool:
    """Whether the CancelledError being handled was not meant for this task: a future it
    awaited was cancelled by its owner (a client library whose connection dropped) while no
    one asked the task itself to stop.

    Left to propagate, such an error ends the task as cancelled, and a TaskGroup drops a
    cancelled child without a word: a projector stopped this way after a database restart
    and projected nothing more. Readers resume instead, as from a lost connection.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class GenerationChanged(Exception):
    """The broker under a reader started a new log: its session starts over."""


async def resume_sessions(
    reader: str,
    session: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    starts_over: tuple[type[Exception], ...] = (GenerationChanged,),
) -> None:
    """Run `session` until `stop` is set: one that ends in `starts_over` begins again at once;
    one that lost a server, or was cancelled beneath, resumes from the stored offsets after a
    pause. `reader` names it in logs."""
    while not stop.is_set():
        try:
            await session(stop)
        except starts_over as change:
            log.warning("%s: %s; starting a new session", reader, change)
        except KafkaError as exc:
            if stop.is_set():
                break
            log.warning("%s lost the broker (%r); resuming", reader, exc)
            await _pause(stop)
        except DATABASE_LOST as exc:
            if stop.is_set():
                break
            log.warning("%s lost the database (%s); resuming", reader, exc)
            await _pause(stop)
        except asyncio.CancelledError:
            if not cancelled_beneath():
                raise
            log.warning(
                "%s: an operation was cancelled beneath it; resuming", reader, exc_info=True
            )
            await _pause(stop)


async def _pause(stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), _RECONNECT_DELAY_S)


@contextlib.asynccontextmanager
async def open_session(
    settings: Settings,
    reader: str,
    statement_timeout_s: float,
    schema: str | None = None,
    fetch_max_wait_ms: int | None = None,
) -> AsyncIterator[tuple[asyncpg.Connection, AIOKafkaConsumer]]:
    """One database connection and one consumer (not started, no group, no auto-commit), both
    closed on leaving; `reader` (`projector-main`) names them to the servers. A connection the
    server dropped surfaces as ConnectionError, so the session resumes instead of failing.
    The consumer's fetch wait is `fetch_max_wait_ms`, settings.fetch_max_wait_ms by default."""
    conn = await asyncpg.connect(
        settings.require_database(),
        # A statement that hangs (a lock, a server that stopped answering) ends the session,
        # which resumes from the stored offsets.
        command_timeout=statement_timeout_s,
        server_settings={
            "application_name": f"stagecast-{reader}",
            **({"search_path": schema} if schema else {}),
        },
    )
    try:
        # Built only once the database answers: a failed connect leaves no consumer behind.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.require_kafka(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms or settings.fetch_max_wait_ms,
            client_id=f"{settings.app_id}-{reader}",
        )
        try:
            yield conn, consumer
        finally:
            await consumer.stop()
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        # A connection the server dropped while idle surfaces as a client-side error.
        if conn.is_closed():
            raise ConnectionError("the database closed the connection") from exc
        raise
    finally:
        await conn.close()


async def hold_name(
    conn: asyncpg.Connection, name: str, stop: asyncio.Event, what: str = "projector"
) -> bool:
    """Wait to be the only reader named `name` (offsets and seq order assume one writer; a
    second process waits as a standby); False if asked to stop first."""
    said = log.warning
    while not stop.is_set():
        if await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended('stagecast.projector.' || $1, 0))",
            name,
        ):
            return True
        said("%s %s is running elsewhere; waiting as a standby", what, name)
        said = log.info
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


class GenerationWatch:
    """Raises GenerationChanged once the broker is no longer in the generation a session began
    in: checked after every fetch that brought messages (before they are committed), and every
    IDLE_GENERATION_CHECK_S while none come.

    After a fetch the broker is asked only when the client's connections are not the ones it
    had when the broker last answered (or one of them closed): messages from a new log come
    over a new connection, since the broker that started it is a new process (or, on a real
    cluster, a new cluster behind the same address). Asking after every batch put a metadata
    round trip before every commit, several in each job's path (bench/e2e_latency.py).
    """

    def __init__(self, generation: str) -> None:
        self.generation = generation
        self._asked_at: float | None = None
        # The connections the client had when the broker last answered; held, not their ids,
        # so a new connection can never pass for one of them.
        self._answered_over: dict[object, Connection] = {}

    def needs_asking(
        self, connections: Mapping[object, Connection], fetched: bool, clock: float
    ) -> bool:
        """Whether to ask the broker its generation now, given the client's connections."""
        if self._asked_at is None:
            self._asked_at = clock
        if not fetched:
            return clock - self._asked_at >= IDLE_GENERATION_CHECK_S
        known = self._answered_over
        return (
            not known
            or connections.keys() != known.keys()
            or any(
                conn is not known[key] or not conn.connected() for key, conn in connections.items()
            )
        )

    async def check(self, client: AIOKafkaClient, fetched: bool) -> None:
        clock = asyncio.get_running_loop().time()
        # aiokafka has no public view of its connections.
        connections: dict[object, Connection] = dict(client._conns)
        if not self.needs_asking(connections, fetched, clock):
            return
        self._asked_at = clock
        now = (await broker_state(client)).generation
        if now != self.generation:
            raise GenerationChanged(f"broker generation changed from {self.generation} to {now}")
        # Taken before asking: a connection the question itself opened is checked next time.
        self._answered_over = connections
