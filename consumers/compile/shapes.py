"""Shape inference: what each layer makes of its input shape (channels-last, batch excluded)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Shape = tuple[int, ...]
Params = Mapping[str, Any]

SPATIAL_RANK = {
    "Conv1D": 2,
    "MaxPooling1D": 2,
    "AveragePooling1D": 2,
    "GlobalAveragePooling1D": 2,
    "GlobalMaxPooling1D": 2,
    "SimpleRNN": 2,
    "LSTM": 2,
    "GRU": 2,
    "TransformerEncoder": 2,
    "Conv2D": 3,
    "MaxPooling2D": 3,
    "AveragePooling2D": 3,
    "GlobalAveragePooling2D": 3,
    "GlobalMaxPooling2D": 3,
}

RANK_MEANING = {2: "(steps, channels)", 3: "(height, width, channels)"}
AXIS_NAMES = {1: ("length",), 2: ("height", "width")}


class LayerShapeError(Exception):
    """A layer that cannot take its input; `resume_with` is the shape to carry on with, if any."""

    def __init__(
        self,
        why: str,
        *,
        code: str = "DSL_SHAPE",
        hint: str | None = None,
        resume_with: Shape | None = None,
    ) -> None:
        super().__init__(why)
        self.why = why
        self.code = code
        self.hint = hint
        self.resume_with = resume_with


def format_shape(shape: Shape) -> str:
    """A shape as people write it: (3, 3, 1), or (64,) for rank 1."""
    return str(tuple(shape))


def as_tuple(value: Any, rank: int) -> tuple[int, ...]:
    """Kernel sizes, strides and dilations: an int stands for the same value on every axis."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * rank
    return tuple(int(v) for v in value)


def window_output(n: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """One spatial axis after a convolution or pooling window (the DSL.md formulas)."""
    if padding == "same":
        return -(-n // stride)
    return (n - dilation * (kernel - 1) - 1) // stride + 1


def windowed(params: Params, spatial: Shape, *, kernel_key: str, dilated: bool) -> Shape:
    """Spatial axes after a sliding window; an axis that drops below 1 is a shape error."""
    rank = len(spatial)
    kernel = as_tuple(params[kernel_key], rank)
    strides = params.get("strides")
    stride = as_tuple(params[kernel_key] if strides is None else strides, rank)
    dilation = as_tuple(params.get("dilation_rate", 1), rank) if dilated else (1,) * rank
    padding = str(params.get("padding", "valid"))
    for name, values in (("kernel", kernel), ("strides", stride), ("dilation_rate", dilation)):
        if len(values) != rank or any(v < 1 for v in values):
            raise LayerShapeError(
                f"{name} must be {rank} positive integer(s), got {list(values)}",
                code="DSL_BAD_PARAM",
            )
    if padding not in ("valid", "same"):
        raise LayerShapeError(
            f'padding must be "valid" or "same", got {padding!r}', code="DSL_BAD_PARAM"
        )
    out = tuple(
        window_output(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True)
    )
    window = "pool window" if kernel_key == "pool_size" else "kernel"
    for axis, size in enumerate(out):
        if size < 1:
            span = dilation[axis] * (kernel[axis] - 1) + 1
            dilated_note = f" (dilated to span {span})" if span != kernel[axis] else ""
            raise LayerShapeError(
                f"{AXIS_NAMES[rank][axis]} {spatial[axis]} is too small for the "
                f'{"x".join(map(str, kernel))} {window}{dilated_note} with "valid" padding: '
                f"the output {AXIS_NAMES[rank][axis]} would be {size}",
                hint='use padding="same", a smaller window, or less downsampling before this layer',
            )
    return out


def require_rank(kind: str, shape: Shape, rank: int) -> None:
    """Layers that only make sense on sequences or images say so."""
    if len(shape) != rank:
        raise LayerShapeError(
            f"needs a rank-{rank} input {RANK_MEANING[rank]}, got rank {len(shape)}",
            hint=f"reshape to {RANK_MEANING[rank]} first, e.g. with Reshape before {kind}",
        )


def dense(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    return (*shape[:-1], int(params["units"]))


def convolution(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    spatial = windowed(params, shape[:-1], kernel_key="kernel_size", dilated=True)
    return (*spatial, int(params["filters"]))


def pooling(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    spatial = windowed(params, shape[:-1], kernel_key="pool_size", dilated=False)
    return (*spatial, shape[-1])


def global_pooling(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    return (shape[-1],)


def flatten(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    return (math.prod(shape),)


def unchanged(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    return shape


def reshape(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    target = [int(v) for v in params["target_shape"]]
    unknown = target.count(-1)
    if unknown > 1 or any(v < 1 and v != -1 for v in target) or not target:
        raise LayerShapeError(
            f"target_shape {tuple(target)} must be positive sizes with at most one -1",
            code="DSL_BAD_PARAM",
        )
    total = math.prod(shape)
    known = math.prod(v for v in target if v != -1)
    if unknown:
        if total % known:
            raise LayerShapeError(
                f"{total} elements cannot be reshaped to {tuple(target)}: "
                f"{total} is not a multiple of {known}"
            )
        return tuple(total // known if v == -1 else v for v in target)
    if known != total:
        raise LayerShapeError(
            f"{total} elements cannot be reshaped to {tuple(target)} ({known} elements)"
        )
    return tuple(target)


def embedding(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    out = (*shape, int(params["output_dim"]))
    if len(shape) != 1:
        raise LayerShapeError(
            f"needs a rank-1 input of integer ids (steps,), got rank {len(shape)}",
            hint="Embedding must be the first layer, on an input like (100,)",
        )
    if position != 0:
        raise LayerShapeError(
            "must be the first layer: it takes integer token ids, not the output of another layer",
            hint="move Embedding to the start of the layers",
            resume_with=out,
        )
    return out


def recurrent(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    units = int(params["units"])
    return (shape[0], units) if params.get("return_sequences") else (units,)


def transformer(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    model_dim, heads = shape[-1], int(params["num_heads"])
    if heads < 1 or model_dim % heads:
        raise LayerShapeError(
            f"the model dimension {model_dim} (last axis) is not divisible by num_heads={heads}",
            code="DSL_BAD_PARAM",
            hint=f"use a num_heads that divides {model_dim}",
            resume_with=shape,
        )
    return shape


RULES: dict[str, Callable[[str, Params, Shape, int], Shape]] = {
    "Dense": dense,
    "Output": dense,
    "Conv1D": convolution,
    "Conv2D": convolution,
    "MaxPooling1D": pooling,
    "AveragePooling1D": pooling,
    "MaxPooling2D": pooling,
    "AveragePooling2D": pooling,
    "GlobalAveragePooling1D": global_pooling,
    "GlobalMaxPooling1D": global_pooling,
    "GlobalAveragePooling2D": global_pooling,
    "GlobalMaxPooling2D": global_pooling,
    "Flatten": flatten,
    "Dropout": unchanged,
    "BatchNormalization": unchanged,
    "LayerNormalization": unchanged,
    "Activation": unchanged,
    "Reshape": reshape,
    "Embedding": embedding,
    "SimpleRNN": recurrent,
    "LSTM": recurrent,
    "GRU": recurrent,
    "TransformerEncoder": transformer,
}


def output_shape(kind: str, params: Params, shape: Shape, position: int) -> Shape:
    """The shape `kind` produces from `shape`, or LayerShapeError saying why it cannot."""
    rank = SPATIAL_RANK.get(kind)
    if rank is not None:
        require_rank(kind, shape, rank)
    return RULES[kind](kind, params, shape, position)
