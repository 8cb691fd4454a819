"""The train stage on a stack that runs it: real training in the sandbox, followed live."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import psutil
import pytest

from api.client import FeedEvent, StagecastClient
from projections.audit import audit_job
from schemas.codec import default_codec
from streams.launcher import Launcher
from streams.stack import free_port
from tests.conftest import EXAMPLES, RunningStack

pytestmark = pytest.mark.integration

DIGITS = (EXAMPLES / "digits_cnn.neural").read_text()
IRIS = (EXAMPLES / "iris_mlp.neural").read_text()
# Where clients would reach the artifact store; the API maps it back into the directory.
STORE_URL = "https://artifacts.example/stagecast/"


@pytest.fixture(scope="module")
def training(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Worker, projector and API of their own (training runs take the worker's run slots,
    and one test kills that worker)."""
    state = tmp_path_factory.mktemp("train-stack")
    settings = stack.isolated(state_dir=state, api_port=free_port(), artifact_url=STORE_URL)
    launcher = Launcher(settings)
    launcher.api_url = f"http://{settings.api_host}:{settings.api_port}"
    for name in ("worker", "projector", "api"):
        launcher.spawn(name)
    try:
        launcher.wait_ready(90)
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture
def trainer(training: Launcher) -> str:
    """The training stack's API."""
    return training.api_url


async def train(api_url: str, dsl: str, **settings: Any) -> list[FeedEvent]:
    async with StagecastClient(api_url, timeout=120) as client:
        accepted = await client.submit(dsl, stages=["train"], train=settings)
        return [event async for event in client.events(accepted["job_id"])]


def final_metrics(feed: list[FeedEvent]) -> dict[str, float]:
    done = [e.data for e in feed if e.type == "StageChanged" and e.data["stage"] == "train"]
    assert done[-1]["status"] == "SUCCEEDED", done[-1]
    return dict(json.loads(done[-1]["summary"])["final"])


async def test_digits_cnn_learns_the_digits_set(trainer: str) -> None:
    feed = await train(trainer, DIGITS, epochs=20, batch_size=32)
    assert final_metrics(feed)["val_accuracy"] >= 0.95


async def test_the_keras_module_trains_when_the_target_is_tensorflow(trainer: str) -> None:
    async with StagecastClient(trainer, timeout=180) as client:
        accepted = await client.submit(
            IRIS, stages=["train"], target="tensorflow", train={"epochs": 40, "seed": 3}
        )
        feed = [event async for event in client.events(accepted["job_id"])]
        listed = {a["name"] for a in await client.artifacts(accepted["job_id"])}
    assert final_metrics(feed)["val_accuracy"] >= 0.8
    assert {"model.weights.h5", "metrics.json", "model.py"} <= listed
    assert "model.onnx" not in listed  # the ONNX export is PyTorch's
    epochs = [
        e.data["step"] for e in feed if e.type == "MetricRecorded" and e.data["name"] == "loss"
    ]
    assert epochs == list(range(1, 41))


async def test_iris_mlp_learns_iris_and_the_same_seed_gives_the_same_metrics(
    trainer: str,
) -> None:
    first, again, other = await asyncio.gather(
        train(trainer, IRIS, seed=3), train(trainer, IRIS, seed=3), train(trainer, IRIS, seed=4)
    )
    assert final_metrics(first)["val_accuracy"] >= 0.90
    assert final_metrics(again) == final_metrics(first)
    assert final_metrics(other) != final_metrics(first)


