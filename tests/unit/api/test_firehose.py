"""The firehose's filters, read from a query string."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import schemas
from api.errors import ApiError
from api.firehose import FEED_EVENT_TYPES, MAX_FILTER_VALUES, FirehoseFilter, firehose_filter


def _refusal(params: list[tuple[str, str]]) -> ApiError:
    with pytest.raises(ApiError) as raised:
        firehose_filter(params)
    assert raised.value.status == 400
    return raised.value


def test_no_parameters_pass_everything() -> None:
    assert firehose_filter([]) == FirehoseFilter()
    assert FirehoseFilter().where(4) == ("TRUE", [])


def test_repeated_and_comma_separated_values_add_up_once_each() -> None:
    job = uuid.uuid4()
    wanted = firehose_filter(
        [
            ("type", "StageChanged,JobFinished"),
            ("type", "StageChanged"),
            ("stage", "parse"),
            ("stage", "train,parse"),
            ("job", str(job)),
            ("job", str(job).upper()),
            ("after", "7"),
        ]
    )
    assert wanted.types == ("StageChanged", "JobFinished")
    assert wanted.stages == ("parse", "train")
    assert wanted.jobs == (job,)


def test_a_tenant_may_hold_a_comma() -> None:
    wanted = firehose_filter([("tenant", "acme, inc."), ("tenant", "b")])
    assert wanted.tenants == ("acme, inc.", "b")


def test_conditions_number_their_parameters_from_the_first_given() -> None:
    job = uuid.uuid4()
    wanted = FirehoseFilter(tenants=("a",), stages=("parse",), jobs=(job,))
    assert wanted.where(4) == (
        "payload->>'tenant' = ANY($4::text[]) AND stage = ANY($5::text[]) "
        "AND job_id = ANY($6::uuid[])",
        [["a"], ["parse"], [job]],
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("type", "JobRequested")], "JobRequested"),
        ([("type", "StageChanged,")], ""),
        ([("stage", "deploy")], "deploy"),
        ([("types", "StageChanged")], "types"),
    ],
)
def test_unknown_values_and_parameters_are_named(params: list[tuple[str, str]], named: str) -> None:
    refusal = _refusal(params)
    assert refusal.code == "INVALID_QUERY"
    assert named in refusal.details["unknown"]


@pytest.mark.parametrize("tenant", ["", "a\x00b", "line\nbreak", "x" * 101])
def test_tenants_that_no_job_can_have_are_refused(tenant: str) -> None:
    assert _refusal([("tenant", tenant)]).code == "INVALID_QUERY"


def test_a_job_that_is_no_uuid_is_refused() -> None:
    refusal = _refusal([("job", f"{uuid.uuid4()},nope")])
    assert refusal.details == {"given": "nope"}


def test_too_many_values_are_refused() -> None:
    refusal = _refusal([("job", ",".join(str(uuid.uuid4()) for _ in range(MAX_FILTER_VALUES + 1)))])
    assert refusal.details == {"given": MAX_FILTER_VALUES + 1}


def test_a_lone_surrogate_is_quoted_escaped() -> None:
    refusal = _refusal([("stage", "\ud800")])
    assert refusal.details["unknown"] == ["\\ud800"]


def test_every_feed_event_type_has_a_schema() -> None:
    folder = Path(schemas.__file__).parent
    assert [name for name in FEED_EVENT_TYPES if not (folder / f"{name}.avsc").exists()] == []
