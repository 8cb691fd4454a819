"""The layers of the subset: their parameters, and the rules on where layers may stand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.parse.params import (
    REQUIRED,
    Kind,
    Param,
    SameAs,
    Signature,
    activation,
    bind,
    boolean,
    check_value,
    fraction,
    int_or_pair,
    int_single,
    padding,
    positive_float,
    positive_int,
    target_shape,
    unit_interval,
)
from consumers.parse.source import Diagnostics
from consumers.parse.syntax import did_you_mean
from consumers.parse.tree import LayerLine

# A `* N` beyond this, or a network longer than MAX_LAYERS, is refused before it is expanded.
MAX_REPEAT = 10_000
MAX_LAYERS = 10_000

_ACTIVATION = Param("activation", activation, "linear")
_USE_BIAS = Param("use_bias", boolean, True)
_PADDING = Param("padding", padding, "valid")


def _dense(name: str) -> Signature:
    return Signature(name, (Param("units", positive_int), _ACTIVATION, _USE_BIAS), positional=2)


def _conv(name: str, size: Kind, one: object) -> Signature:
    params = (
        Param("filters", positive_int),
        Param("kernel_size", size),
        Param("strides", size, one),
        _PADDING,
        Param("dilation_rate", size, one),
        _ACTIVATION,
        _USE_BIAS,
    )
    return Signature(name, params, positional=2)


def _pooling(name: str, size: Kind, two: object) -> Signature:
    params = (
        Param("pool_size", size, two),
        Param("strides", size, SameAs("pool_size"), none_means_default=True),
        _PADDING,
    )
    return Signature(name, params, positional=1)


def _recurrent(name: str) -> Signature:
    params = (Param("units", positive_int), Param("return_sequences", boolean, False))
    return Signature(name, params, positional=1)


LAYERS: dict[str, Signature] = {
    signature.owner: signature
    for signature in (
        _dense("Dense"),
        _dense("Output"),
        _conv("Conv1D", int_single, 1),
        _conv("Conv2D", int_or_pair, (1, 1)),
        _pooling("MaxPooling1D", int_single, 2),
        _pooling("AveragePooling1D", int_single, 2),
        _pooling("MaxPooling2D", int_or_pair, (2, 2)),
        _pooling("AveragePooling2D", int_or_pair, (2, 2)),
        Signature("GlobalAveragePooling1D", ()),
        Signature("GlobalMaxPooling1D", ()),
        Signature("GlobalAveragePooling2D", ()),
        Signature("GlobalMaxPooling2D", ()),
        Signature("Flatten", ()),
        Signature("Dropout", (Param("rate", fraction),), positional=1),
        Signature(
            "BatchNormalization",
            (Param("momentum", unit_interval, 0.99), Param("epsilon", positive_float, 0.001)),
        ),
        Signature("LayerNormalization", (Param("epsilon", positive_float, 0.001),)),
        Signature("Activation", (Param("activation", activation),), positional=1),
        Signature("Reshape", (Param("target_shape", target_shape),), positional=1),
        Signature(
            "Embedding",
            (Param("input_dim", positive_int), Param("output_dim", positive_int)),
            positional=2,
        ),
        _recurrent("SimpleRNN"),
        _recurrent("LSTM"),
        _recurrent("GRU"),
        Signature(
            "TransformerEncoder",
            (
                Param("num_heads", positive_int),
                Param("ff_dim", positive_int),
                Param("dropout", fraction, 0.1),
            ),
            positional=2,
        ),
    )
}

# Layers of the full Neural DSL (and Keras names people carry over) that this subset leaves
# out; each maps to a hint, empty when there is nothing better to say.
_ACTIVATION_LAYER = 'use Activation("{}") instead'
OUTSIDE_SUBSET: dict[str, str] = {
    **dict.fromkeys(
        (
            "Conv3D",
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "SeparableConv1D",
            "SeparableConv2D",
            "DepthwiseConv1D",
            "DepthwiseConv2D",
            "MaxPooling3D",
            "AveragePooling3D",
            "GlobalMaxPooling3D",
            "GlobalAveragePooling3D",
            "UpSampling1D",
            "UpSampling2D",
            "UpSampling3D",
            "ZeroPadding1D",
            "ZeroPadding2D",
            "ZeroPadding3D",
            "Cropping1D",
            "Cropping2D",
            "Cropping3D",
            "SimpleRNNCell",
            "LSTMCell",
            "GRUCell",
            "SimpleRNNDropoutWrapper",
            "ConvLSTM2D",
            "Bidirectional",
            "TimeDistributed",
            "Transformer",
            "TransformerDecoder",
            "MultiHeadAttention",
            "Attention",
            "AdditiveAttention",
            "Residual",
            "ResidualConnection",
            "Inception",
            "Add",
            "Subtract",
            "Multiply",
            "Average",
            "Maximum",
            "Minimum",
            "Concatenate",
            "Dot",
            "GaussianNoise",
            "GaussianDropout",
            "AlphaDropout",
            "SpatialDropout1D",
            "SpatialDropout2D",
            "SpatialDropout3D",
            "InstanceNormalization",
            "GroupNormalization",
            "UnitNormalization",
            "Lambda",
            "Permute",
            "RepeatVector",
            "Masking",
            "Input",
            "Capsule",
            "CapsuleLayer",
            "SqueezeExcitation",
            "QuantumLayer",
            "DynamicLayer",
            "GraphConv",
            "GraphAttention",
        ),
        "",
    ),
    "ReLU": _ACTIVATION_LAYER.format("relu"),
    "LeakyReLU": _ACTIVATION_LAYER.format("leaky_relu"),
    "ELU": _ACTIVATION_LAYER.format("elu"),
    "Softmax": _ACTIVATION_LAYER.format("softmax"),
    "PReLU": "",
    "ThresholdedReLU": "",
}


@dataclass(frozen=True, slots=True)
class PlacedLayer:
    """A layer line whose type is known, with how often it repeats and its span."""

    type: str
    count: int
    start: int
    end: int
    params: dict[str, Any] | None


def place_layer(line: LayerLine, macros: set[str], diagnostics: Diagnostics) -> PlacedLayer | None:
    """The layer a line stands for, with checked params (None when they were refused)."""
    call = line.call
    span = (call.start, call.name_end)
    signature = LAYERS.get(call.name)
    count = _repeat_count(line, diagnostics)
    if signature is None:
        _report_unknown(call.name, span, macros, diagnostics)
        return None
    params = bind(signature, call.arguments, span, diagnostics)
    return PlacedLayer(call.name, count, call.start, call.name_end, params)


def _repeat_count(line: LayerLine, diagnostics: Diagnostics) -> int:
    if line.repeat is None:
        return 1
    label = f"the repeat count of {line.call.name}"
    count = check_value(Param("repeat", positive_int), line.repeat, label, diagnostics)
    if count is REQUIRED:
        return 1
    if count > MAX_REPEAT:
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"{label} must be at most {MAX_REPEAT}, got {count}",
            line.repeat.start,
            line.repeat.end,
        )
        return 1
    return int(count)


def _report_unknown(
    name: str, span: tuple[int, int], macros: set[str], diagnostics: Diagnostics
) -> None:
    if name in macros:  # its `define` was already reported as outside the subset
        return
    if name in OUTSIDE_SUBSET:
        diagnostics.report(
            "DSL_UNSUPPORTED",
            f"outside the supported subset: layer '{name}' of the full Neural DSL",
            *span,
            OUTSIDE_SUBSET[name] or None,
        )
        return
    hint = did_you_mean(name, list(LAYERS)) or "supported layers: " + ", ".join(LAYERS)
    diagnostics.report("DSL_UNKNOWN_LAYER", f"unknown layer '{name}'", *span, hint)


def check_order(
    layers: list[PlacedLayer], all_known: bool, at: tuple[int, int], diagnostics: Diagnostics
) -> None:
    """Output last and exactly once; Embedding only first. `at` locates a missing Output.

    A missing Output is only reported when every layer name was known: a misspelt layer may
    well be the Output, and it has been reported already.
    """
    outputs = [layer for layer in layers if layer.type == "Output"]
    if outputs:
        _check_output(layers, outputs, diagnostics)
    elif all_known:
        diagnostics.report(
            "DSL_BAD_PARAM",
            "network has no Output layer",
            *at,
            'end the layers with Output(units, activation), e.g. Output(10, "softmax")',
        )
    for position, layer in enumerate(layers):
        if layer.type == "Embedding" and (position > 0 or layer.count > 1):
            diagnostics.report(
                "DSL_BAD_PARAM",
                "Embedding is only valid as the first layer",
                layer.start,
                layer.end,
                "it turns integer token ids into vectors, so it must come first",
            )


def _check_output(
    layers: list[PlacedLayer], outputs: list[PlacedLayer], diagnostics: Diagnostics
) -> None:
    """Exactly one Output (counting repeats), and nothing after it."""
    if len(outputs) > 1 or outputs[0].count > 1:
        extra = outputs[1] if len(outputs) > 1 else outputs[0]
        diagnostics.report(
            "DSL_BAD_PARAM",
            "network has more than one Output layer; there must be exactly one",
            extra.start,
            extra.end,
            "use Dense for the hidden layers",
        )
        return
    position = layers.index(outputs[0])
    if position != len(layers) - 1:
        after = layers[position + 1]
        diagnostics.report(
            "DSL_BAD_PARAM",
            f"Output must be the last layer, but {after.type} comes after it",
            after.start,
            after.end,
            "move Output to the end of the layers",
        )
