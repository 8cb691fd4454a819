"""ONNX export of a PyTorch model, checked against PyTorch with ONNX Runtime.

Self-contained: it imports only the standard library, numpy, torch, onnx and onnxruntime,
so the train stage copies it next to its script in the sandbox and imports it from there.

`export_onnx(model, sample, path)` writes one `.onnx` file (weights inside, so one file is
the artifact; the format caps that at 2 GiB) whose batch dimension is dynamic, checks it with
`onnx.checker` (full check, shape inference included), runs it with ONNX Runtime on the CPU
and compares its outputs with the model's own, in eval mode, on two batches of different
sizes: `sample` and a batch of one of its rows (two when `sample` has one). The graph
computes what `model(x)` computes: logits for the generated classifiers, whose `predict()`
applies the softmax.

Exporters are tried in order until one's file passes the check: PyTorch's torch.export-based
exporter (`dynamo`, the maintained one), then the TorchScript tracer (`torchscript`, which
PyTorch deprecates but which still covers what torch.export cannot trace, such as Python
branches on tensor values; the trace holds the branch the sample took, which its
`warnings` say). Each failed attempt is reported with the error that ended it.

Inputs: integer samples are token ids and go in as int64, floating ones as float32 (the
generated modules' dtypes).
"""

from __future__ import annotations

import io
import logging
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

OPSET = 20  # PyTorch 2.13's default, given to both exporters so their files agree
EXPORTERS = ("dynamo", "torchscript")
RTOL = 1e-4
ATOL = 1e-5
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"
REASON_CHARS = 400
TRACER_WARNING: type[Warning] = torch.jit.TracerWarning  # type: ignore[attr-defined]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True)
class BatchCheck:
    """ONNX Runtime against PyTorch on one batch."""

    size: int
    max_abs_diff: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "max_abs_diff": self.max_abs_diff, "passed": self.passed}


@dataclass(frozen=True, slots=True)
class OnnxCheck:
    """What became of an export: which exporter wrote the file and how it compared.

    `passed` is true when the file passed `onnx.checker`, loaded in ONNX Runtime and
    matched PyTorch within `rtol`/`atol` on every batch; otherwise `problem` says why.
    `exporter` wrote the file compared in `batches`: the one that passed or, when none did,
    the last that wrote a file; None when none wrote one, and for `check_onnx`.
    `attempts` holds one line per failed attempt (exporter, opset, what ended it): those
    before the exporter that passed, or all of them.
    """

    path: Path
    passed: bool
    problem: str | None
    exporter: str | None
    opset: int | None
    batches: tuple[BatchCheck, ...]
    rtol: float
    atol: float
    seconds: float
    attempts: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def max_abs_diff(self) -> float | None:
        """The largest difference over all batches; None when no batch was compared."""
        return max((b.max_abs_diff for b in self.batches), default=None)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, for the train script to print."""
        return {
            "path": str(self.path),
            "passed": self.passed,
            "problem": self.problem,
            "exporter": self.exporter,
            "opset": self.opset,
            "max_abs_diff": self.max_abs_diff,
            "rtol": self.rtol,
            "atol": self.atol,
            "batches": [b.as_dict() for b in self.batches],
            "seconds": self.seconds,
            "attempts": list(self.attempts),
            "warnings": list(self.warnings),
        }


def export_onnx(
    model: torch.nn.Module,
    sample: np.ndarray,
    path: Path,
    *,
    exporters: Sequence[str] = EXPORTERS,
    opset: int = OPSET,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> OnnxCheck:
    """Export `model` to `path` with the first of `exporters` whose file passes the check.

    The model is exported and compared in eval mode; its own mode is restored afterwards.
    When no exporter passes, no file is left at `path`; the result's `problem` names each
    attempt and what it ran into, and its `batches` are those of the last file compared.
    """
    unknown = [name for name in exporters if name not in EXPORTERS]
    if unknown or not exporters:
        raise ValueError(f"exporters must be some of {EXPORTERS}, got {list(exporters)}")
    inputs = as_model_input(sample)
    started = time.perf_counter()
    failed: list[str] = []
    last = OnnxCheck(path, False, None, None, None, (), rtol, atol, 0.0)
    was_training = model.training
    model.eval()
    try:
        for exporter in exporters:
            with _quiet() as caught:
                error = _export(exporter, model, inputs, path, opset)
            if error is not None:
                failed.append(f"{exporter} (opset {opset}): {error}")
                continue
            last = replace(
                _compared(model, inputs, path, rtol, atol),
                exporter=exporter,
                seconds=_since(started),
                attempts=tuple(failed),
                warnings=tuple(caught),
            )
            if last.passed:
                return last
            failed.append(f"{exporter} (opset {opset}): {last.problem}")
    finally:
        model.train(was_training)
    path.unlink(missing_ok=True)
    return replace(
        last,
        problem="no exporter produced a file that passes the check: " + "; ".join(failed),
        seconds=_since(started),
        attempts=tuple(failed),
    )


def check_onnx(
    model: torch.nn.Module,
    sample: np.ndarray,
    path: Path,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> OnnxCheck:
    """Check an existing ONNX file against `model` (in eval mode) as `export_onnx` does."""
    inputs = as_model_input(sample)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        check = _compared(model, inputs, path, rtol, atol)
    finally:
        model.train(was_training)
    return replace(check, seconds=_since(started))


def as_model_input(sample: np.ndarray) -> np.ndarray:
    """The sample as the model and ONNX Runtime take it: int64 token ids or float32."""
    array = np.asarray(sample)
    if array.ndim < 1 or len(array) < 1:
        raise ValueError(f"the sample must be a batch of at least one row, got {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise ValueError(f"the sample must hold numbers (token ids or floats), not {array.dtype}")


def check_batches(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two batches compared: the sample, and one of its rows (two if it has one)."""
    other = inputs[:1] if len(inputs) > 1 else np.concatenate([inputs, inputs])
    return inputs, other


