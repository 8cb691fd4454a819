"""Train stage agent: the generated module trained for real, in the execute stage's sandbox.

The data set is loaded here (scikit-learn's bundled sets, seeded synthetic ones, `file:`
arrays) and checked against the model's input before anything runs; the training itself
runs in the sandbox (`train_script.py`), writing checkpoints and the trained weights into
the artifact store through the sandbox's one writable directory. Its progress lines become
ProgressReported (percent, epoch, step, ETA, samples/s, loss) and each epoch's metrics
MetricRecorded, sent in batches; the artifacts go out as file:// uris with size and sha256.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from consumers.execute.agent import FLUSH_S, EventPump, beating, limit_settings, unconfined
from consumers.execute.limits import RunLimits
from consumers.execute.programs import requested_limits, run_failure
from consumers.execute.sandbox import Sandbox
from consumers.train.datasets import Dataset, DatasetError, fits, load
from consumers.train.train_script import DONE, EPOCH, ERROR, PROGRESS
from streams.runner import StageCommand, StageReporter
from streams.settings import Settings
from streams.stage import Outcome, Problem, StageCancelled, StageFailure, StageResult

SCRIPT = Path(__file__).with_name("train_script.py")
ONNX_EXPORT = Path(__file__).with_name("onnx_export.py")
# One thread and deterministic kernels: the same seed gives the same metrics, and two runs
# side by side do not fight over the cores.
DETERMINISTIC = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_DETERMINISTIC_OPS": "1",
    "PYTHONHASHSEED": "0",
}
OVERRIDABLE = ("epochs", "batch_size", "validation_split", "seed", "shuffle", "dataset")
MEDIA_TYPES = {
    ".pt": "application/x-pytorch",
    ".h5": "application/x-hdf5",
    ".json": "application/json",
    ".onnx": "application/onnx",
}


def settings_of(command: StageCommand) -> dict[str, Any]:
    """The model's train { } block under what the request overrides."""
    chosen = dict(command.input.get("train") or {})
    asked = command.spec.get("train") or {}
    chosen.update({key: asked[key] for key in OVERRIDABLE if asked.get(key) is not None})
    chosen.setdefault("epochs", 1)
    chosen.setdefault("batch_size", 32)
    chosen.setdefault("validation_split", 0.0)
    chosen.setdefault("shuffle", True)
    return chosen


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class TrainPump(EventPump):
    """The run's marked lines to the feed as events, in batches; other lines as logs."""

    def __init__(self, reporter: StageReporter) -> None:
        super().__init__(reporter)
        self.done: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.epochs_done = 0

    async def line(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        reporter = self.reporter
        if stream == "stdout" and text.startswith(PROGRESS):
            given = json.loads(text[len(PROGRESS) :])
            percent = float(given.pop("percent"))  # the reporter keeps it from going back
            message = (
                f"epoch {given['epoch']}/{given['epochs']}, step {given['step']}/{given['steps']}"
            )
            self.pending.append(reporter.progress_event(percent, message, **given))
        elif stream == "stdout" and text.startswith(EPOCH):
            given = json.loads(text[len(EPOCH) :])
            self.epochs_done = int(given["epoch"])
            for name, value in given["metrics"].items():
                split = "validation" if name.startswith("val_") else "train"
                self.pending.append(
                    reporter.metric_event(name, float(value), self.epochs_done, {"split": split})
                )
        elif stream == "stdout" and text.startswith(DONE):
            self.done = json.loads(text[len(DONE) :])
        elif stream == "stdout" and text.startswith(ERROR):
            self.error = json.loads(text[len(ERROR) :])
        else:
            self.pending.append(reporter.log_event(text, stream=stream))


class TrainStage:
    """The stage logic; it shares the sandbox's rules with the execute stage."""

    def __init__(
        self, settings: Settings, sandbox: Sandbox, slots: asyncio.Semaphore | None = None
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self._slots = slots or asyncio.Semaphore(settings.execute_concurrency)

    async def __call__(self, command: StageCommand, reporter: StageReporter) -> Outcome:
        refused = unconfined(self.sandbox, self.settings)
        if refused is not None:
            return refused
        given = command.input
        module, shape = given.get("module"), given.get("input_shape")
        if not isinstance(module, str) or not isinstance(shape, list):
            return StageFailure(
                (Problem("INPUT_INVALID", "the train stage needs codegen's module and shapes"),)
            )
        chosen = settings_of(command)
        source = chosen.get("dataset")
        if not source:
            return StageFailure(
                (
                    Problem(
                        "DATASET_MISSING",
                        "the model's train { } block names no dataset and the request none",
                        hint='add dataset: "sklearn:digits" (or another source) to train { }',
                    ),
                )
            )
        try:
            data = await asyncio.to_thread(
                load,
                str(source),
                data_dir=self.settings.data_dir,
                seed=int(chosen.get("seed") or 0),
            )
        except DatasetError as error:
            return StageFailure((Problem(error.code, str(error)),))
        misfit = fits(data, tuple(int(n) for n in shape))
        if misfit is not None:
            return StageFailure((Problem("DATASET_SHAPE_MISMATCH", misfit),))
        limits = requested_limits(command.spec, limit_settings(self.settings, "TRAIN"))
        interval = self.settings.execute_heartbeat_s
        pump = TrainPump(reporter)
        async with beating(reporter, None, interval, pump), self._slots:
            return await self._train(command, pump, chosen, module, data, limits)

    async def _train(
        self,
        command: StageCommand,
        pump: TrainPump,
        chosen: dict[str, Any],
        module: str,
        data: Dataset,
        limits: RunLimits,
    ) -> Outcome:
        target = str(given_target(command))
        out = self.settings.artifact_root() / command.job_id / f"{command.stage}-{command.attempt}"
        await asyncio.to_thread(_fresh, out)
        arguments = script_arguments(chosen, target, self.settings.train_progress_every_s)
        files = await asyncio.to_thread(script_files, module, data)
        reporter = pump.reporter
        ended = asyncio.Event()
        # Sent as often as progress may be reported: an epoch's metrics and its progress
        # travel together, and the pipeline handles a few batches a second, not dozens.
        every = max(FLUSH_S, self.settings.train_progress_every_s)
        flushing = asyncio.create_task(pump.every(every, ended))
        try:
            result = await self.sandbox.run(
                script_argv(arguments),
                files=files,
                limits=limits,
                on_output=pump.line,
                cancel=reporter.cancel,
                binds=[Path(sys.prefix)],
                output_dir=out,
                env=DETERMINISTIC,
            )
        finally:
            ended.set()
            await flushing
        await pump.flush()
        # The generated code, then the files the run left, in one send.
        code = reporter.artifact_event("model.py", "text/x-python", module.encode())
        summary: dict[str, Any] = {
            "dataset": chosen.get("dataset"),
            "epochs": chosen.get("epochs"),
            "batch_size": chosen.get("batch_size"),
            "validation_split": chosen.get("validation_split"),
            "seed": chosen.get("seed"),
            "target": target,
            "epochs_done": pump.epochs_done,
            "wall_ms": round(result.wall_s * 1000, 1),
            "peak_rss_kib": result.peak_rss_kib,
        }
        if result.violation == "CANCELLED" or pump.done is None:
            # The last completed epoch's weights are kept, whatever stopped the run.
            kept = sorted(out.glob("checkpoint.*"))[:1]
            stored = await reporter.stored_artifact_events([(p.name, _media(p), p) for p in kept])
            await reporter.send_all([code, *stored])
            if result.violation == "CANCELLED":
                return StageCancelled(summary=summary)
            if result.violation is None and pump.error is not None:
                # The training raised: its exception is the error (a limit's kill is not).
                said = f"{pump.error.get('type')}: {pump.error.get('message')}"
                return StageFailure((Problem("TRAINING_FAILED", f"training failed: {said}"),))
            failed = run_failure(limits, result)
            return failed or StageFailure(
                (Problem("TRAINING_FAILED", "the training run ended without its final metrics"),)
            )
        left = [p for p in sorted(out.iterdir()) if p.name.startswith(("model.", "metrics."))]
        stored = await reporter.stored_artifact_events([(p.name, _media(p), p) for p in left])
        await reporter.send_all([code, *stored])
        onnx = pump.done.get("onnx")
        summary.update(
            onnx=None
            if onnx is None
            else {
                key: onnx.get(key)
                for key in ("passed", "problem", "exporter", "max_abs_diff", "seconds")
            },
            final=pump.done["final"],
            samples=pump.done["samples"],
            samples_per_s=pump.done["samples_per_s"],
            seconds=pump.done["seconds"],
        )
        return StageResult({"metrics": pump.done["final"], **summary}, summary)


def script_arguments(
    chosen: dict[str, Any], target: str, progress_every_s: float
) -> dict[str, Any]:
    """The training script's one argument (as JSON): the run's settings."""
    return {
        **{key: chosen.get(key) for key in ("epochs", "batch_size", "validation_split")},
        "seed": chosen.get("seed"),
        "shuffle": bool(chosen.get("shuffle", True)),
        "target": target,
        "progress_every_s": progress_every_s,
    }


def script_files(module: str, data: Dataset) -> dict[str, bytes]:
    """The run's work dir: the generated module, the scripts, the data as .npy arrays."""
    return {
        "model.py": module.encode(),
        "train_script.py": SCRIPT.read_bytes(),
        "onnx_export.py": ONNX_EXPORT.read_bytes(),
        "x.npy": _npy(data.x),
        "y.npy": _npy(data.y),
    }


def script_argv(arguments: dict[str, Any]) -> tuple[str, ...]:
    return (sys.executable, "-I", "train_script.py", json.dumps(arguments))


def given_target(command: StageCommand) -> str:
    return str(command.input.get("target") or command.spec.get("target") or "pytorch")


def _media(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix, "application/octet-stream")


def _fresh(directory: Path) -> None:
    """An empty directory (a retried attempt starts over) the sandbox may write into."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
