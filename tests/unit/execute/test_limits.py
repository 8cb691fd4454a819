"""Run limits are positive plain values, with the defaults the execute stage relies on."""

from __future__ import annotations

import pytest

from consumers.execute.limits import RunLimits, Violation


def test_defaults() -> None:
    limits = RunLimits()
    assert (limits.wall_s, limits.cpu_s, limits.memory_mib, limits.processes) == (10.0, 10, 512, 32)
    assert (limits.output_kib, limits.file_mib, limits.open_files) == (1024, 64, 64)
    assert limits.output_bytes == 1024 * 1024
    # Far above what `import torch` reserves (about 640 MiB), so it never trips PyTorch.
    assert limits.address_space_mib == 8192


@pytest.mark.parametrize("field", ["wall_s", "cpu_s", "memory_mib", "processes", "output_kib"])
def test_a_limit_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RunLimits(**{field: 0})


def test_violations_are_their_names() -> None:
    assert [str(v) for v in Violation] == [
        "TIME_LIMIT",
        "CPU_LIMIT",
        "MEMORY_LIMIT",
        "PROCESS_LIMIT",
        "OUTPUT_LIMIT",
        "CANCELLED",
    ]
