"""GET /events, the firehose: every job's feed in one stream, filtered, resumed exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from api.client import FeedEvent, StagecastClient
from streams.launcher import Launcher
from tests.conftest import WARMUP_DSL, Pipeline, RunningStack, api_alone
from tests.integration.test_api import assert_error
from tests.integration.test_projector import eventually, outgoing, publish, running, successful_job

pytestmark = pytest.mark.integration

FAST_STAGES = ("parse", "compile", "codegen")
STAGE_EVENTS = ("StageChanged", "JobFinished")


def _tenant() -> str:
    return f"firehose-{uuid.uuid4().hex[:8]}"


async def _feed_end(pipeline: Pipeline) -> int:
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        end: int = await conn.fetchval("SELECT COALESCE(max(seq), 0) FROM job_events")
    finally:
        await conn.close()
    return end


async def _expected(
    pipeline: Pipeline, after: int, upto: int, where: str, *args: object
) -> list[tuple[int, str]]:
    """(seq, type) of the feed rows in (after, upto] that `where` passes, in seq order."""
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        rows = await conn.fetch(
            f"SELECT seq, type FROM job_events WHERE seq > $1 AND seq <= $2 AND {where} "
            "ORDER BY seq",
            after,
            upto,
            *args,
        )
    finally:
        await conn.close()
    return [(row["seq"], row["type"]) for row in rows]


async def _finished(pipeline: Pipeline, job_ids: Sequence[str]) -> None:
    """Until every job's JobFinished is in the feed (at most two minutes)."""
    wanted = [uuid.UUID(job_id) for job_id in job_ids]
    conn = await asyncpg.connect(pipeline.settings.require_database())
    try:
        async with asyncio.timeout(120):
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FROM job_events WHERE type = 'JobFinished' "
                    "AND job_id = ANY($1::uuid[])",
                    wanted,
                )
                if done == len(wanted):
                    return
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _take(events: AsyncIterator[FeedEvent], count: int) -> list[FeedEvent]:
    taken: list[FeedEvent] = []
    async for event in events:
        taken.append(event)
        if len(taken) == count:
            break
    return taken


def _seqs(events: Sequence[FeedEvent]) -> list[tuple[int, str]]:
    return [(event.seq, event.type) for event in events]


async def _submit(client: StagecastClient, count: int) -> list[str]:
    return [(await client.submit(WARMUP_DSL, stages=FAST_STAGES))["job_id"] for _ in range(count)]


async def test_filters_pass_exactly_the_events_they_name(pipeline: Pipeline) -> None:
    ours, theirs = _tenant(), _tenant()
    start = await _feed_end(pipeline)
    async with (
        StagecastClient(pipeline.api_url, tenant=ours) as mine,
        StagecastClient(pipeline.api_url, tenant=theirs) as other,
        StagecastClient(pipeline.api_url) as reader,
    ):
        first, second = await _submit(mine, 1) + await _submit(other, 1)
        by_tenant = reader.firehose(start, tenants=[ours], types=STAGE_EVENTS)
        by_stage_and_job = reader.firehose(start, stages=["compile"], jobs=[first, second])
        async with asyncio.timeout(120):
            tenant_events: list[FeedEvent] = []
            async for event in by_tenant:
                tenant_events.append(event)
                if event.type == "JobFinished":
                    break
            # Each job's compile attempt: STARTED and SUCCEEDED.
            stage_events = await _take(by_stage_and_job, 4)
        await by_tenant.aclose()
        await by_stage_and_job.aclose()

    assert {event.data["tenant"] for event in tenant_events} == {ours}
    assert {event.data["job_id"] for event in tenant_events} == {first}
    upto = tenant_events[-1].seq
    assert _seqs(tenant_events) == await _expected(
        pipeline,
        start,
        upto,
        "payload->>'tenant' = $3 AND type = ANY($4::text[])",
        ours,
        list(STAGE_EVENTS),
    )
    assert {event.data["job_id"] for event in stage_events} == {first, second}
    assert {(event.type, event.data["stage"]) for event in stage_events} == {
        ("StageChanged", "compile")
    }
    assert _seqs(stage_events) == await _expected(
        pipeline,
        start,
        stage_events[-1].seq,
        "stage = 'compile' AND job_id = ANY($3::uuid[])",
        [uuid.UUID(first), uuid.UUID(second)],
    )


