"""The demo's reading of what each bundled example should end as."""

from __future__ import annotations

from streams.demo import DemoJob, bundled_jobs, expectation


def test_expect_comments_name_codes_and_line() -> None:
    assert expectation("# expect: DSL_SHAPE at line 7 (why)\nnetwork X {}") == (("DSL_SHAPE",), 7)
    assert expectation("# expect: DSL_BAD_PARAM or DSL_SHAPE error\n") == (
        ("DSL_BAD_PARAM", "DSL_SHAPE"),
        None,
    )
    assert expectation("network X {}") == ((), None)
    assert expectation("") == ((), None)


def test_a_job_is_as_expected_only_with_the_right_code_and_line() -> None:
    job = DemoJob("x", "", expected_codes=("DSL_SHAPE",), expected_line=7)
    job.outcome, job.line = "FAILED DSL_SHAPE", 7
    assert job.as_expected
    job.line = 6
    assert not job.as_expected
    job.outcome, job.line = "SUCCEEDED", None
    assert not job.as_expected


def test_bundled_jobs_cover_valid_invalid_and_a_training() -> None:
    jobs = bundled_jobs()
    assert any(not job.expected_codes for job in jobs)
    assert all(job.expected_codes for job in jobs if job.title.startswith("invalid/"))
    assert any(job.stages == ("train",) and not job.expected_codes for job in jobs)


def test_bundled_jobs_run_programs_and_a_model_in_the_sandbox() -> None:
    jobs = bundled_jobs()
    programs = [job for job in jobs if job.code is not None]
    assert {job.language for job in programs} >= {None, "c"}
    assert any(job.expected_codes == ("CPU_LIMIT",) for job in programs)
    assert any("execute" in job.stages and not job.expected_codes for job in jobs)
