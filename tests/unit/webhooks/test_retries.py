"""What each answer to a webhook attempt means, and how long a retry waits."""

from __future__ import annotations

import pytest

from projections.webhooks.retries import RetryPolicy, Settled, backoff_s, settle, worth_retrying

POLICY = RetryPolicy(max_attempts=5, base_s=2.0, max_s=60.0)


def test_backoff_doubles_per_attempt_within_half_to_whole_step() -> None:
    for attempt, step in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)):
        assert backoff_s(POLICY, attempt, 0.0) == step / 2
        assert backoff_s(POLICY, attempt, 0.999) == pytest.approx(step / 2 + step / 2 * 0.999)


def test_backoff_is_capped_even_for_huge_attempt_numbers() -> None:
    assert backoff_s(POLICY, 6, 0.999) <= 60.0
    assert backoff_s(POLICY, 10_000, 0.5) == 45.0


def test_jitter_spreads_retries_of_the_same_attempt() -> None:
    waits = {backoff_s(POLICY, 3, draw / 10) for draw in range(10)}
    assert len(waits) == 10
    assert min(waits) == 4.0 and max(waits) < 8.0


def test_a_2xx_delivers() -> None:
    for code in (200, 201, 202, 204, 299):
        assert settle(POLICY, 1, code, 0.5) == Settled("DELIVERED")


@pytest.mark.parametrize("code", [500, 502, 503, 504, 408, 429, None])
def test_server_errors_timeouts_and_no_answer_are_retried(code: int | None) -> None:
    assert worth_retrying(code)
    settled = settle(POLICY, 2, code, 0.0)
    assert settled == Settled("PENDING", 2.0)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 422, 301, 302, 100])
def test_other_answers_fail_at_once(code: int) -> None:
    assert not worth_retrying(code)
    assert settle(POLICY, 1, code, 0.5) == Settled("FAILED")


def test_the_last_attempt_gives_up() -> None:
    assert settle(POLICY, 4, 500, 0.5).status == "PENDING"
    assert settle(POLICY, 5, 500, 0.5) == Settled("FAILED")
    assert settle(POLICY, 5, None, 0.5) == Settled("FAILED")
    assert settle(POLICY, 5, 200, 0.5) == Settled("DELIVERED")
