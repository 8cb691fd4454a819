"""Webhook deliveries per second: events recorded for several subscriptions and POSTed to a
local receiver, from the first message read until every delivery is DELIVERED.

Starts its own embedded broker and PostgreSQL (streams.launcher), a receiver answering 200 on a
loopback port (uvicorn, in a thread of this process), pre-produces JobFinished events of one
tenant, then runs the webhook recorder and sender in this process.
Usage: python bench/webhooks.py [events] [subscriptions]   (default 2000 and 4)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections.webhooks.recorder import WebhookRecorder
from projections.webhooks.sender import WebhookSender
from projections.webhooks.signing import new_secret
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.producer import EventPublisher, Outgoing, now_ms
from streams.settings import Settings
from streams.stack import free_port

TENANT = "bench"


def serve_receiver() -> tuple[uvicorn.Server, str]:
    """A receiver that answers 200 to every POST, in a thread of its own."""

    async def answer(request: Request) -> Response:
        await request.body()
        return Response("ok")

    port = free_port()
    app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


async def subscribe(database_url: str, base: str, count: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO webhook_subscriptions (id, tenant, url, secret) VALUES ($1, $2, $3, $4)",
            [(uuid.uuid4(), TENANT, f"{base}/hook/{n}", new_secret()) for n in range(count)],
        )
    finally:
        await conn.close()


async def produce(settings: Settings, count: int) -> None:
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        items = []
        for _ in range(count):
            record = {
                "event_id": str(uuid.uuid4()),
                "job_id": str(uuid.uuid4()),
                "tenant": TENANT,
                "occurred_at": now_ms(),
                "source": "bench",
                "status": "SUCCEEDED",
                "error": None,
                "duration_ms": 1234,
                "stages_completed": ["parse", "compile", "codegen"],
            }
            items.append(Outgoing(settings.topics.events, "JobFinished", record))
        await publisher.publish(items)
    finally:
        await publisher.stop()


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS recorded, count(*) FILTER (WHERE status = 'DELIVERED') AS delivered "
        "FROM webhook_deliveries"
    )
    assert row is not None
    return row["recorded"], row["delivered"]


async def bench(settings: Settings, events: int, subscriptions: int) -> None:
    server, base = serve_receiver()
    try:
        await subscribe(settings.require_database(), base, subscriptions)
        await produce(settings, events)
        expected = events * subscriptions
        wake = asyncio.Event()
        stop = asyncio.Event()
        recorder = WebhookRecorder(settings, default_codec(), wake)
        sender = WebhookSender(settings, wake)
        conn = await asyncpg.connect(settings.require_database())
        started = time.perf_counter()
        cpu_started = time.process_time()
        tasks = [asyncio.create_task(part.run(stop)) for part in (recorder, sender)]
        recorded_at = None
        try:
            while True:
                recorded, delivered = await counts(conn)
                if recorded_at is None and recorded == expected:
                    recorded_at = time.perf_counter() - started
                if delivered == expected:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            durations = await conn.fetchrow(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95 "
                "FROM webhook_attempts"
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await conn.close()
        assert durations is not None and recorded_at is not None
        print(f"{events} events x {subscriptions} subscriptions = {expected} deliveries")
        print(f"recorded in {recorded_at:.2f} s -> {expected / recorded_at:,.0f} deliveries/s")
        print(f"all delivered in {elapsed:.2f} s -> {expected / elapsed:,.0f} deliveries/s")
        print(
            f"CPU of this process (recorder, sender and receiver): {cpu:.2f} s, "
            f"{cpu / expected * 1e6:,.0f} µs per delivery"
        )
        print(
            f"per attempt (POST to an answer, receiver in this process): "
            f"p50 {durations['p50']:.0f} ms, p95 {durations['p95']:.0f} ms"
        )
    finally:
        server.should_exit = True


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    subscriptions = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    with tempfile.TemporaryDirectory(prefix="stagecast-bench-") as state:
        launcher = Launcher(
            Settings(
                _env_file=None,  # type: ignore[call-arg]
                kafka_bootstrap_servers=None,
                database_url=None,
                state_dir=Path(state),
                topic_prefix="bench",
            )
        )
        try:
            settings = launcher.start_servers()
            asyncio.run(bench(settings, events, subscriptions))
        finally:
            launcher.stop()


if __name__ == "__main__":
    main()
