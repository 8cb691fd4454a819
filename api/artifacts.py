"""A job's artifacts: the list, and downloads whose bytes are checked against their sha256.

Small artifacts travel inline and are served from the `artifacts` row. Large ones are files a
worker wrote into the artifact directory (`Settings.artifact_root()`), named by a `file://`
URI or by a URL under STAGECAST_ARTIFACT_URL (the same directory, as clients reach it); the
API serves nothing else and no file outside that directory, wherever a symlink or `..` would
lead.

A file is verified before its answer starts: its size and SHA-256 must be the recorded ones,
or the answer is 502 ARTIFACT_CORRUPT. It is then streamed from the same open file, hashed
again on the way, and its last chunk is held back until the hash matches: a file changed
during the download breaks the connection short of Content-Length, so a client never gets a
complete body that differs from the recorded hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import asyncpg
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.errors import ApiError
from api.feed import parse_job_id
from api.jobs import latest_run_first, require_known_job
from api.tenancy import own_tenant, visible_to
from api.views import ArtifactList, json_answer
from streams.settings import STAGES, Settings

CHUNK_BYTES = 256 * 1024
MAX_NAME_LENGTH = 1024
# A media type as `type/subtype` with optional parameters, all printable ASCII (no CR or LF).
_MEDIA_TYPE = re.compile(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+(;[ -~]*)?", re.ASCII)
_FALLBACK_MEDIA_TYPE = "application/octet-stream"

log = logging.getLogger(__name__)

_COLUMNS = "name, media_type, uri, size_bytes, sha256, stage, attempt, occurred_at"
# One row per name: the attempt that counts.
_LATEST = (
    f"SELECT DISTINCT ON (name) {_COLUMNS} FROM artifacts "
    f"WHERE job_id = $1 AND {visible_to('$1', '$3::text')} "
    f"ORDER BY name, {latest_run_first('$2')}, occurred_at DESC, event_id DESC"
)
_ONE = (
    f"SELECT {_COLUMNS}, content FROM artifacts "
    f"WHERE job_id = $1 AND name = $3 AND {visible_to('$1', '$4::text')} "
    f"ORDER BY {latest_run_first('$2')}, occurred_at DESC, event_id DESC LIMIT 1"
)


class ArtifactNameConvertor(Convertor[str]):
    """The rest of the path, whatever it holds: Starlette's `path` (".*") stops at a line
    break, so a name holding one missed the route (a bare 404 NOT_FOUND) instead of meeting
    `artifact_name`'s 400 INVALID_ARTIFACT_NAME."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# The route's path names it: /jobs/{job_id}/artifacts/{name:artifact_name}.
register_url_convertor("artifact_name", ArtifactNameConvertor())


class ArtifactChanged(Exception):
    """A file's bytes stopped matching its sha256 while it was being sent."""


def unavailable(reason: str, message: str) -> ApiError:
    return ApiError(502, "ARTIFACT_UNAVAILABLE", message, {"reason": reason})


def corrupt(reason: str, expected: object, actual: object) -> ApiError:
    return ApiError(
        502,
        "ARTIFACT_CORRUPT",
        "the artifact's bytes are not the ones recorded",
        {"reason": reason, "expected": expected, "actual": actual},
    )


def artifact_name(raw: str) -> str:
    """A name from the path: 1 to 1024 printable characters (no NUL, no line break)."""
    if not 0 < len(raw) <= MAX_NAME_LENGTH or not raw.isprintable():
        raise ApiError(
            400,
            "INVALID_ARTIFACT_NAME",
            f"an artifact name is 1 to {MAX_NAME_LENGTH} printable characters",
            {"given": raw[:64]},
        )
    return raw


def download_path(job_id: str, name: str) -> str:
    return f"/jobs/{job_id}/artifacts/{quote(name, safe='')}"


def file_uri_path(uri: str) -> Path:
    """The absolute local path a `file://` URI names (as `Path.as_uri()` writes them)."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        raise unavailable(
            "unsupported_scheme",
            f"artifacts are served from file:// URIs only, not {parts.scheme[:20]!r}",
        )
    if parts.netloc not in ("", "localhost"):
        raise unavailable("remote_file", "the artifact is a file on another host")
    path = os.fsdecode(unquote_to_bytes(parts.path))
    if parts.query or parts.fragment or not path.startswith("/") or "\x00" in path:
        raise unavailable("invalid_uri", "the artifact's file:// URI names no absolute path")
    return Path(path)


def store_path(uri: str, root: Path, base_url: str | None) -> Path:
    """The local path of an artifact named by `file://` URI, or by a URL under the artifact
    store's `base_url` (STAGECAST_ARTIFACT_URL), which names a path under `root`."""
    if base_url is not None:
        prefix = base_url.rstrip("/") + "/"
        if uri.startswith(prefix):
            relative = os.fsdecode(unquote_to_bytes(uri[len(prefix) :]))
            if not relative or "\x00" in relative or any(c in uri for c in "?#"):
                raise unavailable("invalid_uri", "the artifact's URL names no file in the store")
            return root / relative
    return file_uri_path(uri)


def locate(uri: str, root: Path, base_url: str | None = None) -> Path:
    """The file behind `uri` with its symlinks resolved, if it lies inside `root`.

    Containment is checked before existence, so nothing says whether a file outside exists.
    """
    try:
        resolved = store_path(uri, root, base_url).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise unavailable("unreadable", "the artifact's file cannot be read") from None
    if not resolved.is_relative_to(root):
        raise unavailable("outside_artifact_dir", "the artifact is not in the artifact directory")
    return resolved


