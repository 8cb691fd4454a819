"""`as_inputs` and `as_targets`: the conversions both backends' `train` applies to arrays."""

from __future__ import annotations

from consumers.codegen.training_plan import TrainingPlan


def inputs_source(plan: TrainingPlan, *, ids_dtype: str, returns: str, wrap: str) -> str:
    """`wrap` turns the checked numpy array named `array` into what the model takes."""
    dtype = ids_dtype if plan.input_is_ids else "float32"
    what = "token ids" if plan.input_is_ids else "samples"
    return "\n".join(
        [
            f"def as_inputs(x: np.ndarray) -> {returns}:",
            f'    """{what.capitalize()} as the model takes them: {dtype}, (N, *INPUT_SHAPE)."""',
            f"    array = np.asarray(x, dtype=np.{dtype})",
            "    if array.shape[1:] != INPUT_SHAPE:",
            f'        raise ValueError(f"{what} have shape {{array.shape[1:]}}, '
            'the model takes {INPUT_SHAPE}")',
            f"    return {wrap.format('array')}",
        ]
    )


def targets_source(plan: TrainingPlan, *, returns: str, wrap: str) -> str:
    """`wrap` turns the reshaped numpy labels into what the loss takes."""
    if plan.sparse_targets:
        doc, dtype, shape = "class indices", "int64", "*OUTPUT_SHAPE[:-1]"
    else:
        doc, dtype, shape = "float32 of the output's shape", "float32", "*OUTPUT_SHAPE"
    labels = f"np.asarray(y, dtype=np.{dtype}).reshape(len(y), {shape})"
    return "\n".join(
        [
            f"def as_targets(y: np.ndarray) -> {returns}:",
            f'    """Labels as the loss takes them: {doc}."""',
            f"    return {wrap.format(labels)}",
        ]
    )
