"""The stage runner against the real broker: a crashing stage fails its job, not the agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from schemas.codec import default_codec
from streams.attempts import AttemptHistory
from streams.control import ControlListener
from streams.envelope import Origin, envelope
from streams.handoff import Handoff
from streams.intake import Intake
from streams.producer import EventPublisher
from streams.runner import StageCommand, StageLogic, StageReporter, StageRunner
from streams.settings import Settings
from streams.stage import Outcome, StageCancelled, StageResult
from tests.conftest import RunningStack
from tests.topics import Decoded, Message, decoded, from_start

pytestmark = pytest.mark.integration


async def crashing(command: StageCommand, reporter: StageReporter) -> Outcome:
    raise ZeroDivisionError("boom")


async def working(command: StageCommand, reporter: StageReporter) -> Outcome:
    await reporter.progress(50, "half way")
    return StageResult(output={"seen": command.spec["dsl"]}, summary={"ok": True})


def intake_for(runner: StageRunner, publisher: EventPublisher) -> Intake:
    return Intake("StageCommand", runner.handle, publisher, default_codec(), runner.settings)


def accepted_bytes(job_id: str) -> bytes:
    record = envelope(job_id, "acme", "test", str(uuid.uuid4()))
    record.update(kind="MODEL", target="pytorch", stages=["parse"], idempotency_key=None)
    return default_codec().encode("JobAccepted", record)


def command_bytes(
    job_id: str,
    stage: str = "parse",
    spec: str | None = None,
    plan: list[str] | None = None,
) -> bytes:
    record = envelope(job_id, "acme", "test", str(uuid.uuid4()))
    record.update(
        stage=stage,
        attempt=1,
        plan=plan or ["parse", "compile"],
        spec=spec if spec is not None else json.dumps({"dsl": "network X {}"}),
        input="{}",
        deadline_ms=None,
    )
    return default_codec().encode("StageCommand", record)


async def first(settings: Settings, topics: list[str], count: int) -> list[Message]:
    """The first `count` messages of `topics`, read from their start."""
    found = await from_start(settings, topics, lambda got: len(got) >= count)
    return found[:count]


async def read_all(settings: Settings, topics: list[str], count: int) -> list[Decoded]:
    return decoded(await first(settings, topics, count))


async def test_crash_fails_the_job_and_bad_input_is_dead_lettered(stack: RunningStack) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        crash = intake_for(StageRunner("parse", crashing, publisher, settings), publisher)
        work = intake_for(StageRunner("parse", working, publisher, settings), publisher)
        crashed_job, good_job = str(uuid.uuid4()), str(uuid.uuid4())
        topic = settings.topics.stage("parse")
        await crash.receive(Origin(topic, 0, 1, None, command_bytes(crashed_job)))
        await crash.receive(Origin(topic, 0, 2, b"k", b"garbage"))
        await crash.receive(Origin(topic, 0, 3, None, command_bytes(crashed_job, stage="compile")))
        await crash.receive(Origin(topic, 0, 4, None, command_bytes(crashed_job, spec="[]")))
        await crash.receive(Origin(topic, 0, 5, None, b""))
        await crash.receive(
            Origin(topic, 0, 6, None, command_bytes(crashed_job, plan=["parse", "parse"]))
        )
        await crash.receive(Origin(topic, 0, 7, None, accepted_bytes(crashed_job)))
        await work.receive(Origin(topic, 0, 8, None, command_bytes(good_job)))
    finally:
        await publisher.stop()

    events = await read_all(settings, [settings.topics.events, settings.topics.stage("compile")], 6)
    by_job: dict[str, list[str]] = {}
    for event_type, record in events:
        step = record.get("status") if event_type != "StageCommand" else record["stage"]
        by_job.setdefault(record["job_id"], []).append(f"{event_type} {step}")
    assert by_job.get(crashed_job) == [
        "StageChanged STARTED",
        "StageChanged FAILED",
        "JobFinished FAILED",
    ], events
    assert sorted(by_job[good_job]) == sorted(
        ["StageChanged STARTED", "StageChanged SUCCEEDED", "StageCommand compile"]
    )
    failed = next(r for t, r in events if t == "StageChanged" and r["status"] == "FAILED")
    assert failed["error"]["code"] == "STAGE_CRASHED"
    assert "boom" in failed["error"]["message"]

    letters = await read_all(settings, [settings.topics.deadletter], 6)
    codes = {record["source_offset"]: record["error_code"] for _, record in letters}
    assert codes == {
        2: "BAD_MARKER",
        3: "WRONG_STAGE",
        4: "INVALID",
        5: "TRUNCATED",
        6: "INVALID",
        7: "WRONG_EVENT",
    }
    assert all(record["reason"] for _, record in letters)

    progress = await read_all(settings, [settings.topics.progress], 1)
    assert progress[0][0] == "ProgressReported"
    assert progress[0][1]["percent"] == 50


async def failed_stage(settings: Any) -> dict[str, Any]:
    """The FAILED StageChanged of a job whose only stage started and failed."""
    events = await read_all(settings, [settings.topics.events], 3)
    assert [(t, r.get("status")) for t, r in events] == [
        ("StageChanged", "STARTED"),
        ("StageChanged", "FAILED"),
        ("JobFinished", "FAILED"),
    ]
    return events[1][1]


async def unserialisable(command: StageCommand, reporter: StageReporter) -> Outcome:
    return StageResult(output={"not json": {1, 2}})


async def test_unserialisable_output_fails_the_job_and_handler_crashes_are_dead_lettered(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()

    async def broken_handler(record: Any) -> None:
        raise RuntimeError("handler bug")

    try:
        runner = StageRunner("parse", unserialisable, publisher, settings)
        job = str(uuid.uuid4())
        topic = settings.topics.stage("parse")
        await intake_for(runner, publisher).receive(Origin(topic, 1, 10, None, command_bytes(job)))
        broken = Intake("StageCommand", broken_handler, publisher, default_codec(), settings)
        await broken.receive(Origin(topic, 1, 11, None, command_bytes(job)))
    finally:
        await publisher.stop()

    failure = await failed_stage(settings)
    assert failure["error"]["code"] == "OUTPUT_INVALID"
    letters = await read_all(settings, [settings.topics.deadletter], 1)
    assert letters[0][1]["error_code"] == "HANDLER_CRASHED"
    assert "handler bug" in letters[0][1]["reason"]
    assert letters[0][1]["source_offset"] == 11


async def oversized(command: StageCommand, reporter: StageReporter) -> Outcome:
    return StageResult(output={"blob": "x" * 2_000_000})


async def test_output_too_big_for_the_broker_fails_the_job(stack: RunningStack) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        runner = StageRunner("parse", oversized, publisher, settings)
        origin = Origin(
            settings.topics.stage("parse"), 0, 1, None, command_bytes(str(uuid.uuid4()))
        )
        await intake_for(runner, publisher).receive(origin)
    finally:
        await publisher.stop()
    failure = await failed_stage(settings)
    assert failure["error"]["code"] == "OUTPUT_INVALID"
    assert "over the 1000000-byte limit" in failure["error"]["message"]


async def until_cancelled(command: StageCommand, reporter: StageReporter) -> Outcome:
    await reporter.logs([("stdout", "working"), ("stderr", "still working")])
    await asyncio.wait_for(reporter.cancel.wait(), 20)
    return StageCancelled("stopped by the test", summary={"ran": True})


async def test_cancel_stops_a_running_stage_and_a_cancelled_job_starts_no_stage(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    cancels = ControlListener()
    try:
        running_job, cancelled_job, after_job = (str(uuid.uuid4()) for _ in range(3))
        topic = settings.topics.stage("parse")
        slow = intake_for(
            StageRunner("parse", until_cancelled, publisher, settings, cancels), publisher
        )
        work = intake_for(StageRunner("parse", working, publisher, settings, cancels), publisher)
        running = asyncio.create_task(
            slow.receive(Origin(topic, 0, 1, None, command_bytes(running_job)))
        )
        await asyncio.sleep(0.3)
        assert not running.done()
        await cancels.handle({"job_id": running_job, "reason": "user asked"})
        await asyncio.wait_for(running, 5)
        await cancels.handle({"job_id": cancelled_job, "reason": ""})
        await work.receive(Origin(topic, 0, 2, None, command_bytes(cancelled_job)))
        # Cancelled while its stage ran: the stage succeeds, the next one never starts.
        gate = asyncio.Event()

        async def finishing_after_the_cancel(
            command: StageCommand, reporter: StageReporter
        ) -> Outcome:
            await gate.wait()
            return StageResult(output={}, summary={})

        late = StageRunner("parse", finishing_after_the_cancel, publisher, settings, cancels)
        finishing = asyncio.create_task(
            intake_for(late, publisher).receive(Origin(topic, 0, 3, None, command_bytes(after_job)))
        )
        await asyncio.sleep(0.3)
        await cancels.handle({"job_id": after_job, "reason": ""})
        gate.set()
        await asyncio.wait_for(finishing, 5)
    finally:
        await publisher.stop()

    events = await read_all(settings, [settings.topics.events, settings.topics.stage("compile")], 7)
    by_job: dict[str, list[str]] = {}
    for event_type, record in events:
        step = record.get("status") if event_type != "StageCommand" else record["stage"]
        by_job.setdefault(record["job_id"], []).append(f"{event_type} {step}")
    assert by_job[running_job] == [
        "StageChanged STARTED",
        "StageChanged CANCELLED",
        "JobFinished CANCELLED",
    ]
    assert by_job[cancelled_job] == ["JobFinished CANCELLED"]
    assert by_job[after_job] == [
        "StageChanged STARTED",
        "StageChanged SUCCEEDED",
        "JobFinished CANCELLED",
    ]
    stopped = {
        (r["job_id"], t): r
        for t, r in events
        if t == "JobFinished" or r.get("status") == "CANCELLED"
    }
    changed = stopped[(running_job, "StageChanged")]
    assert changed["error"]["code"] == "CANCELLED"
    assert json.loads(changed["summary"]) == {"ran": True}
    assert changed["reported"] == 2
    assert stopped[(running_job, "JobFinished")]["error"]["message"] == "user asked"
    assert stopped[(cancelled_job, "JobFinished")]["stages_completed"] == []
    assert stopped[(after_job, "JobFinished")]["stages_completed"] == ["parse"]


async def test_a_long_stage_left_open_by_a_dead_worker_is_retried_then_given_up(
    stack: RunningStack,
) -> None:
    """What the projection recorded decides: an open attempt ends ATTEMPT_LOST and the next
    runs; the last allowed one open fails the job WORKER_LOST without running anything."""
    settings = await asyncio.to_thread(stack.isolated, stage_max_attempts=3)
    retried, given_up = str(uuid.uuid4()), str(uuid.uuid4())
    conn = await asyncpg.connect(settings.require_database())
    try:
        for job_id, open_attempt in ((retried, 1), (given_up, 3)):
            await conn.execute(
                "INSERT INTO jobs (job_id, tenant, status) VALUES ($1, 'acme', 'RUNNING')",
                uuid.UUID(job_id),
            )
            await conn.execute(
                "INSERT INTO job_stages (job_id, stage, attempt, status) "
                "VALUES ($1, 'execute', $2, 'STARTED')",
                uuid.UUID(job_id),
                open_attempt,
            )
    finally:
        await conn.close()
    ran: list[int] = []

    async def counting(command: StageCommand, reporter: StageReporter) -> Outcome:
        ran.append(command.attempt)
        return await working(command, reporter)

    history = AttemptHistory(settings.require_database())
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    await history.start()
    try:
        runner = StageRunner("execute", counting, publisher, settings, history=history)
        intake = intake_for(runner, publisher)
        topic = settings.topics.stage("execute")
        plan = ["execute", "train"]
        await intake.receive(
            Origin(topic, 0, 1, None, command_bytes(retried, "execute", plan=plan))
        )
        await intake.receive(
            Origin(topic, 0, 2, None, command_bytes(given_up, "execute", plan=plan))
        )
    finally:
        await history.stop()
        await publisher.stop()

    assert ran == [2]
    events = await read_all(settings, [settings.topics.events], 5)
    by_job: dict[str, list[tuple[str, int | None, str | None, str | None]]] = {}
    for event_type, record in events:
        code = (record.get("error") or {}).get("code")
        step = (event_type, record.get("attempt"), record.get("status"), code)
        by_job.setdefault(record["job_id"], []).append(step)
    assert by_job[retried] == [
        ("StageChanged", 1, "FAILED", "ATTEMPT_LOST"),
        ("StageChanged", 2, "STARTED", None),
        ("StageChanged", 2, "SUCCEEDED", None),
    ]
    [(kind, next_command)] = await read_all(settings, [settings.topics.stage("train")], 1)
    assert (kind, next_command["job_id"], next_command["stage"]) == (
        "StageCommand",
        retried,
        "train",
    )
    assert by_job[given_up] == [
        ("StageChanged", 3, "FAILED", "WORKER_LOST"),
        ("JobFinished", None, "FAILED", "WORKER_LOST"),
    ]


async def test_a_second_delivery_while_the_stage_runs_waits_for_it_instead_of_running_again(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    release = asyncio.Event()
    runs: list[int] = []

    async def slow(command: StageCommand, reporter: StageReporter) -> Outcome:
        runs.append(command.attempt)
        await release.wait()
        return await working(command, reporter)

    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        intake = intake_for(StageRunner("parse", slow, publisher, settings), publisher)
        job_id = str(uuid.uuid4())
        topic = settings.topics.stage("parse")
        first = asyncio.create_task(
            intake.receive(Origin(topic, 0, 1, None, command_bytes(job_id)))
        )
        await asyncio.sleep(0.2)
        # The same message again, as a rebalance hands it over a second time.
        again = asyncio.create_task(
            intake.receive(Origin(topic, 0, 1, None, command_bytes(job_id)))
        )
        await asyncio.sleep(0.2)
        assert not again.done()  # not acknowledged while the first run goes on
        release.set()
        await asyncio.wait_for(asyncio.gather(first, again), 20)
    finally:
        await publisher.stop()
    assert runs == [1]
    events = await read_all(settings, [settings.topics.events], 2)
    assert [(t, r["status"]) for t, r in events] == [
        ("StageChanged", "STARTED"),
        ("StageChanged", "SUCCEEDED"),
    ]


async def consumed_command(settings: Any, stage: str) -> Origin:
    """The StageCommand a stage published for `stage`, as its consumer would receive it."""
    (message,) = await first(settings, [settings.topics.stage(stage)], 1)
    return Origin.of(message)


@contextlib.asynccontextmanager
async def parse_handing_off(
    settings: Any, compiling: StageLogic, reads: Iterable[int] | None = None
) -> AsyncIterator[tuple[Intake, Intake]]:
    """Intakes of parse and compile in one worker that reads the compile topic's partitions
    `reads` (all of them by default): parse hands its commands off to compile."""
    publisher = EventPublisher(settings, default_codec())
    await publisher.start()
    try:
        compile_ = StageRunner("compile", compiling, publisher, settings)
        handoff = Handoff()
        topic = settings.topics.stage("compile")
        handoff.accept(topic, compile_.take)
        partitions = range(settings.stage_partitions) if reads is None else reads
        handoff.ownership.assigned((topic, partition) for partition in partitions)
        parse = StageRunner("parse", working, publisher, settings, handoff=handoff)
        yield intake_for(parse, publisher), intake_for(compile_, publisher)
    finally:
        await publisher.stop()


async def parsed(settings: Any, parse: Intake, job_id: str, offset: int = 1) -> None:
    """Deliver `job_id`'s parse command to the parse intake."""
    topic = settings.topics.stage("parse")
    await parse.receive(Origin(topic, 0, offset, None, command_bytes(job_id)))