def _open_no_follow(path: str, flags: int) -> int:
    # O_NOFOLLOW: a symlink put in place since locate() is refused, not followed.
    # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def open_verified(
    uri: str, root: Path, size_bytes: int, sha256: str, base_url: str | None = None
) -> IO[bytes]:
    """The artifact's file, open at its start, once its size and SHA-256 are the recorded ones."""
    path = locate(uri, root, base_url)
    try:
        file = open(path, "rb", opener=_open_no_follow)  # noqa: SIM115 (returned open)
    except FileNotFoundError:
        raise unavailable("missing", "the artifact's file is gone") from None
    except IsADirectoryError:
        raise unavailable("not_a_file", "the artifact's path is not a regular file") from None
    except OSError:
        raise unavailable("unreadable", "the artifact's file cannot be read") from None
    try:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise unavailable("not_a_file", "the artifact's path is not a regular file")
        if info.st_size != size_bytes:
            raise corrupt("size", size_bytes, info.st_size)
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        if digest != sha256:
            raise corrupt("sha256", sha256, digest)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file


async def verified_chunks(file: IO[bytes], size_bytes: int, sha256: str) -> AsyncIterator[bytes]:
    """The first `size_bytes` of `file`, the last chunk sent only once the whole matches `sha256`.

    ArtifactChanged, raised instead of the last chunk, ends the answer short of its length.
    """
    try:
        digest = hashlib.sha256()
        held = b""
        remaining = size_bytes
        while remaining > 0:
            chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            digest.update(chunk)
            if held:
                yield held
            held = chunk
        if remaining or digest.hexdigest() != sha256:
            raise ArtifactChanged(f"{file.name} changed while it was being sent")
        if held:
            yield held
    finally:
        file.close()


def media_type(recorded: str) -> str:
    """The recorded media type when it is one; a header must not carry anything else."""
    return recorded if _MEDIA_TYPE.fullmatch(recorded) else _FALLBACK_MEDIA_TYPE


def content_disposition(name: str) -> str:
    """An attachment named after the artifact's last path segment (RFC 6266, RFC 5987)."""
    base = name.rsplit("/", 1)[-1] or "artifact"
    plain = "".join(
        char if char.isascii() and char.isprintable() and char not in '"\\' else "_"
        for char in base
    )
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(base, safe='')}"


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weakly compared, as RFC 9110 says)."""
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", etag) for tag in candidates)


def _artifact_view(job_id: str, row: asyncpg.Record, base_url: str | None) -> dict[str, Any]:
    links = {"download": download_path(job_id, row["name"])}
    uri = row["uri"]
    if base_url is not None and uri and uri.startswith(base_url.rstrip("/") + "/"):
        # Where clients reach the file in the store itself (a file:// URI is not shown).
        links["store"] = uri
    return {
        "name": row["name"],
        "media_type": row["media_type"],
        "size_bytes": row["size_bytes"],
        "sha256": row["sha256"],
        "stage": row["stage"],
        "attempt": row["attempt"],
        "created_at": row["occurred_at"].isoformat(),
        "links": links,
    }


async def list_artifacts(request: Request) -> JSONResponse:
    job_id = parse_job_id(request.path_params["job_id"])
    pool: asyncpg.Pool = request.app.state.pool
    tenant = own_tenant(request)
    rows = await pool.fetch(_LATEST, job_id, list(STAGES), tenant)
    if not rows:
        await require_known_job(pool, job_id, tenant)
    text = str(job_id)
    base_url = request.app.state.settings.artifact_url
    views = [_artifact_view(text, row, base_url) for row in rows]
    return json_answer(ArtifactList, {"job_id": text, "artifacts": views})


async def download_artifact(request: Request) -> Response:
    job_id = parse_job_id(request.path_params["job_id"])
    name = artifact_name(request.path_params["name"])
    state = request.app.state
    pool: asyncpg.Pool = state.pool
    tenant = own_tenant(request)
    row = await pool.fetchrow(_ONE, job_id, list(STAGES), name, tenant)
    if row is None:
        await require_known_job(pool, job_id, tenant)
        raise ApiError(
            404,
            "ARTIFACT_NOT_FOUND",
            "the job has no artifact of that name",
            {"job_id": str(job_id), "name": name},
        )
    sha256, size_bytes = row["sha256"], row["size_bytes"]
    etag = f'"{sha256}"'
    if etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers={"ETag": etag})
    headers = {
        "Content-Type": media_type(row["media_type"]),
        "Content-Length": str(size_bytes),
        "ETag": etag,
        "Content-Disposition": content_disposition(name),
        "X-Content-Type-Options": "nosniff",
    }
    content, uri = row["content"], row["uri"]
    if content or not uri:
        if content is None:
            raise unavailable("no_content", "the artifact has neither content nor a URI")
        if len(content) != size_bytes:
            raise corrupt("size", size_bytes, len(content))
        digest = hashlib.sha256(content).hexdigest()
        if digest != sha256:
            raise corrupt("sha256", sha256, digest)
        return Response(b"" if request.method == "HEAD" else content, headers=headers)
    settings: Settings = state.settings
    try:
        file = await asyncio.to_thread(
            open_verified, uri, settings.artifact_root(), size_bytes, sha256, settings.artifact_url
        )
    except ApiError as error:
        log.warning("artifact %r of job %s at %r: %s", name, job_id, uri, error.details)
        raise
    if request.method == "HEAD":
        file.close()
        return Response(headers=headers)
    return StreamingResponse(verified_chunks(file, size_bytes, sha256), headers=headers)