async def test_a_training_feed_shows_progress_metrics_and_artifacts_in_order(
    training: Launcher,
) -> None:
    feed = await train(training.api_url, IRIS, epochs=6)
    reported = [e.data for e in feed if e.type == "ProgressReported"]
    percents = [p["percent"] for p in reported]
    assert percents == sorted(percents) and percents[-1] == 100.0
    # Heartbeats (no epoch) may come between; the training's own reports say the rest.
    progress = [p for p in reported if p["epoch"] is not None]
    assert all(p["eta_s"] is not None and p["epochs"] == 6 for p in progress)
    assert {p["epoch"] for p in progress} == set(range(1, 7))  # at least one per epoch end
    assert all(p["samples_per_s"] and p["loss"] is not None for p in progress)
    metrics = [e.data for e in feed if e.type == "MetricRecorded"]
    by_name: dict[str, list[int]] = {}
    for metric in metrics:
        by_name.setdefault(metric["name"], []).append(metric["step"])
    assert set(by_name) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(steps == list(range(1, 7)) for steps in by_name.values())
    assert {m["labels"]["split"] for m in metrics if m["name"].startswith("val_")} == {"validation"}
    kinds = [e.type for e in feed]
    artifacts = {e.data["name"]: e.data for e in feed if e.type == "ArtifactStored"}
    assert {"model.pt", "metrics.json", "model.py"} <= set(artifacts)
    assert max(i for i, kind in enumerate(kinds) if kind == "ArtifactStored") < kinds.index(
        "JobFinished"
    )
    weights = artifacts["model.pt"]
    # Named under the store's URL; the file is at the same place in the artifact directory.
    relative = weights["uri"].removeprefix(STORE_URL)
    stored = training.settings.artifact_root() / relative
    assert len(await asyncio.to_thread(stored.read_bytes)) == weights["size_bytes"]
    assert weights["content"] is None  # big artifacts travel by uri, not inline


async def test_cancel_mid_training_stops_in_two_seconds_and_keeps_the_checkpoint(
    trainer: str,
) -> None:
    async with StagecastClient(trainer, timeout=120) as client:
        accepted = await client.submit(DIGITS, stages=["train"], train={"epochs": 500})
        sent_at = stopped_at = None
        feed = []
        async for event in client.events(accepted["job_id"]):
            feed.append(event)
            if event.type == "MetricRecorded" and sent_at is None:
                sent_at = time.monotonic()
                await client.cancel(accepted["job_id"], "enough")
            if event.type == "StageChanged" and event.data["status"] == "CANCELLED":
                stopped_at = time.monotonic()
    assert sent_at is not None and stopped_at is not None
    assert stopped_at - sent_at <= 2.0
    assert feed[-1].data["status"] == "CANCELLED"
    names = [e.data["name"] for e in feed if e.type == "ArtifactStored"]
    assert "checkpoint.pt" in names


async def test_a_data_set_that_does_not_fit_the_model_is_refused_before_training(
    trainer: str,
) -> None:
    misfit = await train(trainer, IRIS, dataset="sklearn:digits")
    missing = await train(trainer, IRIS, dataset="file:nothing-here.npz")
    outside = await train(trainer, IRIS, dataset="file:../../etc/passwd.npz")
    for feed, code in (
        (misfit, "DATASET_SHAPE_MISMATCH"),
        (missing, "DATASET_UNAVAILABLE"),
        (outside, "DATASET_UNAVAILABLE"),
    ):
        failed = [e.data for e in feed if e.type == "StageChanged" and e.data["status"] == "FAILED"]
        assert failed and failed[0]["error"]["code"] == code, failed
        assert not any(e.type == "ProgressReported" for e in feed)
    shapes = [e.data for e in misfit if e.type == "StageChanged" and e.data["status"] == "FAILED"]
    assert "[8, 8, 1]" in shapes[0]["error"]["message"] and "[4]" in shapes[0]["error"]["message"]


async def test_a_training_that_raises_fails_with_its_exception(trainer: str) -> None:
    # iris_mlp has batch normalization, which cannot train on batches of one sample.
    feed = await train(trainer, IRIS, batch_size=1, epochs=1)
    failed = [e.data for e in feed if e.type == "StageChanged" and e.data["status"] == "FAILED"]
    assert failed and failed[0]["error"]["code"] == "TRAINING_FAILED"
    assert "ValueError: Expected more than 1 value per channel" in failed[0]["error"]["message"]
    stderr = [e.data["message"] for e in feed if e.type == "LogEmitted"]
    assert any("Traceback" in line for line in stderr)
    assert feed[-1].type == "JobFinished" and feed[-1].data["status"] == "FAILED"


