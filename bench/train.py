"""The train stage's cost: the same training run through the whole stage and as the
generated script run directly, and how many progress events a second the pipeline carries.

Run: .venv/bin/python bench/train.py. Starts an embedded stack (train is a default stage)
and trains digits_cnn on scikit-learn's digits set through it: the stage's duration, from
its STARTED to its SUCCEEDED (data set loaded and checked, the sandbox, the run streaming its
progress, every artifact hashed and recorded). Beside it, in the same run and alternating
with it, the same script with the same files, arguments and thread settings in a fresh
`python` process with no sandbox and no pipeline: what a person running the generated
script by hand waits for. The first stage run on a fresh worker is shown apart (its first
scikit-learn import and cold file cache). Then the run's parts, and the training loop alone
in this process for reference. Last, a stack reporting progress after every step of a run
with a thousand and more steps a second: the events per second that reach the job's feed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from api.client import StagecastClient
from consumers.codegen.logic import generate_code
from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from consumers.train.agent import DETERMINISTIC, script_arguments, script_argv, script_files
from consumers.train.datasets import load
from streams.launcher import Launcher
from streams.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DSL = (EXAMPLES / "digits_cnn.neural").read_text()
LENGTHS = (20, 60)  # epochs of one run
ROUNDS = 5
BATCH, SEED = 32, 7
# The flood: wine_regression (no batch normalization) two samples a step, progress after
# every step (thousands a second).
FLOOD_DSL = (EXAMPLES / "wine_regression.neural").read_text()
FLOOD_TRAIN = {"epochs": 30, "batch_size": 2, "seed": SEED}
PROGRESS_EVERY_S = 0.25
STREAMED = ("ProgressReported", "MetricRecorded", "LogEmitted")


def compiled() -> dict[str, Any]:
    ir = compile_ir(parse_source(DSL).output).output  # type: ignore[union-attr]
    assert ir is not None
    return ir


async def through_the_stage(
    client: StagecastClient, epochs: int, dsl: str = DSL, train: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One run through the pipeline: its StageChanged SUCCEEDED, summary decoded, and how many
    events it streamed."""
    train = train or {"epochs": epochs, "batch_size": BATCH, "seed": SEED}
    accepted = await client.submit(dsl, stages=["train"], train=train)
    streamed, changed = 0, {}
    async for event in client.events(accepted["job_id"]):
        streamed += event.type in STREAMED
        if event.type == "StageChanged" and event.data["stage"] == "train":
            changed = event.data
    if changed.get("status") != "SUCCEEDED":
        raise RuntimeError(f"the training job ended {changed}")
    summary = json.loads(changed["summary"])
    return {"stage_s": changed["duration_ms"] / 1000, "summary": summary, "streamed": streamed}


def directly(epochs: int) -> dict[str, Any]:
    """The stage's script, files and arguments in a fresh process of its own, no sandbox."""
    ir = compiled()
    module = generate_code(ir, target="pytorch").output["module"]  # type: ignore[union-attr]
    chosen = {**ir["train"], "epochs": epochs, "batch_size": BATCH, "seed": SEED}
    data = load(str(chosen["dataset"]), data_dir=Path("."), seed=SEED)
    with tempfile.TemporaryDirectory(prefix="sc-bench-direct-") as work:
        root = Path(work)
        (root / "out").mkdir()
        for name, content in script_files(module, data).items():
            (root / name).write_bytes(content)
        env = {**os.environ, **DETERMINISTIC, "STAGECAST_OUTPUT_DIR": str(root / "out")}
        argv = script_argv(script_arguments(chosen, "pytorch", PROGRESS_EVERY_S))
        started = time.monotonic()
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=True)
        wall_s = time.monotonic() - started
    last = done.stdout.strip().splitlines()[-1]
    return {"wall_s": wall_s, "done": json.loads(last.split(" ", 1)[1])}


def loop_in_this_process(epochs: int) -> float:
    """The training loop alone, in this process, one thread: the floor of it all."""
    import torch

    torch.set_num_threads(1)
    ir = compiled()
    module = types.ModuleType("digits")
    exec(generate_code(ir, target="pytorch").output["module"], module.__dict__)  # type: ignore[union-attr]
    data = load(ir["train"]["dataset"], data_dir=Path("."), seed=SEED)
    torch.manual_seed(SEED)
    model = module.build_model()
    started = time.monotonic()
    module.train(
        data.x,
        data.y,
        epochs=epochs,
        batch_size=BATCH,
        validation_split=ir["train"]["validation_split"],
        seed=SEED,
        model=model,
    )
    return time.monotonic() - started


