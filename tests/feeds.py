"""What a causal feed is, checked on what the projector wrote (shared by integration tests)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

PROGRESS = ("ProgressReported", "LogEmitted", "MetricRecorded", "ArtifactStored")
Feed = list[tuple[str, dict[str, Any]]]


def causal_problems(feed: Feed) -> list[str]:
    """What is out of causal order or repeated in one job's feed (empty when all is well)."""
    problems = []
    types = [kind for kind, _ in feed]
    if not types or types[0] not in ("JobAccepted", "JobRejected"):
        problems.append(f"starts with {types[:1]}")
    if types.count("JobFinished") + types.count("JobRejected") != 1:
        problems.append("not exactly one end")
    elif types[-1] not in ("JobFinished", "JobRejected"):
        problems.append(f"ends with {types[-1]}")
    seen: set[tuple[str, ...]] = set()
    opened: set[tuple[str, int]] = set()
    closed: set[tuple[str, int]] = set()
    for kind, data in feed:
        attempt = (str(data.get("stage")), int(data.get("attempt") or 0))
        if kind == "StageChanged":
            mark = (kind, *map(str, attempt), str(data["status"]))
            if mark in seen:
                problems.append(f"repeated {mark}")
            seen.add(mark)
            if data["status"] == "STARTED":
                opened.add(attempt)
            elif attempt not in opened:
                problems.append(f"{attempt} ended before it started")
            else:
                closed.add(attempt)
        elif kind in PROGRESS and (attempt not in opened or attempt in closed):
            problems.append(f"{kind} of {attempt} outside its attempt")
    return problems


async def feeds(database_url: str, job_ids: list[str]) -> dict[str, Feed]:
    """Each job's feed (type, payload) in seq order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, type, payload FROM job_events WHERE job_id = ANY($1::uuid[]) "
            "ORDER BY seq",
            [uuid.UUID(j) for j in job_ids],
        )
    finally:
        await conn.close()
    out: dict[str, Feed] = {j: [] for j in job_ids}
    for row in rows:
        out[str(row["job_id"])].append((row["type"], json.loads(row["payload"])))
    return out