async def test_a_trained_runs_weights_metrics_and_comparison_are_served(trainer: str) -> None:
    first, second = await asyncio.gather(
        train(trainer, IRIS, epochs=3, seed=5), train(trainer, IRIS, epochs=4, seed=6)
    )
    job_ids = [feed[0].data["job_id"] for feed in (first, second)]
    async with StagecastClient(trainer) as client:
        listed = {a["name"]: a for a in await client.artifacts(job_ids[0])}
        weights = await client.download(job_ids[0], "model.pt")
        history = await client.metrics(job_ids[0])
        compared = await client.compare(job_ids)
    assert {"model.pt", "metrics.json", "model.py"} <= set(listed)
    assert listed["model.pt"]["links"]["store"] == f"{STORE_URL}{job_ids[0]}/train-1/model.pt"
    assert "store" not in listed["model.py"]["links"]  # inline: it is in the database
    assert hashlib.sha256(weights).hexdigest() == listed["model.pt"]["sha256"]
    assert [point["step"] for point in history["val_accuracy"]] == [1, 2, 3]
    runs = {run["job_id"]: run for run in compared["runs"]}
    assert runs[job_ids[1]]["params"]["epochs"] == 4
    assert runs[job_ids[0]]["metrics"]["val_accuracy"]["step"] == 3
    assert "val_loss" in compared["metric_names"]


async def test_the_onnx_artifact_gives_the_trained_models_outputs(trainer: str) -> None:
    feed = await train(trainer, DIGITS, epochs=2)
    job_id = feed[0].data["job_id"]
    async with StagecastClient(trainer) as client:
        source = await client.download(job_id, "model.py")
        weights = await client.download(job_id, "model.pt")
        graph = await client.download(job_id, "model.onnx")
    done = [e.data for e in feed if e.type == "StageChanged" and e.data["stage"] == "train"]
    assert json.loads(done[-1]["summary"])["onnx"]["passed"] is True

    def compare() -> float:
        import io
        import types

        import numpy as np
        import onnxruntime
        import torch

        module = types.ModuleType("trained")
        exec(source.decode(), module.__dict__)
        model = module.build_model()
        model.load_state_dict(torch.load(io.BytesIO(weights)))
        model.eval()
        batch = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: batch})
        return float(np.abs(got - expected).max())

    assert await asyncio.to_thread(compare) < 1e-4


def sandboxed_pids(worker: int) -> set[int]:
    """The processes a worker's sandboxed runs are made of."""
    try:
        return {child.pid for child in psutil.Process(worker).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


async def test_a_worker_killed_mid_training_is_retried_as_the_next_attempt(
    training: Launcher,
) -> None:
    async with StagecastClient(training.api_url, timeout=180) as client:
        accepted = await client.submit(DIGITS, stages=["train"], train={"epochs": 12})
        feed: list[FeedEvent] = []
        orphans: set[int] = set()
        async for event in client.events(accepted["job_id"]):
            feed.append(event)
            if event.type == "MetricRecorded" and not orphans:
                worker = training.children["worker"]
                orphans = sandboxed_pids(worker.pid)
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                training.spawn("worker")
        history = await client.metrics(accepted["job_id"])
        view = await client.job(accepted["job_id"])
    assert orphans, "the training run was not found under the worker"
    # The sandbox dies with its worker (bubblewrap's --die-with-parent).
    await asyncio.sleep(1)
    assert [pid for pid in orphans if psutil.pid_exists(pid)] == []
    train_steps = [
        (e.data["attempt"], e.data["status"], (e.data["error"] or {}).get("code"))
        for e in feed
        if e.type == "StageChanged" and e.data["stage"] == "train"
    ]
    assert train_steps == [
        (1, "STARTED", None),
        (1, "FAILED", "ATTEMPT_LOST"),
        (2, "STARTED", None),
        (2, "SUCCEEDED", None),
    ]
    assert feed[-1].type == "JobFinished" and view["status"] == "SUCCEEDED"
    conn = await asyncpg.connect(training.settings.require_database())
    try:
        audited = await audit_job(conn, default_codec(), uuid.UUID(accepted["job_id"]))
    finally:
        await conn.close()
    assert audited is not None and audited.problems == []
    # Attempt 2 ran every epoch, and each attempt's events lie between its STARTED and its end.
    assert [p["step"] for p in history["val_accuracy"] if p["attempt"] == 2] == list(range(1, 13))
    for attempt in (1, 2):
        spans = [
            i
            for i, e in enumerate(feed)
            if e.data.get("attempt") == attempt and e.data.get("stage") == "train"
        ]
        ends = [i for i in spans if feed[i].type == "StageChanged"]
        assert spans[0] == ends[0] and spans[-1] == ends[-1]
        percents = [feed[i].data["percent"] for i in spans if feed[i].type == "ProgressReported"]
        assert percents == sorted(percents)
