"""Planning and validating job requests, without Kafka."""

from __future__ import annotations

import json
import uuid
from typing import Any

from streams.dispatcher import (
    Rejection,
    decide,
    job_id_for,
    job_spec,
    plan_job,
    request_digest,
)
from streams.settings import Settings

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": str(uuid.uuid4()),
        "tenant": "acme",
        "kind": "MODEL",
        "dsl": "network N { }",
        "code": None,
        "target": "pytorch",
        "stages": [],
        "train": None,
        "limits": None,
        "labels": {},
        "idempotency_key": None,
    }
    base.update(fields)
    return base


def rejected(outcome: object) -> str:
    assert isinstance(outcome, Rejection)
    return outcome.code


def test_model_job_runs_parse_compile_codegen() -> None:
    assert plan_job(request(), SETTINGS) == ("parse", "compile", "codegen")


def test_extra_stages_come_after_codegen_in_pipeline_order() -> None:
    everything = SETTINGS.model_copy(
        update={"enabled_stages": ("parse", "compile", "codegen", "execute", "train")}
    )
    plan = plan_job(request(stages=["train", "execute"]), everything)
    assert plan == ("parse", "compile", "codegen", "execute", "train")


def test_stages_not_enabled_are_unavailable() -> None:
    no_train = SETTINGS.model_copy(
        update={"enabled_stages": ("parse", "compile", "codegen", "execute")}
    )
    assert rejected(plan_job(request(stages=["train"]), no_train)) == "STAGE_UNAVAILABLE"
    assert plan_job(request(stages=["train"]), SETTINGS) == ("parse", "compile", "codegen", "train")
    no_execute = SETTINGS.model_copy(update={"enabled_stages": ("parse", "compile", "codegen")})
    code_job = request(kind="CODE", dsl=None, code="print(1)")
    assert rejected(plan_job(code_job, no_execute)) == "STAGE_UNAVAILABLE"
    assert plan_job(code_job, SETTINGS) == ("execute",)


def test_bad_requests_are_rejected_with_a_code() -> None:
    assert rejected(plan_job(request(stages=["deploy"]), SETTINGS)) == "UNKNOWN_STAGE"
    assert rejected(plan_job(request(target="jax"), SETTINGS)) == "TARGET_UNSUPPORTED"
    assert rejected(plan_job(request(dsl=None), SETTINGS)) == "INVALID_REQUEST"
    assert rejected(plan_job(request(code="x"), SETTINGS)) == "INVALID_REQUEST"
    assert rejected(plan_job(request(train="[1]"), SETTINGS)) == "INVALID_REQUEST"
    assert rejected(plan_job(request(train="{oops"), SETTINGS)) == "INVALID_REQUEST"
    code_with_model_stage = request(kind="CODE", dsl=None, code="x", stages=["parse"])
    assert rejected(plan_job(code_with_model_stage, SETTINGS)) == "INVALID_REQUEST"


def test_oversized_dsl_is_refused() -> None:
    small = SETTINGS.model_copy(update={"max_dsl_bytes": 10})
    assert rejected(plan_job(request(dsl="#" * 11), small)) == "REQUEST_TOO_LARGE"
    assert plan_job(request(dsl="#" * 10), small) == ("parse", "compile", "codegen")


def test_keyed_request_must_carry_the_derived_job_id() -> None:
    keyed = request(idempotency_key="k1")
    assert rejected(plan_job(keyed, SETTINGS)) == "IDEMPOTENCY_KEY_MISMATCH"
    keyed["job_id"] = job_id_for("acme", "k1")
    assert plan_job(keyed, SETTINGS) == ("parse", "compile", "codegen")


def test_job_ids_from_keys_depend_on_tenant_and_key() -> None:
    assert job_id_for("a", "k") == job_id_for("a", "k")
    assert job_id_for("a", "k") != job_id_for("b", "k")
    assert job_id_for("a", "k") != job_id_for("a", "k2")


def test_accepted_job_publishes_accepted_then_the_first_command() -> None:
    given = request(train=json.dumps({"epochs": 2}), labels={"team": "ml"})
    accepted, command = decide(given, SETTINGS, "test")
    assert (accepted.topic, accepted.event_type) == (SETTINGS.topics.events, "JobAccepted")
    assert (command.topic, command.event_type) == (SETTINGS.topics.stage("parse"), "StageCommand")
    assert command.record["plan"] == ["parse", "compile", "codegen"]
    assert json.loads(command.record["spec"]) == job_spec(given)
    assert json.loads(command.record["spec"])["train"] == {"epochs": 2}


def test_the_same_request_twice_gives_the_same_event_ids() -> None:
    given = request()
    first = [o.record["event_id"] for o in decide(given, SETTINGS, "test")]
    again = [o.record["event_id"] for o in decide(given, SETTINGS, "test")]
    assert first == again


def test_code_jobs_name_a_known_language_or_default_to_python() -> None:
    everything = SETTINGS.model_copy(
        update={"enabled_stages": ("parse", "compile", "codegen", "execute", "train")}
    )
    for language in (None, "python", "c", "javascript"):
        job = request(kind="CODE", dsl=None, code="x", language=language)
        assert plan_job(job, everything) == ("execute",)
    cobol = request(kind="CODE", dsl=None, code="x", language="cobol")
    assert rejected(plan_job(cobol, everything)) == "LANGUAGE_UNSUPPORTED"


def test_unset_v2_request_fields_leave_the_digest_of_a_v1_request_unchanged() -> None:
    v1 = request()
    assert request_digest(v1) == request_digest(v1 | {"language": None, "stdin": None})
    assert request_digest(v1) != request_digest(v1 | {"stdin": "1\n"})


def test_limits_above_the_deployments_maxima_are_rejected_with_the_maxima() -> None:
    small = SETTINGS.model_copy(update={"execute_max_wall_s": 30.0, "execute_max_memory_mib": 1024})
    code = request(kind="CODE", dsl=None, code="x")
    fine = code | {"limits": {"timeout_seconds": 30, "memory_mb": 1024, "cpu_seconds": None}}
    assert plan_job(fine, small) == ("execute",)
    greedy = code | {"limits": {"timeout_seconds": 31, "memory_mb": 4096, "cpu_seconds": 1}}
    outcome = plan_job(greedy, small)
    assert isinstance(outcome, Rejection) and outcome.code == "LIMIT_TOO_HIGH"
    assert outcome.details == {"maximum": {"timeout_seconds": 30.0, "memory_mb": 1024}}
