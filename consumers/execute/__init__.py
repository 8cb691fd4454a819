"""The execute stage: runs generated or user code in a contained subprocess, streaming output."""

from consumers.execute.limits import RunLimits, RunResult, SandboxError, Violation
from consumers.execute.sandbox import OnOutput, Sandbox

__all__ = ["OnOutput", "RunLimits", "RunResult", "Sandbox", "SandboxError", "Violation"]
