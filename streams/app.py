"""The faust app: the dispatcher and the stage agents, each a short loop over its topic."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

import aiokafka
import asyncpg
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from schemas.codec import Codec, default_codec
from streams.attempts import AttemptHistory
from streams.control import ControlFeed, ControlListener
from streams.dispatcher import Dispatcher
from streams.dispatches import DispatchLedger
from streams.envelope import Origin
from streams.exposition import serve_metrics
from streams.fetch_pace import FetchPace
from streams.handoff import SHORT_STAGES, Handoff
from streams.intake import Intake
from streams.producer import EventPublisher
from streams.runner import StageCommand, StageLogic, StageReporter, StageRunner
from streams.settings import STAGES, Settings
from streams.stage import Outcome, Problem, StageFailure
from streams.worker_metrics import WorkerMetrics

# How often a worker with an execute stage says again which protections its sandbox has.
SANDBOX_REPORT_S = 30.0
# How often a worker asks the broker which generation it is (see streams/generation.py).
GENERATION_CHECK_S = 1.0
# The exit status of a worker that left a broker generation behind (EX_TEMPFAIL).
GENERATION_CHANGED_EXIT = 75
# The exit status of a worker whose stop took longer than `stop_grace_s` (EX_SOFTWARE).
STOP_OVERDUE_EXIT = 70
# How long a thread may hold the GIL while another waits for it (see run_worker).
WORKER_SWITCH_INTERVAL_S = 0.0005
# Stages whose events come with the clock: a delivery of one a dead worker left open runs as
# the next attempt (streams/attempts.py).
LONG_STAGES = ("execute", "train")

log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust hard-codes a 1.5 s fetch wait; the embedded broker may hold a fetch that long."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        assert isinstance(app, StageApp)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (faust's signature)
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        app = self.app
        assert isinstance(app, StageApp)
        # In the consumer's own thread, where its fetcher runs.
        app.fetch_pace.pace(consumer, bool(records))
        return records


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StageApp(faust.App):
    """A faust App with our fetch wait, owning our event publisher and control feed."""

    fetch_max_wait_ms = 500
    fetch_pace = FetchPace(500, None)
    publisher: EventPublisher | None = None
    ledger: DispatchLedger | None = None
    history: AttemptHistory | None = None
    control: ControlFeed | None = None
    # What this worker's execute stage can confine, for /ready (worker_sandboxes).
    sandbox_report: dict[str, Any] | None = None
    database_url: str | None = None
    stop_grace_s = 30.0

    async def on_start(self) -> None:
        await super().on_start()
        if self.publisher is not None:
            await self.publisher.start()
        if self.ledger is not None:
            await self.ledger.start()
        if self.history is not None:
            await self.history.start()
        await self.report_sandbox()
        # Before the group join: a worker that reports ready already hears every cancel.
        if self.control is not None:
            await self.control.start()

    async def on_stop(self) -> None:
        # A thread, not a task: what it guards against is a loop stuck waiting on the broker.
        deadline = threading.Timer(self.stop_grace_s, _stop_overdue, (self.stop_grace_s,))
        deadline.daemon = True
        deadline.start()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        # After the agents stopped: nothing publishes any more.
        await super().on_shutdown()
        if self.control is not None:
            await self.control.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.ledger is not None:
            await self.ledger.stop()
        if self.history is not None:
            await self.history.stop()

    async def report_sandbox(self) -> None:
        """Record (again) which protections this worker's runs have; a failure is only logged."""
        if self.sandbox_report is None or self.database_url is None:
            return
        report = self.sandbox_report
        try:
            conn = await asyncpg.connect(self.database_url, timeout=5)
            try:
                await conn.execute(
                    "INSERT INTO worker_sandboxes (worker, protections, missing, toolchains) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (worker) DO UPDATE SET "
                    "protections = EXCLUDED.protections, missing = EXCLUDED.missing, "
                    "toolchains = EXCLUDED.toolchains, seen_at = now()",
                    f"{socket.gethostname()}:{os.getpid()}",
                    *(json.dumps(report[key]) for key in ("protections", "missing", "toolchains")),
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("could not record this worker's sandbox (%s)", error)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def _stop_overdue(grace_s: float) -> None:
    log.error("still stopping after %.0f s (the broker may be gone); exiting now", grace_s)
    logging.shutdown()
    os._exit(STOP_OVERDUE_EXIT)


async def leave_if_generation_changed(publisher: EventPublisher) -> None:
    """Exit at once when the broker started a new log under this worker.

    faust remembers the offsets it read and drops messages below them, so in a new log it
    would skip work; and a graceful stop would commit those offsets. Exiting without a word
    to the broker is the safe way: the supervisor starts a fresh worker in the new log.
    """
    try:
        state = await publisher.broker_state()
    except Exception:  # the broker is away: nothing to compare yet
        return
    if publisher.generation and state.generation != publisher.generation:
        log.error(
            "broker generation changed (%s -> %s); exiting so a fresh worker takes over",
            publisher.generation,
            state.generation,
        )
        logging.shutdown()
        os._exit(GENERATION_CHANGED_EXIT)


def stage_logic_registry(settings: Settings) -> dict[str, StageLogic]:
    """The enabled stages this build can run, by name (streams imports consumers only here)."""
    from consumers.codegen.agent import run as codegen
    from consumers.compile.agent import run as compile_
    from consumers.parse.agent import run as parse

    logic: dict[str, StageLogic] = {"parse": parse, "compile": compile_, "codegen": codegen}
    if {"execute", "train"} & set(settings.enabled_stages):
        from consumers.execute.agent import ExecuteStage
        from consumers.execute.sandbox import Sandbox
        from consumers.train.agent import TrainStage

        # One sandbox (probed once) and one bound on runs for this worker's two stages.
        sandbox = Sandbox.detect()
        slots = asyncio.Semaphore(settings.execute_concurrency)
        if "execute" in settings.enabled_stages:
            logic["execute"] = ExecuteStage(settings, sandbox, slots)
        if "train" in settings.enabled_stages:
            logic["train"] = TrainStage(settings, sandbox, slots)
    return logic


async def unavailable(command: StageCommand, reporter: StageReporter) -> Outcome:
    """The logic of a stage this deployment does not run: its job fails instead of hanging."""
    problem = Problem("STAGE_UNAVAILABLE", f"stage {command.stage!r} does not run here")
    return StageFailure((problem,))


def build_app(
    settings: Settings,
    codec: Codec | None = None,
    stages: Mapping[str, StageLogic] | None = None,
    dispatcher: bool = True,
    metrics: WorkerMetrics | None = None,
) -> faust.App:
    """A worker app running the dispatcher and the enabled stages."""
    codec = codec or default_codec()
    logic = dict(stages if stages is not None else stage_logic_registry(settings))
    app = StageApp(
        settings.app_id,
        broker=f"kafka://{settings.require_kafka()}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        store="memory://",
        # Faust makes this directory even with memory stores: the state directory, not the cwd.
        # It formats the path, so braces in it are escaped.
        datadir=str(settings.state_dir.resolve() / f"{settings.app_id}-faust")
        .replace("{", "{{")
        .replace("}", "}}"),
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
        broker_request_timeout=max(40.0, settings.session_timeout_s * 2),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.0,
        loghandlers=[],
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.stop_grace_s = settings.stop_grace_s
    app.fetch_pace = FetchPace(settings.fetch_max_wait_ms, settings.fetch_busy_wait_ms)
    publisher = EventPublisher(settings, codec)
    app.publisher = publisher
    metrics = metrics or WorkerMetrics()

    handoff = Handoff()

    @app.on_partitions_revoked.connect
    def _leaving(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        handoff.ownership.revoked()

    @app.on_partitions_assigned.connect
    def _joined(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # faust sends the new assignment, a set of (topic, partition), as the one argument.
        metrics.assigned(args[0])
        handoff.ownership.assigned(args[0])
        # The launcher waits for this before it calls the stack ready.
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        settings.worker_ready_file(os.getpid()).touch()

    handed = [s for s in SHORT_STAGES if s in settings.enabled_stages] if settings.handoff else []

    def add_agent(name: str, topic_name: str, intake: Intake, after: str | None = None) -> None:
        """`after`: the stage whose commands this agent reads (None: the dispatcher's requests)."""
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

        async def agent(stream: Any) -> None:
            async for event in stream.events():
                await intake.receive(Origin.of(event.message))

        # A message whose handling runs the next short stages in its task holds its slot for
        # all of them, where each had a slot of its own: as many slots again per stage (with 8,
        # hand-off made the worker alone from Kafka 100 -> 75 jobs/s; with 32, 122).
        if after is None:
            later = handed
        else:
            later = handed[handed.index(after) + 1 :] if after in handed else []
        concurrency = settings.agent_concurrency * (1 + len(later))
        app.agent(topic, name=name, concurrency=concurrency)(agent)

    report = getattr(logic.get("execute"), "sandbox_report", None)
    if callable(report):
        app.sandbox_report = report()
        app.database_url = settings.database_url

        async def _still_here() -> None:
            await app.report_sandbox()

        app.timer(SANDBOX_REPORT_S)(_still_here)
    missing = [name for name in settings.enabled_stages if name not in logic]
    if missing:
        raise RuntimeError(f"stage(s) {missing} are enabled but not built in this version")

    async def _same_generation() -> None:
        await leave_if_generation_changed(publisher)

    app.timer(GENERATION_CHECK_S)(_same_generation)

    if dispatcher:
        app.ledger = DispatchLedger(settings.require_database())
        handler = Dispatcher(publisher, settings, app.ledger, handoff).handle
        intake = Intake("JobRequested", handler, publisher, codec, settings, metrics)
        add_agent("dispatcher", settings.topics.requests, intake)
    cancels = ControlListener()
    long_stages = [name for name in LONG_STAGES if name in settings.enabled_stages]
    if long_stages:
        app.history = AttemptHistory(settings.require_database())
    for name in STAGES:
        # A command for a stage not run here (sent straight to Kafka, or left by a deployment
        # that ran it) fails its job visibly rather than waiting for a consumer forever.
        stage = logic[name] if name in settings.enabled_stages else unavailable
        history = app.history if name in long_stages else None
        runner = StageRunner(name, stage, publisher, settings, cancels, history, metrics, handoff)
        intake = Intake("StageCommand", runner.handle, publisher, codec, settings, metrics)
        if name in SHORT_STAGES and name in settings.enabled_stages and settings.handoff:
            handoff.accept(settings.topics.stage(name), runner.take)
        add_agent(f"stage-{name}", settings.topics.stage(name), intake, after=name)
    control = Intake("CancelRequested", cancels.handle, publisher, codec, settings, metrics)
    app.control = ControlFeed(settings, control)
    return app


def run_worker(settings: Settings, dispatcher: bool = True) -> None:
    """Run a faust worker until SIGINT/SIGTERM."""
    # faust reads the broker in a thread of its own. With CPython's 5 ms switch interval, the
    # event loop waiting for an acknowledgement waited up to 5 ms for the GIL each time that
    # thread held it: the worker's acknowledgements took 4-17 ms where the broker answers in
    # about 1.3. At 0.5 ms they took 0.8-3.8 ms (README "Latency").
    sys.setswitchinterval(WORKER_SWITCH_INTERVAL_S)
    metrics = WorkerMetrics()
    app = build_app(settings, dispatcher=dispatcher, metrics=metrics)
    serve_metrics(metrics.registry, settings.metrics_host, settings.worker_metrics_port, "worker")
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
