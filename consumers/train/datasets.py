"""The data sets a `train { dataset: ... }` names (DSL.md), loaded as arrays in the worker.

`sklearn:digits|iris|wine|breast_cancer` are scikit-learn's bundled sets (no download);
`synthetic:classification|regression|sequence?...` are generated from the seed, with a real
signal to learn; `file:<path>` reads `.npz` (arrays `x`, `y`) or `.csv` (last column is the
label) under the configured data directory. Samples are shuffled once with the seed, so the
held-out tail (validation_split, as Keras takes it) has every class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

MAX_SYNTHETIC_SAMPLES = 200_000


class DatasetError(ValueError):
    """A data set that cannot be loaded, with the stage's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    source: str

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.x.shape[1:])


def load(source: str, *, data_dir: Path, seed: int = 0) -> Dataset:
    scheme, _, rest = source.partition(":")
    if scheme == "sklearn":
        x, y = _sklearn(rest)
    elif scheme == "synthetic":
        kind, _, query = rest.partition("?")
        x, y = _synthetic(kind, _options(query), seed)
    elif scheme == "file":
        x, y = _file(rest, data_dir)
    else:
        raise DatasetError("DATASET_UNAVAILABLE", f"unknown data source {source!r}")
    if len(x) != len(y) or len(x) < 2:
        raise DatasetError(
            "DATASET_INVALID", f"{source}: {len(x)} samples but {len(y)} labels (need 2 or more)"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    return Dataset(x[order], y[order], source)


def fits(dataset: Dataset, input_shape: tuple[int, ...]) -> str | None:
    """Why the data set cannot feed a model taking `input_shape`; None when it can."""
    if dataset.sample_shape == tuple(input_shape):
        return None
    return (
        f"the data set's samples are {list(dataset.sample_shape)}, "
        f"the model takes {list(input_shape)}"
    )


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "digits":
        digits = datasets.load_digits()
        return (digits.images / 16.0).astype(np.float32)[..., None], digits.target.astype(np.int64)
    loaders = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }
    if name not in loaders:
        raise DatasetError("DATASET_UNAVAILABLE", f"unknown scikit-learn data set {name!r}")
    bunch = loaders[name]()
    features = np.asarray(bunch.data, dtype=np.float32)
    # Standardised: these tables mix units several orders of magnitude apart.
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-8)
    return features, np.asarray(bunch.target, dtype=np.int64)


def _options(query: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(query).items()}


def _number(options: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        raise DatasetError("DATASET_INVALID", f"{name}={options[name]!r} is not a number") from None
    if not (low <= value <= high) or not math.isfinite(value):
        raise DatasetError("DATASET_INVALID", f"{name} must be between {low:g} and {high:g}")
    return value


def _shape(options: dict[str, str]) -> tuple[int, ...]:
    if "shape" in options:
        try:
            shape = tuple(int(part) for part in options["shape"].split("x"))
        except ValueError:
            raise DatasetError("DATASET_INVALID", "shape is like 128x3") from None
    else:
        shape = (int(_number(options, "features", 8, 1, 100_000)),)
    if not shape or any(n < 1 for n in shape) or math.prod(shape) > 1_000_000:
        raise DatasetError("DATASET_INVALID", f"shape {list(shape)} is not a sample shape")
    return shape


def _synthetic(kind: str, options: dict[str, str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = int(_number(options, "samples", 256, 2, MAX_SYNTHETIC_SAMPLES))
    if kind == "classification":
        shape = _shape(options)
        classes = int(_number(options, "classes", 2, 2, 1000))
        # Classes are clusters around their own centres: learnable by any model.
        centres = rng.normal(0.0, 1.0, size=(classes, *shape)).astype(np.float32)
        y = rng.integers(0, classes, size=samples)
        x = centres[y] + rng.normal(0.0, 1.0, size=(samples, *shape)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)
    if kind == "regression":
        shape = _shape(options)
        noise = _number(options, "noise", 0.1, 0.0, 100.0)
        x = rng.normal(0.0, 1.0, size=(samples, *shape)).astype(np.float32)
        weights = rng.normal(0.0, 1.0, size=math.prod(shape)).astype(np.float32)
        values = x.reshape(samples, -1) @ weights / math.sqrt(math.prod(shape))
        values = values + rng.normal(0.0, noise, size=samples)
        return x, np.asarray(values, dtype=np.float32)[:, None]
    if kind == "sequence":
        vocab = int(_number(options, "vocab", 1000, 2, 10_000_000))
        length = int(_number(options, "length", 32, 1, 100_000))
        classes = int(_number(options, "classes", 2, 2, 1000))
        # The class is which band of the vocabulary a sequence draws most of its tokens from.
        y = rng.integers(0, classes, size=samples)
        band = vocab // classes
        low = y[:, None] * band
        tokens = low + rng.integers(0, max(1, band), size=(samples, length))
        noisy = rng.random((samples, length)) < 0.3
        tokens = np.where(noisy, rng.integers(0, vocab, size=(samples, length)), tokens)
        return tokens.astype(np.int64), y.astype(np.int64)
    raise DatasetError("DATASET_UNAVAILABLE", f"unknown synthetic data set {kind!r}")


def _file(path: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise DatasetError("DATASET_UNAVAILABLE", f"{path} is outside the data directory")
    if not target.is_file():
        raise DatasetError("DATASET_UNAVAILABLE", f"no file {path} in the data directory")
    try:
        if target.suffix == ".npz":
            with np.load(target, allow_pickle=False) as arrays:
                return np.asarray(arrays["x"]), np.asarray(arrays["y"])
        table = np.loadtxt(target, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError("DATASET_INVALID", f"{path}: {error}") from None
    labels = table[:, -1]
    whole = np.all(labels == np.round(labels))
    return table[:, :-1], labels.astype(np.int64) if whole else labels[:, None]
