"""The PyTorch module generated for a compiled network: channels-last outside, first inside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.codegen.conversions import inputs_source, targets_source
from consumers.codegen.source_layout import (
    Call,
    call,
    expanded,
    laid_out,
    layer_comment,
    module_text,
    source,
)
from consumers.codegen.training_plan import TrainingPlan, readout_sentence, training_plan

# Which memory layout each layer wants for inputs of rank >= 2; "any" works in both.
CHANNELS_FIRST = {
    "Conv1D",
    "Conv2D",
    "MaxPooling1D",
    "AveragePooling1D",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "BatchNormalization",
}
EITHER_LAYOUT = {"Dropout", "Activation"}
ACTIVATIONS = {
    "relu": call("nn.ReLU"),
    "sigmoid": call("nn.Sigmoid"),
    "tanh": call("nn.Tanh"),
    "gelu": call("nn.GELU"),
    "elu": call("nn.ELU"),
    "selu": call("nn.SELU"),
    # Keras' default slope, which the model language follows (PyTorch's own default is 0.01).
    "leaky_relu": call("nn.LeakyReLU", 0.2),
    "silu": call("nn.SiLU"),
    "softplus": call("nn.Softplus"),
}
RECURRENT = {"SimpleRNN": "nn.RNN", "LSTM": "nn.LSTM", "GRU": "nn.GRU"}
OPTIMIZERS = {"Adam": "Adam", "AdamW": "AdamW", "SGD": "SGD", "RMSprop": "RMSprop"}

PERMUTE = '''
class Permute(nn.Module):
    """Reorders axes: the model is channels-last outside, convolutions run channels-first inside."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)
'''

RECURRENT_WRAPPER = '''
class Recurrent(nn.Module):
    """A batch-first recurrent layer returning its whole output sequence or only the last step."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.rnn(x)
        return sequence if self.return_sequences else sequence[:, -1]
'''

SAME_AVERAGE_POOL = '''
class SameAveragePool(nn.Module):
    """Average pooling over uneven "same" padding; padded cells stay out of each mean (as Keras)."""

    def __init__(self, pad: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.pad = pad
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = self.pool(self.pad(torch.ones_like(x[:1, :1])))
        return self.pool(self.pad(x)) / cells
'''

BATCHES = '''
def batches(count: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a last batch of one sample joins the previous (batch norm needs 2)."""
    starts = list(range(0, count, batch_size))
    if len(starts) > 1 and count - starts[-1] == 1:
        starts.pop()
    return [slice(start, stop) for start, stop in zip(starts, [*starts[1:], count], strict=True)]


def accumulate(sums: dict[str, float], measured: dict[str, float], count: int) -> None:
    """Adds a batch's mean loss and metrics, weighted by its sample count."""
    for name, value in measured.items():
        sums[name] = sums.get(name, 0.0) + value * count
'''

TRAIN_BODY = """
    if seed is not None:
        torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model() if model is None else model
    inputs, targets = as_inputs(x), as_targets(y)
    split = int(np.ceil(len(inputs) * (1.0 - validation_split)))
    if split < 1:
        raise ValueError("validation_split leaves no samples to train on")
{optimizer}
    metrics: dict[str, float] = {{}}
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(split) if shuffle else np.arange(split))
        sums: dict[str, float] = {{}}
        steps = batches(split, batch_size)
        for step, batch in enumerate(steps, start=1):
            chosen = order[batch]
            outputs = model(inputs[chosen])
            loss = loss_of(outputs, targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            measured = {{"loss": loss.item(), **metrics_of(outputs.detach(), targets[chosen])}}
            accumulate(sums, measured, len(chosen))
            if on_batch is not None:
                on_batch(epoch, step, len(steps), measured["loss"])
        metrics = {{name: total / split for name, total in sums.items()}}
        if split < len(inputs):
            held_out = evaluate(model, inputs[split:], targets[split:], batch_size)
            metrics.update({{f"val_{{name}}": value for name, value in held_out.items()}})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return metrics
"""

EVALUATE = '''
def evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    """Mean loss and metrics on prepared inputs and targets (see as_inputs/as_targets)."""
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            outputs = model(inputs[start : start + batch_size])
            expected = targets[start : start + batch_size]
            measured = {"loss": loss_of(outputs, expected).item(), **metrics_of(outputs, expected)}
            accumulate(sums, measured, len(expected))
    return {name: total / len(inputs) for name, total in sums.items()}