async def test_a_resume_after_last_event_id_gives_exactly_the_rest(pipeline: Pipeline) -> None:
    """Over more than one page (500 rows), dropped part-way and resumed like an EventSource."""
    tenant = _tenant()
    start = await _feed_end(pipeline)
    async with StagecastClient(pipeline.api_url, tenant=tenant) as client:
        job_ids = await _submit(client, 60)
    await _finished(pipeline, job_ids)
    expected = await _expected(
        pipeline, start, await _feed_end(pipeline), "payload->>'tenant' = $3", tenant
    )
    assert len(expected) > 500, "too few events to span two pages"

    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        url = f"/events?tenant={tenant}&after={start}"
        head = await _read_sse(http, url, {}, 301)
        assert head[0].id == str(start) and not head[0].data, "the start's position comes first"
        first = [(int(sse.id), sse.event) for sse in head[1:]]
        # An EventSource reconnects to the URL it opened, `after` included, with Last-Event-ID.
        rest_sse = await _read_sse(
            http, url, {"Last-Event-ID": str(first[-1][0])}, len(expected) - len(first) + 1
        )
    assert rest_sse[0].id == str(first[-1][0])
    rest = [(int(sse.id), sse.event) for sse in rest_sse[1:]]
    assert first + rest == expected
    assert [json.loads(sse.data)["tenant"] for sse in rest_sse[1:]] == [tenant] * len(rest)


