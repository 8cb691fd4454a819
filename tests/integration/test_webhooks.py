"""Webhooks on the real stack: the API and `stagecast webhooks` as processes, events on the real
broker, and a real HTTP receiver on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.client import ApiRequestError, StagecastClient
from projections.webhooks.signing import verify
from streams.launcher import Launcher
from streams.producer import now_ms
from streams.settings import Settings
from streams.stack import free_port
from tests.conftest import EXAMPLES, Pipeline, RunningStack, api_alone
from tests.integration.test_metrics import scrape, value
from tests.integration.test_projector import (
    Event,
    accepted,
    eventually,
    finished,
    outgoing,
    publish,
    stage_changed,
)

pytestmark = pytest.mark.integration

# Short enough that retries and give-ups happen within a test.
MAX_ATTEMPTS = 3
TIMEOUT_S = 2.0
PER_SUBSCRIPTION = 2


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A real HTTP server on a loopback port that records every request it gets.

    `/ok/...` answers 200; `/chatty/...` 200 with a megabyte of body; `/flaky/...` 500 to the
    first two requests for an event id, then 200; `/gone/...` 410; `/down/...` 503 always;
    `/hang/...` holds the request for 30 s.
    """

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    hanging: int = 0
    most_hanging: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        event_id = request.headers.get("stagecast-event-id", "")
        if path.startswith("/hang/"):
            with self._lock:
                self.hanging += 1
                self.most_hanging = max(self.most_hanging, self.hanging)
            try:
                await asyncio.sleep(30)
            finally:
                with self._lock:
                    self.hanging -= 1
        with self._lock:
            seen = sum(1 for r in self.requests if r.headers.get("stagecast-event-id") == event_id)
            if path.startswith("/flaky/"):
                code = 500 if seen < 2 else 200
            elif path.startswith("/gone/"):
                code = 410
            elif path.startswith("/down/"):
                code = 503
            else:
                code = 200
            self.requests.append(Received(path, dict(request.headers), body, code))
        if path.startswith("/chatty/"):
            return Response("x" * 1_000_000, status_code=code)
        return Response("receiver says no" if code >= 400 else "ok", status_code=code)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._answer, methods=["POST"])])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    config = uvicorn.Config(
        receiver.app(),
        host="127.0.0.1",
        port=receiver.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.02)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def hooks(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """The API and the webhooks process on topics and a database of their own."""
    settings = stack.isolated(
        state_dir=tmp_path_factory.mktemp("webhooks"),
        api_port=free_port(),
        webhook_max_attempts=MAX_ATTEMPTS,
        webhook_backoff_base_s=0.2,
        webhook_backoff_max_s=0.5,
        webhook_timeout_s=TIMEOUT_S,
        webhook_subscription_concurrency=PER_SUBSCRIPTION,
        webhooks_metrics_port=free_port(),
    )
    launcher = Launcher(settings)
    launcher.api_url = f"http://{settings.api_host}:{settings.api_port}"
    for name in ("webhooks", "api"):
        launcher.spawn(name)
    try:
        launcher.wait_ready(60)
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture
async def api(hooks: Launcher) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hooks.api_url, timeout=10) as client:
        yield client


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def now(event: Event, tenant: str) -> Event:
    """The event as one of `tenant`'s, happening now (after the subscriptions made before it)."""
    event_type, record = event
    return event_type, {**record, "tenant": tenant, "occurred_at": now_ms()}


async def send(settings: Settings, *events: Event) -> None:
    await publish(settings, outgoing(settings, events))


