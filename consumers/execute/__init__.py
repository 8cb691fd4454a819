"""The execute stage: runs generated or user code in a contained subprocess, streaming output."""

from consumers.execute.limits import RunLimits, RunResult, SandboxError, Violation

__all__ = ["RunLimits", "RunResult", "SandboxError", "Violation"]
