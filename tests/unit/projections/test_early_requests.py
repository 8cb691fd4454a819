"""When a consistent cut reads requests past its time: while an answer lacks its own."""

from __future__ import annotations

import uuid
from typing import Any

from projections.batch import Batch
from projections.precedence import Precedence
from projections.projector import _EarlyRequests
from schemas.codec import default_codec
from tests.unit.schemas.sample_events import sample

CODEC = default_codec()


def accepted(job_id: str) -> bytes:
    return CODEC.encode("JobAccepted", fresh("JobAccepted", job_id))


def requested(job_id: str) -> bytes:
    return CODEC.encode("JobRequested", fresh("JobRequested", job_id))


def fresh(event_type: str, job_id: str) -> dict[str, Any]:
    return sample(event_type) | {"event_id": str(uuid.uuid4()), "job_id": job_id}


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