async def subscribe(
    api: httpx.AsyncClient, tenant: str, url: str, event_types: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if event_types is not None:
        body["event_types"] = event_types
    response = await api.post("/webhooks", json=body, headers={"X-Tenant": tenant})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(api: httpx.AsyncClient, tenant: str, webhook_id: str) -> list[Any]:
    response = await api.get(f"/webhooks/{webhook_id}/deliveries", headers={"X-Tenant": tenant})
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["deliveries"]
    return found


async def settled(
    api: httpx.AsyncClient, tenant: str, webhook_id: str, count: int, within_s: float = 30.0
) -> list[Any]:
    """The webhook's deliveries once `count` of them have ended (DELIVERED or FAILED)."""
    found: list[Any] = []

    async def check() -> bool:
        nonlocal found
        found = await deliveries(api, tenant, webhook_id)
        ended = [d for d in found if d["status"] != "PENDING"]
        return len(ended) >= count

    await eventually(check, within_s)
    return found


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    assert body["error"]


async def test_delivered_with_a_signature_the_receiver_verifies(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/ok/signed")
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == [] and created["active"]
    listed = (await api.get("/webhooks", headers={"X-Tenant": who})).json()["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]

    job = str(uuid.uuid4())
    sent = [now(accepted(job, 0, ["parse"]), who), now(finished(job, 0, "SUCCEEDED", []), who)]
    await send(hooks.settings, *sent)
    log = await settled(api, who, created["id"], 2)

    assert {d["status"] for d in log} == {"DELIVERED"}
    assert {d["attempts"] for d in log} == {1}
    assert {d["response_code"] for d in log} == {200}
    assert all(len(d["history"]) == 1 and d["delivered_at"] for d in log)
    got = receiver.at("/ok/signed")
    assert len(got) == 2
    by_id = {r.headers["stagecast-event-id"]: r for r in got}
    for event_type, record in sent:
        request = by_id[record["event_id"]]
        assert request.headers["stagecast-event-type"] == event_type
        assert request.headers["content-type"] == "application/json"
        assert request.headers["stagecast-delivery-attempt"] == "1"
        timestamp = request.headers["stagecast-timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        signature = request.headers["stagecast-signature"]
        assert verify(created["secret"], timestamp, request.body, signature, time.time())
        assert not verify(created["secret"], timestamp, request.body + b" ", signature, time.time())
        body = json.loads(request.body)
        assert {k: body[k] for k in ("event_id", "job_id", "tenant", "occurred_at")} == {
            k: record[k] for k in ("event_id", "job_id", "tenant", "occurred_at")
        }


async def test_retried_after_two_500s_and_delivered_on_the_third_attempt(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/flaky/retry")
    event = now(finished(str(uuid.uuid4()), 0, "FAILED", []), who)
    await send(hooks.settings, event)
    [delivery] = await settled(api, who, created["id"], 1)

    assert delivery["status"] == "DELIVERED"
    assert (delivery["attempts"], delivery["response_code"]) == (3, 200)
    assert delivery["event_id"] == event[1]["event_id"]
    assert delivery["next_attempt_at"] is None
    history = delivery["history"]
    assert [a["attempt"] for a in history] == [1, 2, 3]
    assert [a["response_code"] for a in history] == [500, 500, 200]
    assert [a["error"] for a in history] == [
        "HTTP 500: receiver says no",
        "HTTP 500: receiver says no",
        None,
    ]
    # Back-off: the retries are at least half a base step apart.
    times = [a["attempted_at"] for a in history]
    assert times == sorted(times)
    got = receiver.at("/flaky/retry")
    assert [r.headers["stagecast-delivery-attempt"] for r in got] == ["1", "2", "3"]
    assert len({r.body for r in got}) == 1
    assert {r.headers["stagecast-event-id"] for r in got} == {event[1]["event_id"]}


async def test_gives_up_after_the_last_attempt_and_does_not_retry_a_4xx(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    down = await subscribe(api, who, f"{receiver.base}/down/always")
    gone = await subscribe(api, who, f"{receiver.base}/gone/never")
    await send(hooks.settings, now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who))

    [failed] = await settled(api, who, down["id"], 1)
    assert (failed["status"], failed["attempts"]) == ("FAILED", MAX_ATTEMPTS)
    assert failed["response_code"] == 503 and failed["error"].startswith("HTTP 503")
    assert [a["response_code"] for a in failed["history"]] == [503] * MAX_ATTEMPTS
    [refused] = await settled(api, who, gone["id"], 1)
    assert (refused["status"], refused["attempts"], refused["response_code"]) == ("FAILED", 1, 410)
    assert len(receiver.at("/gone/never")) == 1
    failures = await api.get(
        f"/webhooks/{down['id']}/deliveries?status=FAILED", headers={"X-Tenant": who}
    )
    assert [d["event_id"] for d in failures.json()["deliveries"]] == [failed["event_id"]]


async def test_only_the_event_types_asked_for_are_delivered(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/ok/filtered", ["JobFinished"])
    assert created["event_types"] == ["JobFinished"]
    job = str(uuid.uuid4())
    # One job: one partition, so by the time JobFinished is delivered the rest has been read.
    await send(
        hooks.settings,
        now(accepted(job, 0, ["parse"]), who),
        now(stage_changed(job, 0, "parse", "STARTED"), who),
        now(stage_changed(job, 0, "parse", "SUCCEEDED", duration_ms=3), who),
        now(finished(job, 0, "SUCCEEDED", ["parse"]), who),
    )
    log = await settled(api, who, created["id"], 1)
    assert [d["event_type"] for d in log] == ["JobFinished"]
    got = receiver.at("/ok/filtered")
    assert [r.headers["stagecast-event-type"] for r in got] == ["JobFinished"]


async def test_another_tenants_events_never_reach_a_subscription(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    mine, theirs = tenant(), tenant()
    created = await subscribe(api, mine, f"{receiver.base}/ok/tenant")
    job = str(uuid.uuid4())
    their_event = now(accepted(job, 0, []), theirs)
    my_event = now(finished(job, 0, "SUCCEEDED", []), mine)
    # The same key puts both on one partition, theirs first.
    await send(hooks.settings, their_event, my_event)
    log = await settled(api, mine, created["id"], 1)
    assert [d["event_id"] for d in log] == [my_event[1]["event_id"]]
    got = receiver.at("/ok/tenant")
    assert [r.headers["stagecast-event-id"] for r in got] == [my_event[1]["event_id"]]

    as_them = {"X-Tenant": theirs}
    assert (await api.get("/webhooks", headers=as_them)).json() == {"webhooks": []}
    path = f"/webhooks/{created['id']}"
    assert_error(await api.get(f"{path}/deliveries", headers=as_them), 404, "WEBHOOK_NOT_FOUND")
    assert_error(await api.delete(path, headers=as_them), 404, "WEBHOOK_NOT_FOUND")


async def test_a_dead_receiver_does_not_hold_up_another_subscription(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    hung = await subscribe(api, who, f"{receiver.base}/hang/dead")
    refused = await subscribe(api, who, f"http://127.0.0.1:{free_port()}/nobody")
    alive = await subscribe(api, who, f"{receiver.base}/ok/alive")
    events = [now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who) for _ in range(12)]
    started = time.monotonic()
    await send(hooks.settings, *events)

    log = await settled(api, who, alive["id"], len(events), within_s=20)
    took = time.monotonic() - started
    assert {d["status"] for d in log} == {"DELIVERED"}
    # Twelve deliveries to the hung receiver at PER_SUBSCRIPTION at a time would take three
    # rounds of TIMEOUT_S each were the live one waiting behind them.
    assert took < 3 * TIMEOUT_S
    assert 1 <= receiver.most_hanging <= PER_SUBSCRIPTION
    assert len(await deliveries(api, who, hung["id"])) == len(events)

    # The dead ones are retried and end FAILED, saying why.
    [first, *_] = [d for d in await settled(api, who, refused["id"], 1) if d["status"] != "PENDING"]
    assert first["status"] == "FAILED" and first["response_code"] is None
    assert first["error"].startswith("ConnectError")
    [hung_first, *_] = [
        d for d in await settled(api, who, hung["id"], 1, within_s=60) if d["status"] != "PENDING"
    ]
    assert hung_first["status"] == "FAILED" and hung_first["attempts"] == MAX_ATTEMPTS
    assert hung_first["error"] == f"no answer within {TIMEOUT_S:g} s"


async def test_a_deleted_webhook_gets_nothing_more(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/ok/deleted")
    kept = await subscribe(api, who, f"{receiver.base}/ok/kept")
    headers = {"X-Tenant": who}
    assert (await api.delete(f"/webhooks/{created['id']}", headers=headers)).status_code == 204
    listed = (await api.get("/webhooks", headers=headers)).json()["webhooks"]
    assert [w["id"] for w in listed] == [kept["id"]]
    path = f"/webhooks/{created['id']}"
    assert_error(await api.delete(path, headers=headers), 404, "WEBHOOK_NOT_FOUND")
    assert_error(await api.get(f"{path}/deliveries", headers=headers), 404, "WEBHOOK_NOT_FOUND")

    await send(hooks.settings, now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who))
    await settled(api, who, kept["id"], 1)
    assert receiver.at("/ok/deleted") == []


async def test_bad_subscription_input_is_refused_with_a_code(
    hooks: Launcher, api: httpx.AsyncClient
) -> None:
    headers = {"X-Tenant": tenant()}
    for url in ("ftp://example.com/hook", "example.com", "http:///nohost", "https://u:p@h/"):
        response = await api.post("/webhooks", json={"url": url}, headers=headers)
        assert_error(response, 400, "INVALID_WEBHOOK_URL")
        assert response.json()["details"][0]["field"] == "url"
    bodies: list[Any] = [
        {},
        {"url": 42},
        {"url": "http://127.0.0.1/", "event_types": ["ProgressReported"]},
        {"url": "http://127.0.0.1/", "event_types": "JobFinished"},
        {"url": "http://127.0.0.1/", "secret": "mine"},
        [],
    ]
    for body in bodies:
        response = await api.post("/webhooks", json=body, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["error_code"] in {"INVALID_WEBHOOK", "INVALID_WEBHOOK_URL"}, body
    assert_error(
        await api.post(
            "/webhooks", content=b"{", headers=headers | {"content-type": "application/json"}
        ),
        400,
        "INVALID_JSON",
    )
    assert_error(
        await api.post("/webhooks", json={"url": "http://a/"}, headers={"X-Tenant": ""}),
        400,
        "INVALID_TENANT",
    )
    assert_error(
        await api.delete("/webhooks/not-a-uuid", headers=headers), 400, "INVALID_WEBHOOK_ID"
    )
    assert_error(
        await api.get(f"/webhooks/{uuid.uuid4()}/deliveries", headers=headers),
        404,
        "WEBHOOK_NOT_FOUND",
    )
    created = await subscribe(api, headers["X-Tenant"], "http://127.0.0.1:9/unused")
    path = f"/webhooks/{created['id']}/deliveries"
    for query in ("status=LOST", "limit=0", "limit=501", "limit=x", "page=2"):
        assert_error(await api.get(f"{path}?{query}", headers=headers), 400, "INVALID_QUERY")
    # Nothing refused was stored.
    listed = (await api.get("/webhooks", headers=headers)).json()["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]]


async def test_a_job_run_by_the_stack_reaches_its_webhook(
    pipeline: Pipeline, receiver: Receiver
) -> None:
    """`stagecast webhooks` beside the worker and projector: a real job's events arrive."""
    launcher = pipeline.launcher
    if "webhooks" not in launcher.children:
        launcher.spawn("webhooks")
    who = tenant()
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as api:
        created = await subscribe(api, who, f"{receiver.base}/ok/pipeline", ["JobFinished"])
        response = await api.post(
            "/jobs", json={"dsl": (EXAMPLES / "tiny.neural").read_text()}, headers={"X-Tenant": who}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        [delivery] = await settled(api, who, created["id"], 1, within_s=90)
    assert delivery["status"] == "DELIVERED" and delivery["job_id"] == job_id
    [request] = receiver.at("/ok/pipeline")
    body = json.loads(request.body)
    assert (body["job_id"], body["tenant"], body["status"]) == (job_id, who, "SUCCEEDED")


async def test_a_killed_webhooks_process_loses_no_delivery_and_records_each_once(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/ok/killed")
    events = [now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who) for _ in range(300)]
    await send(hooks.settings, *events)
    await eventually(lambda: _any_arrived(receiver, "/ok/killed"), 30)
    process = hooks.children["webhooks"]
    process.kill()
    await asyncio.to_thread(process.wait, 10)
    # Killed mid-stream: what it had claimed and not recorded is sent again once claims lapse.
    assert len(receiver.at("/ok/killed")) < len(events)
    hooks.spawn("webhooks")

    path = f"/webhooks/{created['id']}/deliveries?limit=500"

    async def all_delivered() -> bool:
        response = await api.get(path, headers={"X-Tenant": who})
        return [d["status"] for d in response.json()["deliveries"]] == ["DELIVERED"] * 300

    await eventually(all_delivered, 60)
    log = (await api.get(path, headers={"X-Tenant": who})).json()["deliveries"]
    assert sorted(d["event_id"] for d in log) == sorted(e[1]["event_id"] for e in events)
    arrived = {r.headers["stagecast-event-id"] for r in receiver.at("/ok/killed")}
    assert arrived == {e[1]["event_id"] for e in events}


async def _any_arrived(receiver: Receiver, path: str) -> bool:
    return bool(receiver.at(path))


async def test_undecodable_messages_on_the_events_topic_are_skipped(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The projector dead-letters them; the webhooks process goes on past them."""
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/ok/after-garbage")
    job = str(uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=hooks.settings.require_kafka())
    await producer.start()
    try:
        for junk in (b"not avro", b"\xc3\x01" + b"\x00" * 8, b""):
            await producer.send_and_wait(hooks.settings.topics.events, junk, key=job.encode())
    finally:
        await producer.stop()
    event = now(finished(job, 0, "SUCCEEDED", []), who)
    await send(hooks.settings, event)
    [delivery] = await settled(api, who, created["id"], 1)
    assert delivery["event_id"] == event[1]["event_id"]
    assert delivery["status"] == "DELIVERED"
    assert hooks.children["webhooks"].poll() is None


async def test_the_webhooks_process_counts_what_it_records_and_sends(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    url = hooks.metrics_urls()["webhooks"]
    before = await scrape(url)
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/flaky/counted")
    await send(hooks.settings, now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who))
    await settled(api, who, created["id"], 1)
    after = await scrape(url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # At least: deliveries of earlier tests (the hung receiver's) may still be retried.
    assert grew("stagecast_webhook_messages_total") >= 1
    assert grew("stagecast_webhook_deliveries_recorded_total") >= 1
    assert grew("stagecast_webhook_attempts_total", outcome="retried") >= 2
    assert grew("stagecast_webhook_attempts_total", outcome="delivered") >= 1
    assert ("stagecast_webhook_requests_in_flight", frozenset()) in after


async def test_a_long_answer_counts_by_its_status(
    hooks: Launcher, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    who = tenant()
    created = await subscribe(api, who, f"{receiver.base}/chatty/long")
    events = [now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who) for _ in range(3)]
    await send(hooks.settings, *events)
    log = await settled(api, who, created["id"], 3)
    assert [(d["status"], d["attempts"], d["error"]) for d in log] == [("DELIVERED", 1, None)] * 3


@pytest.fixture(scope="module")
def keys_api(hooks: Launcher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """An API in keys mode beside the open one, on the same database and topics."""
    settings = hooks.settings.model_copy(update={"auth": "keys"})
    with api_alone(settings, tmp_path_factory.mktemp("webhooks-keys-api")) as launcher:
        yield launcher


def create_key(settings: Settings, tenant: str, scopes: str) -> dict[str, str]:
    """`stagecast keys create`: the Authorization header of a new key."""
    command = ["keys", "create", "--tenant", tenant, "--scopes", scopes]
    made = subprocess.run(
        [sys.executable, "-m", "streams.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, DATABASE_URL=settings.require_database()),
    )
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


async def test_with_api_keys_a_webhook_is_its_keys_tenants(
    hooks: Launcher, keys_api: Launcher, receiver: Receiver
) -> None:
    mine, theirs = tenant(), tenant()
    admin = await asyncio.to_thread(create_key, hooks.settings, mine, "read,admin")
    reader = await asyncio.to_thread(create_key, hooks.settings, mine, "read")
    other = await asyncio.to_thread(create_key, hooks.settings, theirs, "read,admin")
    url = f"{receiver.base}/ok/keyed"
    async with httpx.AsyncClient(base_url=keys_api.api_url, timeout=10) as api:
        assert_error(await api.get("/webhooks"), 401, "API_KEY_MISSING")
        refused = await api.post("/webhooks", json={"url": url}, headers=reader)
        assert_error(refused, 403, "SCOPE_MISSING")
        claimed = await api.post(
            "/webhooks", json={"url": url}, headers=admin | {"X-Tenant": theirs}
        )
        assert_error(claimed, 403, "TENANT_MISMATCH")
        response = await api.post("/webhooks", json={"url": url}, headers=admin)
        assert response.status_code == 201, response.text
        created = response.json()
        listed = (await api.get("/webhooks", headers=reader)).json()["webhooks"]
        assert [w["id"] for w in listed] == [created["id"]]

        path = f"/webhooks/{created['id']}"
        assert (await api.get("/webhooks", headers=other)).json() == {"webhooks": []}
        assert_error(await api.get(f"{path}/deliveries", headers=other), 404, "WEBHOOK_NOT_FOUND")
        assert_error(await api.delete(path, headers=other), 404, "WEBHOOK_NOT_FOUND")
        assert_error(await api.delete(path, headers=reader), 403, "SCOPE_MISSING")

        job = str(uuid.uuid4())
        their_event = now(accepted(job, 0, []), theirs)
        my_event = now(finished(job, 0, "SUCCEEDED", []), mine)
        await send(hooks.settings, their_event, my_event)

        async def ended() -> bool:
            got = await api.get(f"{path}/deliveries", headers=reader)
            return [d["status"] for d in got.json()["deliveries"]] == ["DELIVERED"]

        await eventually(ended)
        log = (await api.get(f"{path}/deliveries", headers=reader)).json()["deliveries"]
    assert [d["event_id"] for d in log] == [my_event[1]["event_id"]]
    got = receiver.at("/ok/keyed")
    assert [r.headers["stagecast-event-id"] for r in got] == [my_event[1]["event_id"]]


async def test_the_sdk_manages_webhooks_and_reads_their_log(
    hooks: Launcher, receiver: Receiver
) -> None:
    who = tenant()
    async with StagecastClient(hooks.api_url, tenant=who) as client:
        created = await client.create_webhook(f"{receiver.base}/ok/sdk", ["JobFinished"])
        assert created["secret"].startswith("whsec_")
        assert [w["id"] for w in await client.webhooks()] == [created["id"]]
        with pytest.raises(ApiRequestError) as refused:
            await client.create_webhook("ftp://example.com/")
        assert (refused.value.status, refused.value.code) == (400, "INVALID_WEBHOOK_URL")

        event = now(finished(str(uuid.uuid4()), 0, "SUCCEEDED", []), who)
        await send(hooks.settings, event)

        async def delivered() -> bool:
            return bool(await client.webhook_deliveries(created["id"], status="DELIVERED"))

        await eventually(delivered)
        [delivery] = await client.webhook_deliveries(created["id"], limit=10)
        assert delivery["event_id"] == event[1]["event_id"]
        await client.delete_webhook(created["id"])
        assert await client.webhooks() == []
        with pytest.raises(ApiRequestError) as gone:
            await client.delete_webhook(created["id"])
        assert (gone.value.status, gone.value.code) == (404, "WEBHOOK_NOT_FOUND")
