"""`stagecast demo`: the bundled examples through every available stage, followed over SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.client import ApiRequestError, StagecastClient
from streams.launcher import Launcher

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
JOB_TIMEOUT_S = 120.0
_EXPECT = re.compile(r"#\s*expect:(?P<text>.*)")


@dataclass
class DemoJob:
    """One submission and what it should end as."""

    title: str
    dsl: str
    expected_codes: tuple[str, ...] = ()
    expected_line: int | None = None
    stages: tuple[str, ...] = ()
    # A CODE job: the program, its language and limits (dsl stays empty).
    code: str | None = None
    language: str | None = None
    limits: dict[str, int] | None = None
    first_line: str | None = None
    job_id: str = ""
    outcome: str = "-"
    line: int | None = None
    detail: str = ""
    transitions: list[str] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def expected(self) -> str:
        if self.expected_codes:
            return "FAILED " + "|".join(self.expected_codes)
        return "SUCCEEDED"

    @property
    def as_expected(self) -> bool:
        if not self.expected_codes:
            return self.outcome == "SUCCEEDED"
        if self.expected_line is not None and self.line != self.expected_line:
            return False
        return self.outcome.startswith("FAILED ") and self.outcome.split()[1] in self.expected_codes


def expectation(source: str) -> tuple[tuple[str, ...], int | None]:
    """The codes and line an invalid example's first comment names."""
    first = source.splitlines()[0] if source else ""
    match = _EXPECT.match(first.strip())
    if match is None:
        return (), None
    text = match.group("text")
    codes = tuple(re.findall(r"\bDSL_[A-Z_]+\b", text))
    line = re.search(r"\bline[s]?\s+(\d+)", text)
    return codes, int(line.group(1)) if line else None


def bundled_jobs(examples: Path = EXAMPLES) -> list[DemoJob]:
    jobs = [DemoJob(path.stem, path.read_text()) for path in sorted(examples.glob("*.neural"))]
    for path in sorted((examples / "invalid").glob("*.neural")):
        source = path.read_text()
        codes, line = expectation(source)
        jobs.append(DemoJob(f"invalid/{path.stem}", source, codes, line))
    digits = examples / "digits_cnn.neural"
    if digits.exists():
        jobs.append(DemoJob("digits_cnn +execute", digits.read_text(), stages=("execute",)))
        # Trained for real, as its train { } block says (8 epochs on scikit-learn's digits).
        jobs.append(DemoJob("digits_cnn +train", digits.read_text(), stages=("train",)))
    jobs += [
        DemoJob("CODE python", "", code=PYTHON_PROGRAM),
        DemoJob("CODE c", "", code=C_PROGRAM, language="c"),
        DemoJob(
            "CODE python, 1 s of CPU",
            "",
            ("CPU_LIMIT",),
            code="while True:\n    pass\n",
            limits={"cpu_seconds": 1},
        ),
    ]
    return jobs


PYTHON_PROGRAM = "import sys\nprint(f'hello from python {sys.version.split()[0]}')\n"
C_PROGRAM = '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n'


async def follow_safely(client: StagecastClient, job: DemoJob, echo: bool) -> None:
    """One job, bounded in time; whatever goes wrong shows in its row of the summary."""
    try:
        async with asyncio.timeout(JOB_TIMEOUT_S):
            await follow(client, job, echo)
    except Exception as error:
        job.outcome = f"ERROR {type(error).__name__}"
        job.detail = str(error)[:70]


