"""The smoke run of a generated module, inside the sandbox (the work dir holds `model.py`).

Builds the model, runs a forward pass on a seeded random batch of the module's INPUT_SHAPE
(token ids below the vocabulary size for models that start with an embedding), times a few
more passes, and prints one line: the marker, then JSON with the output shape per sample,
ms per batch and peak RSS. Anything else it prints is the module's own output.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
import time
from typing import Any

TIMED_PASSES = 3


def main(arguments: dict[str, Any]) -> None:
    import numpy as np

    spec = importlib.util.spec_from_file_location("model", "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(int(arguments["seed"]))
    shape = (int(arguments["batch"]), *module.INPUT_SHAPE)
    below = arguments.get("token_ids_below")
    if below:
        batch = rng.integers(0, int(below), size=shape)
    else:
        batch = rng.standard_normal(shape).astype(np.float32)
    model = module.build_model()
    output = module.predict(model, batch)
    started = time.perf_counter()
    for _ in range(TIMED_PASSES):
        module.predict(model, batch)
    ms_per_batch = (time.perf_counter() - started) * 1000 / TIMED_PASSES
    result = {
        "output_shape": list(output.shape[1:]),
        "ms_per_batch": round(ms_per_batch, 3),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(arguments["marker"] + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