async def test_a_handed_off_stage_runs_at_once_and_its_delivery_is_only_acknowledged(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    compiled: list[str] = []

    async def compiling(command: StageCommand, reporter: StageReporter) -> Outcome:
        compiled.append(command.input["seen"])
        return StageResult(output={}, summary={})

    async with parse_handing_off(settings, compiling) as (parse, compile_):
        await parsed(settings, parse, str(uuid.uuid4()))
        # Compile ran inside parse's handling, from the command it had just published.
        assert compiled == ["network X {}"]
        delivery = await consumed_command(settings, "compile")
        await compile_.receive(delivery)
        # Its delivery is acknowledged without running it again, and only once: a second
        # copy of the command (a rebalance, a repeated publish) runs the stage as before.
        assert compiled == ["network X {}"]
        await compile_.receive(delivery)
        assert compiled == ["network X {}", "network X {}"]
    events = await read_all(settings, [settings.topics.events], 5)
    assert [(t, r.get("stage"), r["status"]) for t, r in events] == [
        ("StageChanged", "parse", "STARTED"),
        ("StageChanged", "parse", "SUCCEEDED"),
        ("StageChanged", "compile", "STARTED"),
        ("StageChanged", "compile", "SUCCEEDED"),
        ("JobFinished", None, "SUCCEEDED"),
    ]


async def test_no_handoff_to_a_partition_this_worker_does_not_read(stack: RunningStack) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    compiled: list[str] = []

    async def compiling(command: StageCommand, reporter: StageReporter) -> Outcome:
        compiled.append(command.job_id)
        return StageResult(output={}, summary={})

    async with parse_handing_off(settings, compiling, reads=()) as (parse, compile_):
        job_id = str(uuid.uuid4())
        await parsed(settings, parse, job_id)
        assert compiled == []  # whichever worker reads that partition runs it
        await compile_.receive(await consumed_command(settings, "compile"))
        assert compiled == [job_id]


async def test_a_handoff_stopped_by_an_outage_leaves_the_stage_to_its_delivery(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    calls: list[int] = []

    async def flaky(command: StageCommand, reporter: StageReporter) -> Outcome:
        calls.append(len(calls))
        if len(calls) == 1:
            raise KafkaConnectionError("the broker went away mid-stage")
        return StageResult(output={}, summary={})

    async with parse_handing_off(settings, flaky) as (parse, compile_):
        # Parse is done and its command durable: the outage in the handed-off run is not its.
        await parsed(settings, parse, str(uuid.uuid4()))
        assert calls == [0]
        await compile_.receive(await consumed_command(settings, "compile"))
        assert calls == [0, 1]
    events = await read_all(settings, [settings.topics.events], 6)
    assert [(t, r.get("stage"), r["status"]) for t, r in events] == [
        ("StageChanged", "parse", "STARTED"),
        ("StageChanged", "parse", "SUCCEEDED"),
        ("StageChanged", "compile", "STARTED"),
        # The delivery's run: the same deterministic STARTED again, then the outcome.
        ("StageChanged", "compile", "STARTED"),
        ("StageChanged", "compile", "SUCCEEDED"),
        ("JobFinished", None, "SUCCEEDED"),
    ]


async def test_a_command_goes_to_a_partition_this_worker_reads_so_that_it_is_handed_off(
    stack: RunningStack,
) -> None:
    settings = await asyncio.to_thread(stack.isolated)
    compiled: list[str] = []

    async def compiling(command: StageCommand, reporter: StageReporter) -> Outcome:
        compiled.append(command.job_id)
        return StageResult(output={}, summary={})

    # One worker of several: it reads only partition 2 of the compile topic.
    async with parse_handing_off(settings, compiling, reads=[2]) as (parse, _):
        jobs = [str(uuid.uuid4()) for _ in range(4)]
        for offset, job_id in enumerate(jobs):
            await parsed(settings, parse, job_id, offset)
    # Every job's compile ran here, whatever partition its key hashes to.
    assert compiled == jobs
    commands = await first(settings, [settings.topics.stage("compile")], len(jobs))
    assert [message.partition for message in commands] == [2, 2, 2, 2]