def stack_settings(state: str, progress_every_s: float) -> Settings:
    return Settings(state_dir=Path(state), api_port=0, train_progress_every_s=progress_every_s)


async def measure(api_url: str) -> tuple[dict[str, Any], dict[int, list[tuple[Any, Any]]]]:
    async with StagecastClient(api_url, timeout=600) as client:
        cold = await through_the_stage(client, LENGTHS[0])
        pairs: dict[int, list[tuple[Any, Any]]] = {n: [] for n in LENGTHS}
        for _ in range(ROUNDS):
            for epochs in LENGTHS:
                staged = await through_the_stage(client, epochs)
                direct = await asyncio.to_thread(directly, epochs)
                pairs[epochs].append((staged, direct))
    return cold, pairs


def report(cold: dict[str, Any], pairs: dict[int, list[tuple[Any, Any]]]) -> None:
    print(f"digits_cnn on sklearn:digits, batch {BATCH}, one thread, median of {ROUNDS} rounds")
    print(f"{'epochs':>6} {'direct process':>15} {'train stage':>12} {'overhead':>9}")
    for epochs, runs in pairs.items():
        direct = statistics.median(d["wall_s"] for _, d in runs)
        stage = statistics.median(s["stage_s"] for s, _ in runs)
        print(f"{epochs:>6} {direct:>14.2f}s {stage:>11.2f}s {stage / direct - 1:>+9.1%}")
    print(f"first run on a fresh worker ({LENGTHS[0]} epochs): {cold['stage_s']:.2f} s")
    print("where the time goes (median, per run):")
    for epochs, runs in pairs.items():
        summaries = [s["summary"] for s, _ in runs]
        stage = statistics.median(s["stage_s"] for s, _ in runs)
        sandbox = statistics.median(x["wall_ms"] / 1000 for x in summaries)
        loop = statistics.median(float(x["seconds"]) for x in summaries)
        onnx = statistics.median(float(x["onnx"]["seconds"]) for x in summaries)
        direct_loop = statistics.median(float(d["done"]["seconds"]) for _, d in runs)
        print(
            f"  {epochs} epochs: training loop {loop:.2f} s in the sandbox, {direct_loop:.2f} s "
            f"directly; ONNX export and check {onnx:.2f} s; the sandboxed process "
            f"{sandbox:.2f} s; the stage around it {stage - sandbox:.2f} s"
        )
    val = pairs[LENGTHS[-1]][-1][0]["summary"]["final"]["val_accuracy"]
    print(f"  final val_accuracy after {LENGTHS[-1]} epochs: {val:.4f}")
    for epochs in LENGTHS:
        print(
            f"the training loop alone in this process, {epochs} epochs: "
            f"{loop_in_this_process(epochs):.2f} s"
        )


def run_stack(progress_every_s: float) -> Any:
    with tempfile.TemporaryDirectory(prefix="sc-bench-train-") as state:
        launcher = Launcher(stack_settings(state, progress_every_s))
        try:
            launcher.start()
            if progress_every_s == PROGRESS_EVERY_S:
                return asyncio.run(measure(launcher.api_url))
            return asyncio.run(busy(launcher.api_url))
        finally:
            launcher.stop()


async def busy(api_url: str) -> dict[str, Any]:
    async with StagecastClient(api_url, timeout=600) as client:
        return await through_the_stage(client, 0, FLOOD_DSL, FLOOD_TRAIN)


def main() -> None:
    cold, pairs = run_stack(PROGRESS_EVERY_S)
    report(cold, pairs)
    flood = run_stack(0.0001)
    training_s = float(flood["summary"]["seconds"])
    steps = flood["summary"]["samples"] * FLOOD_TRAIN["epochs"]
    print(f"wine_regression, batches of 2, progress after every one of its ~{steps // 2} steps:")
    print(
        f"  {flood['streamed']} events streamed in {training_s:.2f} s of training "
        f"({flood['streamed'] / training_s:.0f} events/s), every one on the feed by the "
        f"stage's end ({flood['stage_s']:.2f} s after its start)"
    )


if __name__ == "__main__":
    main()