async def follow(client: StagecastClient, job: DemoJob, echo: bool) -> None:
    started = time.monotonic()
    try:
        if job.code is not None:
            accepted = await client.submit(
                kind="CODE", code=job.code, language=job.language, limits=job.limits
            )
        else:
            accepted = await client.submit(job.dsl, stages=job.stages)
    except ApiRequestError as error:
        job.outcome = f"refused {error.body.get('error_code')}"
        job.detail = str(error.body.get("error"))
        job.seconds = time.monotonic() - started
        if echo:
            print(f"  {job.title:<34} refused: {job.outcome.split()[1]} ({job.detail})")
        return
    job.job_id = accepted["job_id"]
    async for event in client.events(job.job_id):
        data: dict[str, Any] = event.data
        if event.type == "LogEmitted" and job.first_line is None:
            job.first_line = str(data["message"])[:60]
        if event.type == "MetricRecorded" and data["name"] == "val_accuracy":
            job.epochs.append(float(data["value"]))
            if echo:
                print(f"  {job.title:<34} epoch {data['step']}: val_accuracy {data['value']:.3f}")
        if event.type == "StageChanged":
            step = f"{data['stage']} {data['status']}"
            job.transitions.append(step)
            if echo:
                print(f"  {job.title:<34} {step}")
        elif event.type in ("JobFinished", "JobRejected"):
            failure = data.get("error")
            status = data.get("status", "REJECTED")
            if failure:
                job.outcome = f"{status} {failure['code']}"
                details = json.loads(failure.get("details") or "{}")
                job.line = details.get("line")
                where = f"line {job.line}: " if job.line else ""
                job.detail = f"{where}{failure['message']}"[:70]
            else:
                job.outcome = status
            if echo:
                print(f"  {job.title:<34} {event.type} {job.outcome}")
    if job.outcome == "SUCCEEDED":
        view = await client.job(job.job_id)
        done = {s["stage"]: s.get("summary") or {} for s in view["stages"]}
        if "compile" in done:
            job.detail = f"{done['compile'].get('total_params')} params"
        if "execute" in done and job.code is None:
            ran = done["execute"]
            job.detail += f"; {ran.get('ms_per_batch')} ms per batch of {ran.get('batch')}"
        elif job.first_line is not None:
            job.detail = f"printed {job.first_line!r}"
        if "train" in done:
            trained = done["train"]
            files = len(await client.artifacts(job.job_id))
            job.detail = (
                f"val_accuracy {trained['final'].get('val_accuracy', 0):.3f} after "
                f"{trained.get('epochs_done')} epochs; {files} artifacts"
            )
    job.seconds = time.monotonic() - started


def print_summary(jobs: list[DemoJob]) -> None:
    print()
    header = f"{'job':<34} {'expected':<28} {'outcome':<28} {'time':>6}  detail"
    print(header)
    print("-" * len(header))
    for job in jobs:
        mark = "ok " if job.as_expected else "BAD"
        print(
            f"{job.title:<34} {job.expected:<28} {job.outcome:<28} {job.seconds:5.2f}s  "
            f"{mark} {job.detail}"
        )
    good = sum(job.as_expected for job in jobs)
    print(f"\n{good}/{len(jobs)} jobs ended the way they should.")


async def _watch_children(launcher: Launcher) -> None:
    """Fail the demo at once if a process of the stack dies, instead of waiting forever."""
    while True:
        for name, proc in launcher.children.items():
            if proc.poll() is not None:
                log = launcher.state_dir / f"{name}.log"
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
        await asyncio.sleep(0.5)


async def run_demo(
    api_url: str,
    echo: bool = True,
    launcher: Launcher | None = None,
    api_key: str | None = None,
) -> bool:
    jobs = bundled_jobs()
    print(f"Submitting {len(jobs)} jobs to {api_url} and following each over SSE:\n")
    async with StagecastClient(api_url, api_key=api_key) as client:
        work: asyncio.Future[Any] = asyncio.gather(
            *(follow_safely(client, job, echo) for job in jobs)
        )
        if launcher is None:
            await work
        else:
            guard: asyncio.Future[Any] = asyncio.ensure_future(_watch_children(launcher))
            done, _ = await asyncio.wait({work, guard}, return_when=asyncio.FIRST_COMPLETED)
            if guard in done:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                guard.result()  # raises: which process died, and where its log is
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
    print_summary(jobs)
    return all(job.as_expected for job in jobs)
