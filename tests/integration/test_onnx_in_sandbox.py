"""The ONNX export where the train stage will run it: in the sandbox, as a MODEL job is run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from consumers.codegen.logic import generate_code
from consumers.execute import Sandbox
from consumers.execute.agent import limit_settings
from consumers.train import onnx_export
from streams.settings import Settings
from streams.stage import StageResult
from tests.unit.codegen.networks import compiled_example, example_sources

pytestmark = pytest.mark.integration

MARKER = "__onnx_check__ "
EXPORT_SOURCE = Path(onnx_export.__file__).read_bytes()
# As a train script would: `python -I` puts no directory on sys.path, so load by path.
MAIN = f"""
import importlib.util, json, sys
from pathlib import Path
import numpy as np


def load(name):
    spec = importlib.util.spec_from_file_location(name, name + ".py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


model, onnx_export = load("model"), load("onnx_export")
ids = np.random.default_rng(0).integers(0, int(sys.argv[1]), size=(8, *model.INPUT_SHAPE))
check = onnx_export.export_onnx(model.build_model(), ids, Path("model.onnx"))
print({MARKER!r} + json.dumps(check.as_dict()), flush=True)
"""


async def test_an_embedding_model_exports_in_the_sandbox_under_a_model_jobs_limits() -> None:
    generated = generate_code(compiled_example(example_sources()["text_transformer"], "pytorch"))
    assert isinstance(generated, StageResult)
    lines: list[tuple[str, str]] = []

    async def output(stream: str, line: bytes) -> None:
        lines.append((stream, line.decode()))

    result = await Sandbox.detect(require=True).run(
        [sys.executable, "-I", "main.py", str(generated.output["token_ids_below"])],
        files={
            "main.py": MAIN.encode(),
            "model.py": generated.output["module"].encode(),
            "onnx_export.py": EXPORT_SOURCE,
        },
        limits=limit_settings(Settings(_env_file=None), "MODEL").default,  # type: ignore[call-arg]
        on_output=output,
        binds=[Path(sys.prefix)],
    )

    assert result.exit_code == 0, lines
    # Nothing but the result: the exporters' logging and warnings stay off the job's feed.
    ((stream, line),) = lines
    assert stream == "stdout" and line.startswith(MARKER)
    check = json.loads(line.removeprefix(MARKER))
    assert check["passed"], check["problem"]
    assert check["exporter"] == "dynamo"
    assert [b["size"] for b in check["batches"]] == [8, 1]
