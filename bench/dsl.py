"""Parse, compile and codegen time per example model and for generated networks of growing depth.

Run: .venv/bin/python bench/dsl.py. Prints the best of several runs per stage, and the time per
layer of parse + compile, which should stay flat as networks grow (linear total time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumers.codegen.logic import generate_code
from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from streams.stage import StageFailure, StageResult

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEPTHS = (10, 100, 2_000)


def dense_stack(depth: int) -> str:
    """`depth` layers: Dense layers, one per line, and the Output."""
    lines = "\n".join(
        ['    Dense(32, activation="relu")'] * (depth - 1) + ['    Output(10, "softmax")']
    )
    return f"network DenseStack {{\n  input: (64,)\n  layers:\n{lines}\n}}\n"


def sequence_mix(depth: int) -> str:
    """`depth` layers cycling through convolution, normalisation, activation and dropout."""
    cycle = [
        '    Conv1D(filters=16, kernel_size=3, padding="same", activation="relu")',
        "    LayerNormalization()",
        "    BatchNormalization()",
        '    Activation("gelu")',
        "    Dropout(rate=0.1)",
    ]
    body = [cycle[i % len(cycle)] for i in range(depth - 2)]
    lines = "\n".join([*body, "    GlobalAveragePooling1D()", '    Output(5, "softmax")'])
    return f"network SequenceMix {{\n  input: (32, 16)\n  layers:\n{lines}\n}}\n"


def best_of(runs: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `runs` calls in seconds, and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def succeeded(outcome: StageResult | StageFailure, stage: str, name: str) -> StageResult:
    if isinstance(outcome, StageFailure):
        raise SystemExit(f"{name}: {stage} failed: {outcome.message}")
    return outcome


def measure(name: str, source: str, runs: int) -> tuple[str, int, float, float, float]:
    """Seconds spent in parse, compile and codegen (PyTorch) for one model."""
    parse_time, parsed = best_of(runs, lambda: parse_source(source))
    ir = succeeded(parsed, "parse", name).output
    compile_time, compiled = best_of(runs, lambda: compile_ir(ir))
    checked = succeeded(compiled, "compile", name).output
    codegen_time, generated = best_of(runs, lambda: generate_code(checked))
    succeeded(generated, "codegen", name)
    return name, len(ir["layers"]), parse_time, compile_time, codegen_time


def main() -> None:
    rows = [measure(path.stem, path.read_text(), 20) for path in sorted(EXAMPLES.glob("*.neural"))]
    for depth in DEPTHS:
        runs = 20 if depth < 1_000 else 5
        rows.append(measure(f"dense stack x{depth}", dense_stack(depth), runs))
        rows.append(measure(f"sequence mix x{depth}", sequence_mix(depth), runs))
    header = (
        f"{'model':<22}{'layers':>7}{'parse ms':>11}{'compile ms':>12}{'codegen ms':>12}"
        f"{'p+c ms':>10}{'p+c µs/layer':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, layers, parse_time, compile_time, codegen_time in rows:
        both = parse_time + compile_time
        print(
            f"{name:<22}{layers:>7}{parse_time * 1e3:>11.2f}{compile_time * 1e3:>12.2f}"
            f"{codegen_time * 1e3:>12.2f}{both * 1e3:>10.2f}{both * 1e6 / layers:>14.1f}"
        )
    print("\nbest of 20 runs (5 for 2,000 layers), one process, one core; codegen targets PyTorch")


if __name__ == "__main__":
    main()