async def _read_sse(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], count: int
) -> list[ServerSentEvent]:
    """The first `count` messages with an id (heartbeats left out) of one connection."""
    messages: list[ServerSentEvent] = []
    async with asyncio.timeout(60), aconnect_sse(http, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200
        assert source.response.headers["cache-control"] == "no-store"
        async for sse in source.aiter_sse():
            if sse.data or not messages:
                messages.append(sse)
            if len(messages) == count:
                break
    return messages


async def test_without_a_resume_point_the_firehose_starts_at_the_feed_end(
    pipeline: Pipeline,
) -> None:
    tenant = _tenant()
    before = await _feed_end(pipeline)
    async with (
        httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http,
        StagecastClient(pipeline.api_url, tenant=tenant) as client,
        asyncio.timeout(120),
        aconnect_sse(http, "GET", f"/events?tenant={tenant}") as source,
    ):
        messages = source.aiter_sse()
        opening = await anext(messages)
        started_at = int(opening.id)
        assert before <= started_at <= await _feed_end(pipeline)
        assert not opening.data
        (job_id,) = await _submit(client, 1)
        async for sse in messages:
            if sse.data:
                event = json.loads(sse.data)
                assert event["job_id"] == job_id
                assert int(sse.id) > started_at
                if sse.event == "JobFinished":
                    break


async def test_an_idle_firehose_sends_heartbeats(pipeline: Pipeline) -> None:
    """A filter nothing matches still gets keep-alive comments (interval set for the tests)."""
    async with (
        httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http,
        http.stream("GET", f"/events?tenant={_tenant()}") as response,
        asyncio.timeout(30),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith(":"):
                break


@pytest.mark.parametrize(
    ("query", "headers", "code"),
    [
        ("type=Bogus", {}, "INVALID_QUERY"),
        ("type=JobRequested", {}, "INVALID_QUERY"),  # not in the feed
        ("type=StageChanged,", {}, "INVALID_QUERY"),
        ("stage=deploy", {}, "INVALID_QUERY"),
        ("tenant=", {}, "INVALID_QUERY"),
        ("tenant=a%00b", {}, "INVALID_QUERY"),
        ("tenant=" + "x" * 101, {}, "INVALID_QUERY"),
        ("job=not-a-uuid", {}, "INVALID_QUERY"),
        ("types=StageChanged", {}, "INVALID_QUERY"),  # a misspelt filter is not ignored
        ("&".join(["job=" + str(uuid.uuid4())] * 101), {}, "INVALID_QUERY"),
        ("after=-1", {}, "INVALID_LAST_EVENT_ID"),
        ("after=%C2%B2", {}, "INVALID_LAST_EVENT_ID"),
        ("", {"Last-Event-ID": "yesterday"}, "INVALID_LAST_EVENT_ID"),
        ("", {"Last-Event-ID": str(2**63)}, "INVALID_LAST_EVENT_ID"),
        ("", {"Last-Event-ID": str(2**62)}, "INVALID_LAST_EVENT_ID"),  # past the feed's end
    ],
)
async def test_bad_filters_and_resume_points_get_400(
    pipeline: Pipeline, query: str, headers: dict[str, str], code: str
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as http:
        response = await http.get(f"/events?{query}", headers=headers)
    assert_error(response, 400, code)


@pytest.fixture
def own_api(pipeline: Pipeline, tmp_path: Path) -> Iterator[Launcher]:
    """An API process of its own on the pipeline's database, for a test to kill."""
    with api_alone(pipeline.settings, tmp_path / "own-api") as launcher:
        yield launcher


async def test_the_client_resumes_across_an_api_restart(
    pipeline: Pipeline, own_api: Launcher
) -> None:
    tenant = _tenant()
    start = await _feed_end(pipeline)
    seen: list[FeedEvent] = []
    async with (
        StagecastClient(pipeline.api_url, tenant=tenant) as submitter,
        StagecastClient(own_api.api_url) as reader,
    ):
        events = reader.firehose(start, tenants=[tenant], reconnects=20)
        job_ids = await _submit(submitter, 5)
        async with asyncio.timeout(120):
            seen.append(await anext(events))
            own_api.children["api"].kill()
            own_api.children["api"].wait(10)
            await asyncio.to_thread(own_api.revive)
            await _finished(pipeline, job_ids)
            total = len(
                await _expected(
                    pipeline, start, await _feed_end(pipeline), "payload->>'tenant' = $3", tenant
                )
            )
            seen += await _take(events, total - 1)
        await events.aclose()
    assert _seqs(seen) == await _expected(
        pipeline, start, seen[-1].seq, "payload->>'tenant' = $3", tenant
    )
    assert {event.data["job_id"] for event in seen} == set(job_ids)


async def test_seqs_become_visible_in_order_while_a_standby_projector_waits(
    stack: RunningStack,
) -> None:
    """What exact paging by seq rests on: no reader ever sees a seq before a lower one.

    Two projectors of one name run on a fresh database while batches land; each snapshot a
    reader takes must hold every seq, of those that finally exist, below its highest one.
    """
    settings = await asyncio.to_thread(stack.isolated)
    job_ids = [str(uuid.uuid4()) for _ in range(100)]
    snapshots: list[set[int]] = []
    conn = await asyncpg.connect(settings.require_database())
    reader = await asyncpg.connect(settings.require_database())
    try:
        async with running(settings) as first, running(settings) as second:
            done = asyncio.Event()

            async def watch() -> None:
                while not done.is_set():
                    rows = await reader.fetch("SELECT seq FROM job_events")
                    snapshots.append({row["seq"] for row in rows})
                    await asyncio.sleep(0.002)

            watcher = asyncio.create_task(watch())
            in_feed = 0
            for wave in range(0, len(job_ids), 10):
                # Wave by wave, so that the feed grows by many commits while it is watched.
                events = [e for job in job_ids[wave : wave + 10] for e in successful_job(job)]
                await publish(settings, outgoing(settings, events))
                in_feed += sum(1 for kind, _ in events if kind != "JobRequested")

                async def projected(wanted: int = in_feed) -> bool:
                    count = await conn.fetchval("SELECT count(*) FROM job_events")
                    return bool(count == wanted)

                await eventually(projected, within_s=60)
            done.set()
            await watcher
        final = {row["seq"] for row in await conn.fetch("SELECT seq FROM job_events")}
    finally:
        await conn.close()
        await reader.close()
    assert sorted([first.stats.messages, second.stats.messages])[0] == 0, "two projectors wrote"
    growing = [seen for seen in snapshots if seen and seen != final]
    assert growing, "no snapshot caught the feed while it grew"
    for seen in snapshots:
        top = max(seen, default=0)
        assert {seq for seq in final if seq <= top} <= seen
