"""The training run of a generated module, inside the sandbox.

The work dir holds `model.py`, `x.npy` and `y.npy`; files that must outlive the run go to
$STAGECAST_OUTPUT_DIR: a checkpoint after every epoch (replaced atomically, so a cancel or
a kill leaves the last completed epoch's), then the trained weights and `metrics.json`.
Progress goes to stdout as marked JSON lines: at most every `progress_every_s` during an
epoch and always at its end; each epoch's metrics on their own line; the final metrics last,
or the exception that ended the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PROGRESS = "__stagecast_progress__ "
EPOCH = "__stagecast_epoch__ "
DONE = "__stagecast_done__ "
ERROR = "__stagecast_error__ "


def emit(marker: str, value: dict[str, Any]) -> None:
    print(marker + json.dumps(value), flush=True)


def saver(target: str, model: Any, out: Path) -> Any:
    """A function saving the model's weights under a name, atomically."""

    def save(name: str) -> Path:
        if target == "tensorflow":
            final = out / f"{name}.weights.h5"
            partial = out / f"partial-{name}.weights.h5"
            model.save_weights(partial)
        else:
            import torch

            final = out / f"{name}.pt"
            partial = out / f"partial-{name}.pt"
            torch.save(model.state_dict(), partial)
        partial.replace(final)
        return final

    return save


def exported(target: str, model: Any, sample: Any, out: Path) -> dict[str, Any] | None:
    """model.onnx beside the weights, checked against PyTorch with ONNX Runtime (PyTorch only).

    The TorchScript exporter goes first: it takes a fraction of a second where torch.export
    takes seconds (recurrent layers, tens of them); torch.export is the fallback.
    """
    if target == "tensorflow":
        return None
    spec = importlib.util.spec_from_file_location("onnx_export", "onnx_export.py")
    assert spec is not None and spec.loader is not None
    onnx_export = importlib.util.module_from_spec(spec)
    sys.modules["onnx_export"] = onnx_export  # its dataclasses look their module up there
    spec.loader.exec_module(onnx_export)
    check = onnx_export.export_onnx(
        model, sample, out / "model.onnx", exporters=("torchscript", "dynamo")
    )
    result: dict[str, Any] = check.as_dict()
    return result


def main(arguments: dict[str, Any]) -> None:
    import numpy as np

    if arguments["target"] != "tensorflow":
        import torch

        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
    spec = importlib.util.spec_from_file_location("model", "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = np.load("x.npy"), np.load("y.npy")
    out = Path(os.environ["STAGECAST_OUTPUT_DIR"])
    epochs, batch_size = int(arguments["epochs"]), int(arguments["batch_size"])
    interval = float(arguments["progress_every_s"])
    split = int(np.ceil(len(x) * (1.0 - float(arguments["validation_split"]))))
    steps_per_epoch = max(1, -(-split // batch_size))
    total_steps = epochs * steps_per_epoch
    seed = arguments["seed"]
    if seed is not None:
        # Before the model is built: its initial weights come from the same seed too.
        if arguments["target"] == "tensorflow":
            module.keras.utils.set_random_seed(int(seed))
        else:
            module.torch.manual_seed(int(seed))
    model = module.build_model()
    save = saver(str(arguments["target"]), model, out)
    started = time.monotonic()
    clock = {"last": 0.0, "done": 0}

    def progress(epoch: int, step: int, steps: int, loss: float, force: bool = False) -> None:
        clock["done"] = (epoch - 1) * steps + step
        now = time.monotonic()
        if not force and now - clock["last"] < interval:
            return
        clock["last"] = now
        elapsed = now - started
        done = clock["done"]
        emit(
            PROGRESS,
            {
                "percent": round(100.0 * done / total_steps, 2),
                "epoch": epoch,
                "epochs": epochs,
                "step": step,
                "steps": steps,
                "eta_s": round(elapsed / done * (total_steps - done), 2) if done else None,
                "samples_per_s": round(min(done * batch_size, done * split) / elapsed, 1)
                if elapsed > 0
                else None,
                "loss": loss if loss == loss else None,
            },
        )

    def on_batch(epoch: int, step: int, steps: int, loss: float) -> None:
        progress(epoch, step, steps or steps_per_epoch, float(loss))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        save("checkpoint")
        progress(epoch, steps_per_epoch, steps_per_epoch, metrics.get("loss", 0.0), force=True)
        emit(EPOCH, {"epoch": epoch, "metrics": metrics, "elapsed_s": time.monotonic() - started})

    final = module.train(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=float(arguments["validation_split"]),
        seed=seed,
        shuffle=bool(arguments["shuffle"]),
        on_epoch=on_epoch,
        on_batch=on_batch,
        model=model,
    )
    save("model")
    elapsed = time.monotonic() - started
    onnx = exported(str(arguments["target"]), model, x[: min(len(x), 8)], out)
    summary = {
        "final": final,
        "epochs": epochs,
        "samples": int(split),
        "seconds": round(elapsed, 3),
        "samples_per_s": round(epochs * split / elapsed, 1) if elapsed > 0 else None,
        "onnx": onnx,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    emit(DONE, summary)


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except Exception as error:
        # The stage's error names it; the traceback goes to the feed with the other stderr.
        emit(ERROR, {"type": type(error).__name__, "message": str(error)[:2000]})
        raise
