"""The train stage's cost: one training run through the whole stage against the same run in
one process, and how many progress events a second the pipeline carries.

Run: .venv/bin/python bench/train.py. Starts an embedded stack with the train stage enabled,
trains digits_cnn on the digits set through it (the stage's duration, and the training time
the sandboxed script measured itself), then the same module, data, seed and thread count in
this process. Then the same run with progress reported after every batch: the events per
second that reach the job's feed.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from api.client import StagecastClient
from consumers.codegen.logic import generate_code
from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from consumers.train.datasets import load
from streams.launcher import Launcher
from streams.settings import Settings

DSL = (Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.neural").read_text()
TRAIN = {"epochs": 20, "batch_size": 32, "seed": 7}
STREAMED = ("ProgressReported", "MetricRecorded", "LogEmitted")


async def through_the_stage(api_url: str) -> tuple[float, dict[str, Any], int]:
    """(the train stage's duration in s, its summary, events streamed on the feed)."""
    async with StagecastClient(api_url, timeout=300) as client:
        accepted = await client.submit(DSL, stages=["train"], train=TRAIN)
        streamed, changed = 0, {}
        async for event in client.events(accepted["job_id"]):
            streamed += event.type in STREAMED
            if event.type == "StageChanged" and event.data["stage"] == "train":
                changed = event.data
    if changed.get("status") != "SUCCEEDED":
        raise RuntimeError(f"the training job ended {changed}")
    return float(changed["duration_ms"]) / 1000, json.loads(changed["summary"]), streamed


def in_one_process() -> float:
    """The same training as the stage's script does it, timed the same way."""
    import torch

    torch.set_num_threads(1)
    compiled = compile_ir(parse_source(DSL).output).output  # type: ignore[union-attr]
    module = types.ModuleType("digits")
    exec(generate_code(compiled, target="pytorch").output["module"], module.__dict__)  # type: ignore[union-attr]
    data = load(compiled["train"]["dataset"], data_dir=Path("."), seed=TRAIN["seed"])
    torch.manual_seed(TRAIN["seed"])
    model = module.build_model()
    started = time.monotonic()
    module.train(
        data.x,
        data.y,
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batch_size"],
        validation_split=compiled["train"]["validation_split"],
        seed=TRAIN["seed"],
        model=model,
    )
    return time.monotonic() - started


def run_stack(progress_every_s: float) -> tuple[float, dict[str, Any], int]:
    with tempfile.TemporaryDirectory(prefix="sc-bench-train-") as state:
        settings = Settings(
            state_dir=Path(state),
            api_port=0,
            enabled_stages=("parse", "compile", "codegen", "execute", "train"),
            train_progress_every_s=progress_every_s,
        )
        launcher = Launcher(settings)
        try:
            launcher.start()
            return asyncio.run(through_the_stage(launcher.api_url))
        finally:
            launcher.stop()


def main() -> None:
    stage_s, summary, streamed = run_stack(0.25)
    direct_s = in_one_process()
    script_s = float(summary["seconds"])
    print(f"digits_cnn, {TRAIN['epochs']} epochs of batch {TRAIN['batch_size']}, one thread:")
    print(f"  in one process                 {direct_s:7.2f} s")
    print(f"  in the sandbox (script's own)  {script_s:7.2f} s   {script_s / direct_s - 1:+.1%}")
    print(f"  the whole train stage          {stage_s:7.2f} s   {stage_s / direct_s - 1:+.1%}")
    print(
        f"  final val_accuracy {summary['final']['val_accuracy']:.4f}, {streamed} streamed events"
    )
    busy_s, busy, events = run_stack(0.0001)
    print("progress after every batch:")
    training_s = float(busy["seconds"])
    print(
        f"  {events} events produced in {training_s:.2f} s of training "
        f"({events / training_s:.0f} events/s), all on the feed by the stage's end "
        f"({busy_s:.2f} s)"
    )


if __name__ == "__main__":
    main()