def _export(
    exporter: str, model: torch.nn.Module, inputs: np.ndarray, path: Path, opset: int
) -> str | None:
    """Write the ONNX file; None on success, else why the exporter could not."""
    # torch.export specialises a dimension of size 1 to a constant: trace with two rows.
    traced = inputs if len(inputs) > 1 else np.concatenate([inputs, inputs])
    args = (torch.from_numpy(traced),)
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    try:
        if exporter == "dynamo":
            torch.onnx.export(
                model,
                args,
                path,
                dynamo=True,
                opset_version=opset,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim(BATCH)},),
                verbose=False,
                **names,
            )
        else:
            torch.onnx.export(
                model,
                args,
                path,
                dynamo=False,
                opset_version=opset,
                dynamic_axes={INPUT_NAME: {0: BATCH}, OUTPUT_NAME: {0: BATCH}},
                **names,
            )
    except Exception as error:  # an exporter's failure is a result here, not a crash
        return _reason(error)
    return None


def _compared(
    model: torch.nn.Module, inputs: np.ndarray, path: Path, rtol: float, atol: float
) -> OnnxCheck:
    """onnx.checker, then ONNX Runtime against PyTorch on both check batches."""
    checked: list[BatchCheck] = []

    def result(problem: str | None, opset: int | None) -> OnnxCheck:
        return OnnxCheck(
            path, problem is None, problem, None, opset, tuple(checked), rtol, atol, 0.0
        )

    try:
        onnx.checker.check_model(str(path), full_check=True)
        opset = _default_opset(onnx.load(str(path), load_external_data=False))
    except Exception as error:
        return result(f"onnx.checker rejects {path.name}: {_reason(error)}", None)
    try:
        session = _session(path)
    except Exception as error:
        return result(f"ONNX Runtime cannot load {path.name}: {_reason(error)}", opset)
    for batch in check_batches(inputs):
        with torch.no_grad():
            expected = [t.numpy() for t in _tensors(model(torch.from_numpy(batch)))]
        try:
            got = session.run(None, {session.get_inputs()[0].name: batch})
        except Exception as error:
            return result(f"ONNX Runtime fails on a batch of {len(batch)}: {_reason(error)}", opset)
        if [a.shape for a in got] != [e.shape for e in expected]:
            return result(
                f"on a batch of {len(batch)} ONNX Runtime's outputs have shapes "
                f"{[a.shape for a in got]}, PyTorch's {[e.shape for e in expected]}",
                opset,
            )
        pairs = list(zip(got, expected, strict=True))
        diff = max(float(np.max(np.abs(a - e), initial=0.0)) for a, e in pairs)
        close = all(np.allclose(a, e, rtol=rtol, atol=atol) for a, e in pairs)
        checked.append(BatchCheck(len(batch), diff, close))
    mismatched = [b for b in checked if not b.passed]
    if not mismatched:
        return result(None, opset)
    where = ", ".join(f"max |diff| {b.max_abs_diff:.3g} on a batch of {b.size}" for b in mismatched)
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    return result(
        f"ONNX Runtime's outputs differ from PyTorch's beyond {tolerance}: {where}", opset
    )


def _session(path: Path) -> onnxruntime.InferenceSession:
    # One thread each: a check needs no more, and threads count against the sandbox's limit.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list | tuple) and all(isinstance(t, torch.Tensor) for t in output):
        return list(output)
    raise TypeError(f"the model returns {type(output).__name__}, not tensors")


def _default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _reason(error: BaseException) -> str:
    """The innermost cause in one line: its type and message, cut at REASON_CHARS."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = " ".join(_ANSI.sub("", str(error)).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


@contextmanager
def _quiet() -> Iterator[list[str]]:
    """Keep the exporters' output off stdout and stderr, which the sandbox streams to the
    job's feed: their logging, their warnings, and the graphs they print when they fail
    (the error itself is in the result). Only the TorchScript exporter's C++ log of a graph
    it failed on still reaches stdout. What the TorchScript tracer warns about (a trace that
    may not hold for other inputs) is kept, one line per warning, in the list yielded."""
    caught: list[str] = []
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    discarded = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as recorded,
            redirect_stdout(discarded),
            redirect_stderr(discarded),
        ):
            warnings.simplefilter("always")
            yield caught
        for warning in recorded:
            if issubclass(warning.category, TRACER_WARNING):
                line = str(warning.message).strip().splitlines()[0]
                if line not in caught:
                    caught.append(line)
    finally:
        logger.setLevel(level)
