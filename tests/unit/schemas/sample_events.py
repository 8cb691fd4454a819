"""One realistic record of every event type, as producers would build them."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

JOB_ID = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
OCCURRED_AT = 1_732_270_000_123
MODEL_PY = b"import torch\n\nclass Model(torch.nn.Module):\n    pass\n"


def _common(event_id: str, source: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "job_id": JOB_ID,
        "tenant": "acme",
        "occurred_at": OCCURRED_AT,
        "source": source,
    }


_SAMPLES: dict[str, dict[str, Any]] = {
    "JobRequested": {
        **_common("0b6a6c1e-0000-4000-8000-000000000001", "api"),
        "kind": "MODEL",
        "dsl": "model mnist {\n  input [1, 28, 28]\n  dense 10\n}\n",
        "code": None,
        "language": None,
        "stdin": "3 4\n",
        "target": "pytorch",
        "stages": ["parse", "compile", "codegen", "execute", "train"],
        "train": json.dumps({"epochs": 3, "batch_size": 64, "dataset": "synthetic"}),
        # Fields added to the nested record after v1 stay null here: v1 data reads them so.
        "limits": {
            "timeout_seconds": 600,
            "memory_mb": 2048,
            "cpu_seconds": None,
            "processes": None,
            "output_kib": None,
        },
        "labels": {"team": "vision", "experiment": "baseline"},
        "idempotency_key": "req-2024-11-22-001",
    },
    "JobAccepted": {
        **_common("0b6a6c1e-0000-4000-8000-000000000002", "dispatcher"),
        "kind": "CODE",
        "target": "pytorch",
        "stages": ["execute"],
        "idempotency_key": None,
    },
    "JobRejected": {
        **_common("0b6a6c1e-0000-4000-8000-000000000003", "dispatcher"),
        "error": {
            "code": "REQUEST_INVALID",
            "message": "a MODEL job needs dsl text",
            "details": json.dumps({"field": "dsl"}),
        },
    },
    "StageCommand": {
        **_common("0b6a6c1e-0000-4000-8000-000000000004", "stage.parse"),
        "stage": "compile",
        "attempt": 1,
        "plan": ["parse", "compile", "codegen"],
        "spec": json.dumps({"kind": "MODEL", "target": "pytorch"}),
        "input": json.dumps({"ir": {"layers": [{"op": "dense", "units": 10}]}}),
        "deadline_ms": OCCURRED_AT + 60_000,
    },
    "StageChanged": {
        **_common("0b6a6c1e-0000-4000-8000-000000000005", "stage.parse"),
        "stage": "parse",
        "attempt": 2,
        "status": "FAILED",
        "summary": "{}",
        "error": {
            "code": "PARSE_SYNTAX",
            "message": "expected a layer name",
            "details": json.dumps({"line": 3, "column": 7}),
        },
        "duration_ms": 41,
        "reported": 3,
    },
    "JobFinished": {
        **_common("0b6a6c1e-0000-4000-8000-000000000006", "stage.train"),
        "status": "SUCCEEDED",
        "error": None,
        "stages_completed": ["parse", "compile", "codegen", "execute", "train"],
        "duration_ms": 93_512,
    },
    "ProgressReported": {
        **_common("0b6a6c1e-0000-4000-8000-000000000007", "stage.train"),
        "stage": "train",
        "attempt": 1,
        "percent": 42.5,
        "message": "epoch 2/3, batch 120/938",
        "epoch": 2,
        "epochs": 3,
        "step": 120,
        "steps": 938,
        "eta_s": 31.5,
        "samples_per_s": 2048.0,
        "loss": 0.25,
    },
    "LogEmitted": {
        **_common("0b6a6c1e-0000-4000-8000-000000000008", "stage.execute"),
        "stage": "execute",
        "attempt": 1,
        "level": "WARNING",
        "stream": "stderr",
        "message": "UserWarning: TypedStorage is deprecated — ünïcode survives",
    },
    "MetricRecorded": {
        **_common("0b6a6c1e-0000-4000-8000-000000000009", "stage.train"),
        "stage": "train",
        "attempt": 1,
        "name": "loss",
        "value": 0.3141,
        "step": 1_200,
        "labels": {"split": "validation"},
    },
    "ArtifactStored": {
        **_common("0b6a6c1e-0000-4000-8000-00000000000a", "stage.codegen"),
        "stage": "codegen",
        "attempt": 1,
        "name": "model.py",
        "media_type": "text/x-python",
        "uri": None,
        "size_bytes": len(MODEL_PY),
        "sha256": hashlib.sha256(MODEL_PY).hexdigest(),
        "content": MODEL_PY,
    },
    "CancelRequested": {
        **_common("0b6a6c1e-0000-4000-8000-00000000000b", "api"),
        "reason": "user pressed stop",
    },
    "DeadLetter": {
        **_common("0b6a6c1e-0000-4000-8000-00000000000c", "stage.compile"),
        "job_id": "",
        "source_topic": "stagecast.stage.compile",
        "source_partition": 3,
        "source_offset": 18_446,
        "key": None,
        "value": b"\xc3\x01\x00\x01\x02\x03\x04\x05\x06\x07garbage",
        "reason": "schema fingerprint 0001020304050607 matches no known event type",
        "error_code": "UNKNOWN_FINGERPRINT",
    },
}

EVENT_TYPES = sorted(_SAMPLES)


def sample(event_type: str) -> dict[str, Any]:
    """A fresh copy, so a test can change it without touching the others."""
    return copy.deepcopy(_SAMPLES[event_type])
