"""The Keras (TensorFlow) module generated for a compiled network: the PyTorch interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.codegen.conversions import inputs_source, targets_source
from consumers.codegen.source_layout import (
    Call,
    call,
    laid_out,
    layer_comment,
    module_text,
    source,
)
from consumers.codegen.training_plan import TrainingPlan, readout_sentence, training_plan

# Layers whose Keras class has the model language's name and needs no more than these params.
PLAIN = {
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Flatten",
    "SimpleRNN",
    "LSTM",
    "GRU",
}

TRANSFORMER_ENCODER = '''
class TransformerEncoder(keras.layers.Layer):
    """Post-norm Transformer encoder block: the computation of torch's TransformerEncoderLayer."""

    def __init__(
        self, model_dim: int, num_heads: int, ff_dim: int, dropout: float, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, model_dim // num_heads, dropout=dropout
        )
        self.attention_dropout = keras.layers.Dropout(dropout)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.hidden = keras.layers.Dense(ff_dim, activation="relu")
        self.hidden_dropout = keras.layers.Dropout(dropout)
        self.projection = keras.layers.Dense(model_dim)
        self.output_dropout = keras.layers.Dropout(dropout)
        self.output_norm = keras.layers.LayerNormalization(epsilon=1e-5)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self.hidden.build(input_shape)
        self.projection.build((*input_shape[:-1], self.ff_dim))
        self.output_norm.build(input_shape)

    def call(self, x, training=False):
        attended = self.attention(x, x, training=training)
        x = self.attention_norm(x + self.attention_dropout(attended, training=training))
        fed = self.projection(self.hidden_dropout(self.hidden(x), training=training))
        return self.output_norm(x + self.output_dropout(fed, training=training))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "model_dim": self.model_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }
'''

EPOCH_REPORT = '''
class EpochReport(keras.callbacks.Callback):
    """Calls on_epoch(epoch, metrics) after every epoch and on_batch(epoch, step, steps, loss)
    after every batch; epochs and steps counted from 1. Either may be None."""

    def __init__(self, on_epoch, on_batch=None) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.on_batch = on_batch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.on_batch is not None:
            loss = float((logs or {}).get("loss", float("nan")))
            self.on_batch(self.epoch, batch + 1, self.params.get("steps") or 0, loss)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.on_epoch is not None:
            metrics = {name: float(value) for name, value in (logs or {}).items()}
            self.on_epoch(epoch + 1, metrics)
'''

TRAIN_BODY = """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = build_model() if model is None else model
    model.compile(
{compile_args}
    )
    history = model.fit(
        as_inputs(x),
        as_targets(y),
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        shuffle=shuffle,
        callbacks=[EpochReport(on_epoch, on_batch)],
        verbose=0,
    )
    return {{name: float(values[-1]) for name, values in history.history.items() if values}}
"""

PREDICT = '''
def predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """{doc}"""
    outputs = model.predict(as_inputs(x), batch_size=batch_size, verbose=0)
    return {readout}
