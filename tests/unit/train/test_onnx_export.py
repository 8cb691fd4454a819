"""ONNX export checked with ONNX Runtime: every example, corrupted files, exporter fallback."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from consumers.train.onnx_export import ATOL, RTOL, OnnxCheck, check_onnx, export_onnx
from tests.unit.codegen.networks import compiled_example, example_sources
from tests.unit.codegen.running import loaded, sample_inputs

EXAMPLES = example_sources()
# The slowest example (two LSTMs) exports in about 15 s alone, 35 s on two busy cores; a
# MODEL job's sandbox allows 180 s for the whole run.
EXPORT_SECONDS = 120.0


def example_model(name: str) -> tuple[nn.Module, dict[str, object], np.ndarray]:
    compiled = compiled_example(EXAMPLES[name], "pytorch")
    torch.manual_seed(0)
    model: nn.Module = loaded(compiled).build_model()
    return model, compiled, sample_inputs(compiled, 8)


def ort_outputs(path: Path, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(None, {"input": batch})[0]
    return output


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_exports_and_matches_pytorch_on_two_batch_sizes(
    name: str, tmp_path: Path
) -> None:
    model, compiled, sample = example_model(name)
    model.train()
    path = tmp_path / f"{name}.onnx"

    check = export_onnx(model, sample, path)

    assert check.passed, check.problem
    assert (check.exporter, check.attempts, check.opset) == ("dynamo", (), 20)
    assert [b.size for b in check.batches] == [8, 1]
    assert all(b.passed and b.max_abs_diff <= ATOL for b in check.batches)
    assert check.max_abs_diff == max(b.max_abs_diff for b in check.batches)
    assert check.seconds < EXPORT_SECONDS
    assert model.training, "the model's own mode is restored"
    # The file itself, read afresh: one dynamic batch dimension, the sample's dtype.
    graph = onnx.load(str(path)).graph
    (given,) = graph.input
    dims = given.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == compiled["input_shape"]
    int_input = compiled["layers"][0]["type"] == "Embedding"  # type: ignore[index]
    assert given.type.tensor_type.elem_type == (
        onnx.TensorProto.INT64 if int_input else onnx.TensorProto.FLOAT
    )
    # And a third batch size, compared here rather than by the module under test.
    fresh = sample_inputs(compiled, 5, seed=3)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(fresh)).numpy()
    np.testing.assert_allclose(ort_outputs(path, fresh), expected, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, np.ndarray, bytes]:
    """The tiny example, its sample and the bytes of its checked ONNX file."""
    model, _, sample = example_model("tiny")
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    assert export_onnx(model, sample, path).passed
    return model, sample, path.read_bytes()


def test_an_intact_file_passes_check_onnx(
    tiny: tuple[nn.Module, np.ndarray, bytes], tmp_path: Path
) -> None:
    model, sample, data = tiny
    path = tmp_path / "intact.onnx"
    path.write_bytes(data)
    check = check_onnx(model, sample, path)
    assert check.passed, check.problem
    assert check.exporter is None  # check_onnx did not write it


@pytest.mark.parametrize(
    "corrupt",
    [lambda data: data[: len(data) // 2], lambda data: b"not an onnx model" + data[17:]],
    ids=["truncated", "overwritten-header"],
)
def test_a_file_that_is_not_onnx_any_more_fails_the_check(
    tiny: tuple[nn.Module, np.ndarray, bytes], tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    model, sample, data = tiny
    path = tmp_path / "corrupted.onnx"
    path.write_bytes(corrupt(data))

    check = check_onnx(model, sample, path)

    assert not check.passed
    assert check.problem is not None
    assert check.problem.startswith("onnx.checker rejects corrupted.onnx: ValidationError")
    assert check.batches == ()
    assert check.max_abs_diff is None


def test_a_file_with_altered_weights_fails_on_its_outputs(
    tiny: tuple[nn.Module, np.ndarray, bytes], tmp_path: Path
) -> None:
    """Still valid ONNX, so only the comparison with PyTorch can tell."""
    model, sample, data = tiny
    proto = onnx.load_from_string(data)
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    path = tmp_path / "altered.onnx"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)

    check = check_onnx(model, sample, path)

    assert not check.passed
    assert check.problem is not None
    assert "outputs differ from PyTorch's beyond rtol=0.0001, atol=1e-05" in check.problem
    assert check.max_abs_diff is not None and check.max_abs_diff > ATOL


class DataDependentBranch(nn.Module):
    """A Python branch on tensor values: torch.export cannot trace it, TorchScript can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x > -1e9).all()):
            return x * 2
        return x