'''

PREDICT = '''
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """{doc}"""
    model.eval()
    inputs = as_inputs(x)
    with torch.no_grad():
        outputs = [
            model(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)
        ]
    stacked = torch.cat(outputs) if outputs else torch.zeros(0, *OUTPUT_SHAPE)
    return {readout}.numpy()
'''


def pytorch_module(compiled: Mapping[str, Any]) -> str:
    """The source of a self-contained PyTorch module for `compiled` (a compile-stage output)."""
    plan = training_plan(compiled)
    entries, helpers = model_entries(compiled, plan)
    head = "\n\n".join(
        [
            module_docstring(compiled, plan),
            "import numpy as np\nimport torch\nfrom torch import nn",
            f"INPUT_SHAPE = {source(tuple(compiled['input_shape']))}\n"
            f"OUTPUT_SHAPE = {source(tuple(compiled['output_shape']))}",
        ]
    )
    build = "\n".join(
        [
            "def build_model() -> nn.Sequential:",
            '    """The network as one nn.Sequential: model[i] is layer i of the model."""',
            *expanded("return nn.Sequential", entries, 4),
        ]
    )
    return module_text(
        [
            head,
            *helpers,
            build,
            inputs_source(plan, ids_dtype="int64", returns="torch.Tensor", wrap="torch.tensor({})"),
            targets_source(plan, returns="torch.Tensor", wrap="torch.tensor({})"),
            loss_source(plan),
            metrics_source(plan),
            BATCHES,
            train_source(compiled),
            EVALUATE,
            predict_source(plan),
        ]
    )


def module_docstring(compiled: Mapping[str, Any], plan: TrainingPlan) -> str:
    readout = readout_sentence(plan)
    return "\n".join(
        [
            f'"""{compiled["name"]}: generated by stagecast for PyTorch.',
            "",
            f"Source sha256 {compiled.get('source_sha256', 'unknown')}.",
            "Inputs (N, *INPUT_SHAPE) and outputs (N, *OUTPUT_SHAPE) are channels-last, as in the",
            "model language; convolutions run channels-first inside.",
            readout,
            '"""',
        ]
    )


def model_entries(
    compiled: Mapping[str, Any], plan: TrainingPlan
) -> tuple[list[list[str]], list[str]]:
    """Laid-out lines of each layer's module, and the helper classes they need."""
    layout = "last"
    entries: list[list[str]] = []
    used: set[str] = set()
    layers = compiled["layers"]
    for position, layer in enumerate(layers):
        modules, layout = layer_modules(layer, layout, plan, last=position == len(layers) - 1)
        used.update(
            name
            for name in ("Permute", "Recurrent", "SameAveragePool")
            if any(module.inline().startswith(name + "(") for module in modules)
        )
        comment = layer_comment(layer, 8)
        if len(modules) == 1:
            entries.append([comment, *laid_out(modules[0], 8, ",")])
        else:
            parts = [laid_out(module, 12, ",") for module in modules]
            entries.append([comment, *expanded("nn.Sequential", parts, 8, ",")])
    helpers = {
        "Permute": PERMUTE,
        "Recurrent": RECURRENT_WRAPPER,
        "SameAveragePool": SAME_AVERAGE_POOL,
    }
    return entries, [text for name, text in helpers.items() if name in used]


def layer_modules(
    layer: Mapping[str, Any], layout: str, plan: TrainingPlan, *, last: bool
) -> tuple[list[Call], str]:
    """PyTorch modules for one layer (with any permute its layout needs) and the layout after."""
    kind, params = layer["type"], layer["params"]
    shape, out = tuple(layer["input_shape"]), tuple(layer["output_shape"])
    rank = len(shape)
    wanted = "any" if kind in EITHER_LAYOUT else "first" if kind in CHANNELS_FIRST else "last"
    modules: list[Call] = []
    if rank >= 2 and wanted not in ("any", layout):
        modules.append(permute_to(wanted, rank))
        layout = wanted
    channel_axis = 1 if layout == "first" and rank >= 2 else -1
    modules.extend(core_modules(kind, params, shape, out, channel_axis, plan, last=last))
    return modules, layout if len(out) >= 2 else "last"


def permute_to(layout: str, rank: int) -> Call:
    """(N, ..., C) -> (N, C, ...) or back, for a sample of `rank` axes."""
    dims = (0, rank, *range(1, rank)) if layout == "first" else (0, *range(2, rank + 1), 1)
    return call("Permute", *dims)


def activation_module(name: str, channel_axis: int) -> list[Call]:
    if name == "linear":
        return []
    if name == "softmax":
        return [call("nn.Softmax", dim=channel_axis)]
    return [ACTIVATIONS[name]]


def core_modules(
    kind: str,
    params: Mapping[str, Any],
    shape: tuple[int, ...],
    out: tuple[int, ...],
    channel_axis: int,
    plan: TrainingPlan,
    *,
    last: bool,
) -> list[Call]:
    """The modules doing a layer's work, on an input already in the layout the layer wants."""
    channels = shape[-1]
    bias = {} if params.get("use_bias", True) else {"bias": False}
    if kind in ("Dense", "Output"):
        activation = plan.output_activation if last else params["activation"]
        linear = call("nn.Linear", channels, params["units"], **bias)
        return [linear, *activation_module(activation, -1)]
    if kind in ("Conv1D", "Conv2D"):
        return convolution(kind, params, shape, channel_axis, bias)
    if "Pooling" in kind and not kind.startswith("Global"):
        return pooling(kind, params, shape)
    if kind.startswith("Global"):
        dims = len(shape) - 1
        reduce = "Avg" if "Average" in kind else "Max"
        return [call(f"nn.Adaptive{reduce}Pool{dims}d", 1), call("nn.Flatten")]
    if kind == "Flatten":
        return [call("nn.Flatten")]
    if kind == "Dropout":
        return [call("nn.Dropout", float(params["rate"]))]
    if kind == "BatchNormalization":
        dims = max(len(shape) - 1, 1)
        # PyTorch's momentum weighs the new batch; Keras' (the language's) weighs the history.
        momentum = round(1.0 - float(params["momentum"]), 10)
        return [call(f"nn.BatchNorm{dims}d", channels, eps=params["epsilon"], momentum=momentum)]
    if kind == "LayerNormalization":
        return [call("nn.LayerNorm", channels, eps=params["epsilon"])]
    if kind == "Activation":
        return activation_module(params["activation"], channel_axis) or [call("nn.Identity")]
    if kind == "Reshape":
        flat = call("nn.Flatten")
        return [flat, call("nn.Unflatten", 1, out)] if len(out) >= 2 else [flat]
    if kind == "Embedding":
        return [call("nn.Embedding", params["input_dim"], params["output_dim"])]
    if kind in RECURRENT:
        rnn = call(RECURRENT[kind], channels, params["units"], batch_first=True)
        return [call("Recurrent", rnn, return_sequences=bool(params["return_sequences"]))]
    if kind == "TransformerEncoder":
        encoder = call(
            "nn.TransformerEncoderLayer",
            channels,
            params["num_heads"],
            dim_feedforward=params["ff_dim"],
            dropout=float(params["dropout"]),
            batch_first=True,
        )
        return [encoder]
    raise ValueError(f"no PyTorch translation for layer {kind!r}")


def axis_values(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def same_padding(n: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras' "same" padding of one axis as (before, after); an odd cell goes after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def window_padding(
    params: Mapping[str, Any], shape: tuple[int, ...], kernel_key: str, dilated: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
    """Kernel, strides, dilation and per-axis (before, after) padding of a window layer."""
    dims = len(shape) - 1
    kernel = axis_values(params[kernel_key], dims)
    strides = axis_values(params.get("strides") or params[kernel_key], dims)
    dilation = axis_values(params.get("dilation_rate", 1), dims) if dilated else (1,) * dims
    if params.get("padding") == "same":
        pads = [
            same_padding(n, k, s, d)
            for n, k, s, d in zip(shape[:-1], kernel, strides, dilation, strict=True)
        ]
    else:
        pads = [(0, 0)] * dims
    return kernel, strides, dilation, pads


def pad_module(pads: list[tuple[int, int]], value: float) -> Call:
    """Explicit padding for uneven "same" padding; PyTorch lists the last axis first."""
    flat = tuple(side for pair in reversed(pads) for side in pair)
    dims = len(pads)
    if value == 0.0:
        return call(f"nn.ZeroPad{dims}d", flat)
    return Call(f"nn.ConstantPad{dims}d", (source(flat), 'float("-inf")'))


def squeeze(values: tuple[int, ...]) -> Any:
    """One-axis layers take plain ints, two-axis layers tuples."""
    return values[0] if len(values) == 1 else values


def convolution(
    kind: str,
    params: Mapping[str, Any],
    shape: tuple[int, ...],
    channel_axis: int,
    bias: Mapping[str, Any],
) -> list[Call]:
    kernel, strides, dilation, pads = window_padding(params, shape, "kernel_size", True)
    dims = len(kernel)
    even = all(before == after for before, after in pads)
    options: dict[str, Any] = {}
    if any(s != 1 for s in strides):
        options["stride"] = squeeze(strides)
    if even and any(before for before, _ in pads):
        options["padding"] = squeeze(tuple(before for before, _ in pads))
    if any(d != 1 for d in dilation):
        options["dilation"] = squeeze(dilation)
    conv = call(f"nn.Conv{dims}d", shape[-1], params["filters"], squeeze(kernel), **options, **bias)
    padding = [] if even else [pad_module(pads, 0.0)]
    return [*padding, conv, *activation_module(params["activation"], channel_axis)]


def pooling(kind: str, params: Mapping[str, Any], shape: tuple[int, ...]) -> list[Call]:
    kernel, strides, _, pads = window_padding(params, shape, "pool_size", False)
    dims = len(kernel)
    average = kind.startswith("Average")
    options: dict[str, Any] = {}
    if strides != kernel:
        options["stride"] = squeeze(strides)
    pool_head = f"nn.{'Avg' if average else 'Max'}Pool{dims}d"
    if not any(before or after for before, after in pads):
        return [call(pool_head, squeeze(kernel), **options)]
    if all(before == after for before, after in pads):
        padded = {"padding": squeeze(tuple(before for before, _ in pads))}
        if average:
            padded["count_include_pad"] = False
        if "stride" not in options:
            options["stride"] = squeeze(strides)
        return [call(pool_head, squeeze(kernel), **options, **padded)]
    pool = call(pool_head, squeeze(kernel), **options)
    if average:
        return [call("SameAveragePool", pad_module(pads, 0.0), pool)]
    return [pad_module(pads, float("-inf")), pool]


LOSSES = {
    "sparse_categorical_crossentropy": (
        "Sparse categorical cross-entropy on the logits.",
        "nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))",
    ),
    "categorical_crossentropy": (
        "Categorical cross-entropy on the logits against one-hot (or soft) labels.",
        "nn.functional.cross_entropy(\n"
        "        outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1, outputs.shape[-1])\n"
        "    )",
    ),
    "binary_crossentropy": (
        "Binary cross-entropy on the logits (the sigmoid is fused in, for stability).",
        "nn.functional.binary_cross_entropy_with_logits(outputs, targets)",
    ),
    "mse": ("Mean squared error.", "nn.functional.mse_loss(outputs, targets)"),
    "mae": ("Mean absolute error.", "nn.functional.l1_loss(outputs, targets)"),
    "huber": ("Huber loss (delta 1.0, as Keras).", "nn.functional.huber_loss(outputs, targets)"),
}


def loss_source(plan: TrainingPlan) -> str:
    doc, expression = LOSSES[plan.loss]
    return "\n".join(
        [
            "def loss_of(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:",
            f'    """{doc}"""',
            f"    return {expression}",
        ]
    )


def metric_expression(metric: str, plan: TrainingPlan) -> str:
    if metric == "mae":
        return "(outputs - targets).abs().mean().item()"
    if metric == "mse":
        return "(outputs - targets).square().mean().item()"
    if plan.sparse_targets:
        return "(outputs.argmax(dim=-1) == targets).float().mean().item()"
    if plan.loss == "categorical_crossentropy":
        return "(outputs.argmax(dim=-1) == targets.argmax(dim=-1)).float().mean().item()"
    # Logits above 0 are probabilities above 0.5.
    return "((outputs > 0) == (targets > 0.5)).float().mean().item()"


def metrics_source(plan: TrainingPlan) -> str:
    lines = [
        "def metrics_of(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:",
        '    """Batch means of the reported metrics."""',
    ]
    if not plan.metrics:
        return "\n".join([*lines, "    return {}"])
    items = [f'        "{metric}": {metric_expression(metric, plan)},' for metric in plan.metrics]
    return "\n".join([*lines, "    return {", *items, "    }"])


def optimizer_call(optimizer: Mapping[str, Any]) -> Call:
    kind, params = optimizer["type"], optimizer.get("params") or {}
    options: dict[str, Any] = {"lr": params.get("learning_rate", 0.001)}
    if kind == "AdamW":
        options["weight_decay"] = params.get("weight_decay", 0.01)
    if kind == "SGD" and params.get("momentum"):
        options["momentum"] = params["momentum"]
        if params.get("nesterov"):
            options["nesterov"] = True
    if kind == "RMSprop":
        options["alpha"] = 0.9  # Keras' rho; PyTorch's default smoothing is 0.99
    return call(f"torch.optim.{OPTIMIZERS[kind]}", Call("model.parameters"), **options)


def train_source(compiled: Mapping[str, Any]) -> str:
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
        "    model: nn.Module | None = None,",
        ") -> dict[str, float]:",
        '    """Trains `model` (default: a new build_model()); returns the last epoch\'s metrics.',
        "",
        "    The last `validation_split` of the samples is held out, as Keras does; after each",
        "    epoch, on_epoch(epoch, metrics) is called with epochs counted from 1, and after",
        "    each batch on_batch(epoch, step, steps, loss) with steps counted from 1.",
        '    """',
    ]
    optimizer = "\n".join(laid_out(optimizer_call(compiled["optimizer"]), 4, prefix="optimizer = "))
    return "\n".join(signature) + TRAIN_BODY.format(optimizer=optimizer).rstrip()


def predict_source(plan: TrainingPlan) -> str:
    if plan.predict_activation == "softmax":
        doc, readout = (
            "Class probabilities: the softmax of the model's logits.",
            ("torch.softmax(stacked, dim=-1)"),
        )
    elif plan.predict_activation == "sigmoid":
        doc, readout = "Probabilities: the sigmoid of the model's logits.", "torch.sigmoid(stacked)"
    else:
        doc, readout = "The model's outputs for samples x.", "stacked"
    return PREDICT.format(doc=doc, readout=readout)
