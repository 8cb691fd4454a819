"""Random small networks in parse-IR form, and the compiled IR of every valid example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from consumers.compile.logic import compile_ir
from consumers.parse.logic import parse_source
from streams.stage import StageResult

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "gelu", "elu", "selu", "leaky_relu", "silu"]
ACTIVATIONS += ["softplus", "linear"]
LOSSES = [
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
    "mae",
    "huber",
]


def example_sources() -> dict[str, str]:
    """Every valid example model, by file stem."""
    return {path.stem: path.read_text() for path in sorted(EXAMPLES.glob("*.neural"))}


def compiled_example(source: str, target: str) -> dict[str, Any]:
    parsed = parse_source(source)
    assert isinstance(parsed, StageResult), parsed
    compiled = compile_ir(parsed.output, target=target)
    assert isinstance(compiled, StageResult), compiled
    return compiled.output


def layer(kind: str, **params: Any) -> dict[str, Any]:
    return {"type": kind, "line": 1, "column": 1, "params": params}


small = st.integers(1, 3)
activations = st.sampled_from(ACTIVATIONS)


@st.composite
def conv2d(draw: st.DrawFn) -> dict[str, Any]:
    return layer(
        "Conv2D",
        filters=draw(st.integers(1, 4)),
        kernel_size=[draw(small), draw(small)],
        strides=[draw(st.integers(1, 2)), draw(st.integers(1, 2))],
        padding=draw(st.sampled_from(["valid", "same"])),
        dilation_rate=[draw(st.integers(1, 2)), 1],
        activation=draw(activations),
        use_bias=draw(st.booleans()),
    )


@st.composite
def conv1d(draw: st.DrawFn) -> dict[str, Any]:
    return layer(
        "Conv1D",
        filters=draw(st.integers(1, 4)),
        kernel_size=draw(small),
        strides=draw(st.integers(1, 2)),
        padding=draw(st.sampled_from(["valid", "same"])),
        dilation_rate=draw(st.integers(1, 2)),
        activation=draw(activations),
        use_bias=draw(st.booleans()),
    )


@st.composite
def pool(draw: st.DrawFn, dims: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["MaxPooling", "AveragePooling"])) + f"{dims}D"
    size = [draw(small) for _ in range(dims)]
    strides = [draw(small) for _ in range(dims)]
    return layer(
        kind,
        pool_size=size[0] if dims == 1 else size,
        strides=strides[0] if dims == 1 else strides,
        padding=draw(st.sampled_from(["valid", "same"])),
    )


def shared_layers() -> st.SearchStrategy[dict[str, Any]]:
    """Layers that take any rank."""
    return st.one_of(
        st.builds(lambda rate: layer("Dropout", rate=rate), st.sampled_from([0.0, 0.3])),
        st.builds(lambda name: layer("Activation", activation=name), activations),
        st.builds(
            lambda momentum: layer("BatchNormalization", momentum=momentum, epsilon=0.001),
            st.sampled_from([0.9, 0.99]),
        ),
        st.just(layer("LayerNormalization", epsilon=0.001)),
    )


@st.composite
def sequence_layer(draw: st.DrawFn) -> dict[str, Any]:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(conv1d())
    if choice == 1:
        return draw(pool(1))
    if choice == 2:
        return layer(
            draw(st.sampled_from(["SimpleRNN", "LSTM", "GRU"])),
            units=draw(st.integers(1, 4)),
            return_sequences=True,
        )
    if choice == 3:
        # networks() redraws num_heads among the divisors of the model dimension it meets
        return layer("TransformerEncoder", num_heads=1, ff_dim=draw(st.integers(1, 8)), dropout=0.1)
    return draw(shared_layers())


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    """A parse IR of 2 to ~8 layers: images, sequences, token ids or plain vectors, then a head."""
    family = draw(st.sampled_from(["image", "sequence", "tokens", "vector"]))
    layers: list[dict[str, Any]] = []
    if family == "image":
        input_shape = [draw(st.integers(4, 9)), draw(st.integers(4, 9)), draw(small)]
        body = st.one_of(conv2d(), pool(2), shared_layers())
        layers += draw(st.lists(body, max_size=3))
        reducer = draw(st.sampled_from(["Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D"]))
        layers.append(layer(reducer))
    else:
        if family == "vector":
            input_shape = [draw(st.integers(1, 8))]
        elif family == "tokens":
            input_shape = [draw(st.integers(2, 8))]
            layers.append(
                layer(
                    "Embedding",
                    input_dim=draw(st.integers(2, 20)),
                    output_dim=draw(st.integers(2, 6)),
                )
            )
        else:
            input_shape = [draw(st.integers(3, 10)), draw(st.integers(1, 4))]
        if family != "vector":
            layers += draw(st.lists(sequence_layer(), max_size=3))
            reducer = draw(
                st.sampled_from(["Flatten", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GRU"])
            )
            layers.append(
                layer(reducer, units=draw(st.integers(1, 4)), return_sequences=False)
                if reducer == "GRU"
                else layer(reducer)
            )
    head = st.one_of(
        st.builds(
            lambda units, activation, use_bias: layer(
                "Dense", units=units, activation=activation, use_bias=use_bias
            ),
            st.integers(1, 6),
            activations,
            st.booleans(),
        ),
        shared_layers(),
    )
    layers += draw(st.lists(head, max_size=2))
    layers.append(
        layer(
            "Output",
            units=draw(st.integers(1, 5)),
            activation=draw(st.sampled_from(["softmax", "sigmoid", "linear", "relu"])),
            use_bias=draw(st.booleans()),
        )
    )
    ir: dict[str, Any] = {
        "ir_version": 1,
        "name": "Drawn",
        "input_shape": input_shape,
        "layers": [{**item, "index": index} for index, item in enumerate(layers)],
        "loss": draw(st.sampled_from(LOSSES)),
        "optimizer": {"type": "Adam", "params": {"learning_rate": 0.001}},
        "metrics": ["accuracy"],
        "train": {
            "epochs": 1,
            "batch_size": 4,
            "validation_split": 0.0,
            "dataset": None,
            "seed": 0,
            "shuffle": True,
        },
        "source_sha256": "0" * 64,
    }
    probe = compile_ir(ir)
    if isinstance(probe, StageResult):
        for item in probe.output["layers"]:
            if item["type"] == "TransformerEncoder":
                width = item["input_shape"][-1]
                heads = [n for n in range(1, width + 1) if width % n == 0]
                ir["layers"][item["index"]]["params"]["num_heads"] = draw(st.sampled_from(heads))
    return ir