class BatchSizeAsConstant(nn.Module):
    """The batch size as a Python int: no exporter keeps it dynamic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * int(x.shape[0])


class BesselJ0(nn.Module):
    """An operator neither exporter has a translation for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = torch.special.bessel_j0(x)
        return result


def floats(rows: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, 3)).astype(np.float32)


def test_what_torch_export_cannot_trace_falls_back_to_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "branch.onnx"
    check = export_onnx(DataDependentBranch(), floats(4), path)
    assert check.passed, check.problem
    assert check.exporter == "torchscript"
    (attempt,) = check.attempts
    assert attempt.startswith("dynamo (opset 20): GuardOnDataDependentSymNode: ")
    assert any("might not generalize to other inputs" in w for w in check.warnings)
    assert path.exists()


def test_a_batch_size_baked_into_the_graph_fails_on_the_second_batch(tmp_path: Path) -> None:
    path = tmp_path / "baked.onnx"
    check = export_onnx(BatchSizeAsConstant(), np.ones((4, 3), np.float32), path)
    assert not check.passed
    dynamo, torchscript = check.attempts
    assert dynamo.startswith("dynamo (opset 20): ONNX Runtime fails on a batch of 1: ")
    assert "Got: 1 Expected: 4" in dynamo
    assert torchscript == (
        "torchscript (opset 20): ONNX Runtime's outputs differ from PyTorch's beyond "
        "rtol=0.0001, atol=1e-05: max |diff| 3 on a batch of 1"
    )
    assert check.problem == "no exporter produced a file that passes the check: " + "; ".join(
        check.attempts
    )
    # The last file compared is what the result describes; no file is left behind.
    assert check.exporter == "torchscript"
    assert [(b.size, b.passed) for b in check.batches] == [(4, True), (1, False)]
    assert not path.exists()


def test_an_unsupported_operator_is_named_for_each_exporter(tmp_path: Path) -> None:
    path = tmp_path / "bessel.onnx"
    check = export_onnx(BesselJ0(), floats(4), path)
    assert not check.passed
    assert (check.exporter, check.batches, check.max_abs_diff) == (None, (), None)
    dynamo, torchscript = check.attempts
    assert dynamo.startswith("dynamo (opset 20): DispatchError: No ONNX function found for ")
    assert "bessel_j0" in dynamo
    assert torchscript == (
        "torchscript (opset 20): UnsupportedOperatorError: Exporting the operator "
        "'aten::special_bessel_j0' to ONNX opset version 20 is not supported"
    )
    assert not path.exists()


def test_a_sample_of_one_row_is_checked_on_two(tmp_path: Path) -> None:
    model, _, sample = example_model("iris_mlp")
    check = export_onnx(model, sample[:1], tmp_path / "one.onnx")
    assert check.passed, check.problem
    assert [b.size for b in check.batches] == [1, 2]


def test_exporters_say_nothing_on_stdout_or_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The sandbox streams both to the job's feed; a failed torch.export prints its graph."""
    check = export_onnx(DataDependentBranch(), floats(4), tmp_path / "quiet.onnx")
    assert check.attempts
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("sample", "exporters", "message"),
    [
        (np.array(["a", "b"]), ("dynamo",), "the sample must hold numbers"),
        (np.zeros((0, 3), np.float32), ("dynamo",), "a batch of at least one row"),
        (floats(2), ("onnxscript",), "exporters must be some of ('dynamo', 'torchscript')"),
        (floats(2), (), "exporters must be some of"),
    ],
    ids=["strings", "empty", "unknown-exporter", "no-exporter"],
)
def test_bad_arguments_are_refused(
    sample: np.ndarray, exporters: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        export_onnx(BatchSizeAsConstant(), sample, tmp_path / "x.onnx", exporters=exporters)


def test_the_result_is_plain_json_values(tmp_path: Path) -> None:
    check = export_onnx(DataDependentBranch(), floats(3), tmp_path / "plain.onnx")
    report = check.as_dict()
    assert report["passed"] is True
    assert report["exporter"] == "torchscript"
    assert report["max_abs_diff"] == 0.0
    assert report["batches"] == [
        {"size": 3, "max_abs_diff": 0.0, "passed": True},
        {"size": 1, "max_abs_diff": 0.0, "passed": True},
    ]
    assert isinstance(report["attempts"], list) and isinstance(report["warnings"], list)
    assert set(report) == {f for f in OnnxCheck.__dataclass_fields__} | {"max_abs_diff"}
