"""When a consistent cut reads requests past its time: while an answer lacks its own."""

from __future__ import annotations

import uuid
from typing import Any

from projections.batch import Batch
from projections.precedence import Precedence
from projections.projector import _EarlyRequests
from schemas.codec import default_codec

CODEC = default_codec()


def record(job_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "job_id": job_id,
        "tenant": "acme",
        "occurred_at": 1_700_000_000_000,
        "source": "test",
        **fields,
    }


def accepted(job_id: str) -> bytes:
    fields = {"kind": "MODEL", "target": "pytorch", "stages": ["parse"], "idempotency_key": None}
    return CODEC.encode("JobAccepted", record(job_id, **fields))


def requested(job_id: str) -> bytes:
    fields: dict[str, Any] = {
        "kind": "MODEL",
        "dsl": "network X {}",
        "code": None,
        "language": None,
        "stdin": None,
        "target": "pytorch",
        "stages": [],
        "train": None,
        "limits": None,
        "labels": {},
        "idempotency_key": None,
    }
    return CODEC.encode("JobRequested", record(job_id, **fields))


def test_an_answer_lacks_its_request_until_the_request_is_taken() -> None:
    first, second, other = (str(uuid.uuid4()) for _ in range(3))
    batch = Batch(CODEC)
    batch.add("events", 0, 0, accepted(first))
    early = _EarlyRequests(batch, Precedence())
    assert early.lacking()
    early.take(batch.stage("requests", 0, 0, requested(other)))
    assert early.lacking()
    early.take(batch.stage("requests", 0, 1, requested(first)))
    assert not early.lacking()
    assert len(batch.rows) == 3
    # An answer read since lacks its request again.
    batch.add("events", 0, 1, accepted(second))
    assert early.lacking()
    early.take(batch.stage("requests", 0, 2, requested(second)))
    assert not early.lacking()


def test_an_answer_whose_request_an_earlier_batch_took_lacks_none() -> None:
    job = str(uuid.uuid4())
    earlier = Batch(CODEC)
    earlier.add("requests", 0, 0, requested(job))
    precedence = Precedence()
    precedence.note(earlier.rows)
    batch = Batch(CODEC)
    batch.add("events", 0, 0, accepted(job))
    assert not _EarlyRequests(batch, precedence).lacking()