'''

LOSSES = {
    "sparse_categorical_crossentropy": call(
        "keras.losses.SparseCategoricalCrossentropy", from_logits=True
    ),
    "categorical_crossentropy": call("keras.losses.CategoricalCrossentropy", from_logits=True),
    "binary_crossentropy": call("keras.losses.BinaryCrossentropy", from_logits=True),
    "mse": call("keras.losses.MeanSquaredError"),
    "mae": call("keras.losses.MeanAbsoluteError"),
    "huber": call("keras.losses.Huber", delta=1.0),
}


def keras_module(compiled: Mapping[str, Any]) -> str:
    """The source of a self-contained Keras module for `compiled` (a compile-stage output)."""
    plan = training_plan(compiled)
    layers = compiled["layers"]
    ids = ('dtype="int32"',) if plan.input_is_ids else ()
    entries = [laid_out(Call("keras.Input", ("shape=INPUT_SHAPE", *ids)), 12, ",")]
    for position, layer in enumerate(layers):
        comment = layer_comment(layer, 12)
        last = position == len(layers) - 1
        entries.append([comment, *laid_out(keras_layer(layer, plan, last=last), 12, ",")])
    head = "\n\n".join(
        [
            module_docstring(compiled, plan),
            "import numpy as np\nfrom tensorflow import keras",
            f"INPUT_SHAPE = {source(tuple(compiled['input_shape']))}\n"
            f"OUTPUT_SHAPE = {source(tuple(compiled['output_shape']))}",
        ]
    )
    build = "\n".join(
        [
            "def build_model() -> keras.Sequential:",
            '    """The network as a keras.Sequential: model.layers[i] is layer i of the model."""',
            "    return keras.Sequential(",
            "        [",
            *(line for entry in entries for line in entry),
            "        ],",
            f"        name={source(str(compiled['name']))},",
            "    )",
        ]
    )
    uses_transformer = any(layer["type"] == "TransformerEncoder" for layer in layers)
    return module_text(
        [
            head,
            *([TRANSFORMER_ENCODER] if uses_transformer else []),
            EPOCH_REPORT,
            build,
            inputs_source(plan, ids_dtype="int32", returns="np.ndarray", wrap="{}"),
            targets_source(plan, returns="np.ndarray", wrap="{}"),
            train_source(compiled, plan),
            predict_source(plan),
        ]
    )


def module_docstring(compiled: Mapping[str, Any], plan: TrainingPlan) -> str:
    readout = readout_sentence(plan)
    return "\n".join(
        [
            f'"""{compiled["name"]}: generated by stagecast for Keras (TensorFlow).',
            "",
            f"Source sha256 {compiled.get('source_sha256', 'unknown')}.",
            "Inputs (N, *INPUT_SHAPE), outputs (N, *OUTPUT_SHAPE).",
            readout,
            '"""',
        ]
    )


def keras_layer(layer: Mapping[str, Any], plan: TrainingPlan, *, last: bool) -> Call:
    """The Keras layer for one layer of the model."""
    kind, params = layer["type"], layer["params"]
    shape, out = tuple(layer["input_shape"]), tuple(layer["output_shape"])
    bias = {} if params.get("use_bias", True) else {"use_bias": False}
    if kind in ("Dense", "Output"):
        activation = plan.output_activation if last else params["activation"]
        return call("keras.layers.Dense", params["units"], **activation_option(activation), **bias)
    if kind in ("Conv1D", "Conv2D"):
        options = window_options(params, "kernel_size")
        if params.get("dilation_rate") not in (1, [1, 1]):
            options["dilation_rate"] = axis_value(params["dilation_rate"])
        return call(
            f"keras.layers.{kind}",
            params["filters"],
            axis_value(params["kernel_size"]),
            **options,
            **activation_option(params["activation"]),
            **bias,
        )
    if "Pooling" in kind and not kind.startswith("Global"):
        return call(
            f"keras.layers.{kind}",
            axis_value(params["pool_size"]),
            **window_options(params, "pool_size"),
        )
    if kind in PLAIN:
        options = {"return_sequences": True} if params.get("return_sequences") else {}
        units = [params["units"]] if "units" in params else []
        return call(f"keras.layers.{kind}", *units, **options)
    if kind == "Dropout":
        return call("keras.layers.Dropout", float(params["rate"]))
    if kind == "BatchNormalization":
        return call(
            "keras.layers.BatchNormalization",
            momentum=params["momentum"],
            epsilon=params["epsilon"],
        )
    if kind == "LayerNormalization":
        return call("keras.layers.LayerNormalization", epsilon=params["epsilon"])
    if kind == "Activation":
        return call("keras.layers.Activation", params["activation"])
    if kind == "Reshape":
        return call("keras.layers.Reshape", out)
    if kind == "Embedding":
        return call("keras.layers.Embedding", params["input_dim"], params["output_dim"])
    if kind == "TransformerEncoder":
        return call(
            "TransformerEncoder",
            shape[-1],
            params["num_heads"],
            params["ff_dim"],
            float(params["dropout"]),
        )
    raise ValueError(f"no Keras translation for layer {kind!r}")


def activation_option(name: str) -> dict[str, str]:
    return {} if name == "linear" else {"activation": name}


def axis_value(value: Any) -> Any:
    return value if isinstance(value, int) else tuple(value)


def window_options(params: Mapping[str, Any], kernel_key: str) -> dict[str, Any]:
    """strides and padding where they differ from Keras' defaults (1, or the pool size)."""
    options: dict[str, Any] = {}
    strides = params.get("strides")
    default = params[kernel_key] if kernel_key == "pool_size" else None
    pooling = kernel_key == "pool_size"
    if strides is not None and strides != default and (pooling or strides not in (1, [1, 1])):
        options["strides"] = axis_value(strides)
    if params.get("padding", "valid") != "valid":
        options["padding"] = params["padding"]
    return options


def metric_call(metric: str, plan: TrainingPlan) -> Call:
    if metric == "mae":
        return call("keras.metrics.MeanAbsoluteError", name="mae")
    if metric == "mse":
        return call("keras.metrics.MeanSquaredError", name="mse")
    if plan.sparse_targets:
        return call("keras.metrics.SparseCategoricalAccuracy", name="accuracy")
    if plan.loss == "categorical_crossentropy":
        return call("keras.metrics.CategoricalAccuracy", name="accuracy")
    # The model outputs logits: above 0 means a probability above 0.5.
    return call("keras.metrics.BinaryAccuracy", name="accuracy", threshold=0.0)


def optimizer_call(optimizer: Mapping[str, Any]) -> Call:
    kind, params = optimizer["type"], optimizer.get("params") or {}
    options: dict[str, Any] = {"learning_rate": params.get("learning_rate", 0.001)}
    if kind == "AdamW":
        options["weight_decay"] = params.get("weight_decay", 0.01)
    if kind == "SGD":
        options["momentum"] = params.get("momentum", 0.0)
        options["nesterov"] = bool(params.get("nesterov", False))
    return call(f"keras.optimizers.{kind}", **options)


def train_source(compiled: Mapping[str, Any], plan: TrainingPlan) -> str:
    settings = compiled.get("train") or {}
    signature = [
        "def train(",
        "    x: np.ndarray,",
        "    y: np.ndarray,",
        "    *,",
        f"    epochs: int = {source(int(settings.get('epochs', 1)))},",
        f"    batch_size: int = {source(int(settings.get('batch_size', 32)))},",
        f"    validation_split: float = {source(float(settings.get('validation_split', 0.0)))},",
        f"    seed: int | None = {source(settings.get('seed'))},",
        f"    shuffle: bool = {source(bool(settings.get('shuffle', True)))},",
        "    on_epoch=None,",
        "    on_batch=None,",
        "    model: keras.Model | None = None,",
        ") -> dict[str, float]:",
        '    """Trains `model` (default: a new build_model()); returns the last epoch\'s metrics.',
        "",
        "    The last `validation_split` of the samples is held out; after each epoch,",
        "    on_epoch(epoch, metrics) is called with epochs counted from 1, and after each",
        "    batch on_batch(epoch, step, steps, loss) with steps counted from 1.",
        '    """',
    ]
    metrics = [laid_out(metric_call(metric, plan), 12, ",") for metric in plan.metrics]
    compile_args = [
        *laid_out(optimizer_call(compiled["optimizer"]), 8, ",", prefix="optimizer="),
        *laid_out(LOSSES[plan.loss], 8, ",", prefix="loss="),
        *(
            ["        metrics=[", *(line for lines in metrics for line in lines), "        ],"]
            if metrics
            else ["        metrics=[],"]
        ),
    ]
    body = TRAIN_BODY.format(compile_args="\n".join(compile_args))
    return "\n".join(signature) + body.rstrip()


def predict_source(plan: TrainingPlan) -> str:
    if plan.predict_activation == "softmax":
        doc = "Class probabilities: the softmax of the model's logits."
        readout = "np.asarray(keras.activations.softmax(outputs, axis=-1))"
    elif plan.predict_activation == "sigmoid":
        doc = "Probabilities: the sigmoid of the model's logits."
        readout = "np.asarray(keras.activations.sigmoid(outputs))"
    else:
        doc, readout = "The model's outputs for samples x.", "outputs"
    return PREDICT.format(doc=doc, readout=readout)
