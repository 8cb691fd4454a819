"""`stagecast demo` against the running pipeline: every bundled example ends as it should."""

from __future__ import annotations

import pytest

from streams.demo import run_demo
from tests.conftest import Pipeline

pytestmark = pytest.mark.integration


async def test_every_bundled_example_ends_the_way_it_should(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(pipeline.api_url, echo=False)
    out = capsys.readouterr().out
    assert "jobs ended the way they should" in out
    assert " BAD " not in out  # the mark of a row that ended otherwise
