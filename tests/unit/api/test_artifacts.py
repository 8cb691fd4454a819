"""Artifact downloads without a server: file:// URIs, the artifact directory, hashes, headers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.artifacts import (
    CHUNK_BYTES,
    ArtifactChanged,
    artifact_name,
    content_disposition,
    download_path,
    etag_matches,
    file_uri_path,
    locate,
    media_type,
    open_verified,
    verified_chunks,
)
from api.errors import ApiError
from streams.settings import Settings


def refused(error: pytest.ExceptionInfo[ApiError], code: str, reason: str) -> None:
    assert (error.value.status, error.value.code) == (502, code)
    assert error.value.details["reason"] == reason


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "artifacts"
    directory.mkdir()
    return directory.resolve()


def stored(root: Path, name: str, content: bytes) -> tuple[str, int, str]:
    """A file in the artifact directory: its URI, size and sha256."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path.as_uri(), len(content), hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(
    "path", ["/a/model.pt", "/a/with space/m%odèle.pt", "/a/#hash?.pt", "/"], ids=repr
)
def test_a_file_uri_names_the_path_it_was_made_from(path: str) -> None:
    assert file_uri_path(Path(path).as_uri()) == Path(path)


def test_localhost_is_this_host() -> None:
    assert file_uri_path("file://localhost/a/b") == Path("/a/b")
    assert file_uri_path("FILE:///a/b") == Path("/a/b")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://bucket/model.pt", "unsupported_scheme"),
        ("http://127.0.0.1:1/model.pt", "unsupported_scheme"),
        ("/a/model.pt", "unsupported_scheme"),
        ("file://fileserver/a/model.pt", "remote_file"),
        ("file:model.pt", "invalid_uri"),
        ("file:///a/model.pt?version=2", "invalid_uri"),
        ("file:///a/model.pt#x", "invalid_uri"),
        ("file:///a/mo%00del.pt", "invalid_uri"),
    ],
)
def test_other_uris_are_refused(uri: str, reason: str) -> None:
    with pytest.raises(ApiError) as error:
        file_uri_path(uri)
    refused(error, "ARTIFACT_UNAVAILABLE", reason)


def test_a_file_inside_the_artifact_directory_is_located(root: Path) -> None:
    uri, _, _ = stored(root, "job/model.pt", b"weights")
    assert locate(uri, root) == root / "job" / "model.pt"


STORE_URL = "https://artifacts.example/stagecast/"


def test_a_url_under_the_stores_address_names_a_file_in_the_artifact_directory(
    root: Path,
) -> None:
    stored(root, "job/train-1/model 1.pt", b"weights")
    settings = Settings(_env_file=None, artifact_dir=root, artifact_url=STORE_URL)  # type: ignore[call-arg]
    uri = settings.artifact_uri(root / "job" / "train-1" / "model 1.pt")
    assert uri == STORE_URL + "job/train-1/model%201.pt"
    assert locate(uri, root, STORE_URL) == root / "job" / "train-1" / "model 1.pt"
    # A file outside the directory keeps its file:// URI; without the setting, so do all.
    assert settings.artifact_uri(Path("/etc/passwd")) == "file:///etc/passwd"
    plain = Settings(_env_file=None, artifact_dir=root)  # type: ignore[call-arg]
    assert plain.artifact_uri(root / "a") == (root / "a").as_uri()


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (STORE_URL + "../secret.txt", "outside_artifact_dir"),
        (STORE_URL + "%2e%2e/secret.txt", "outside_artifact_dir"),
        (STORE_URL + "job/%00.pt", "invalid_uri"),
        (STORE_URL, "invalid_uri"),
        (STORE_URL + "job/model.pt?v=2", "invalid_uri"),
        ("https://elsewhere.example/stagecast/job/model.pt", "unsupported_scheme"),
    ],
)
def test_urls_of_the_store_cannot_lead_outside_it(root: Path, uri: str, reason: str) -> None:
    (root.parent / "secret.txt").write_text("secret")
    with pytest.raises(ApiError) as error:
        locate(uri, root, STORE_URL)
    refused(error, "ARTIFACT_UNAVAILABLE", reason)


def test_the_store_address_must_be_a_url() -> None:
    for wrong in ("artifacts.example/x", "ftp://artifacts.example/", "https://a.example/x?y"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, artifact_url=wrong)  # type: ignore[call-arg]


def test_paths_leading_outside_are_refused_before_looking_for_the_file(
    root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (root / "link.txt").symlink_to(secret)
    (root / "dir-link").symlink_to(tmp_path)
    outside = [
        secret.as_uri(),
        f"{root.as_uri()}/../secret.txt",
        (root / "link.txt").as_uri(),
        (root / "dir-link" / "secret.txt").as_uri(),
        # Missing and outside: said to be outside, so nothing tells what exists there.
        (tmp_path / "nothing-here").as_uri(),
        f"{root.as_uri()}-sibling/model.pt",
        "file:///etc/passwd",
    ]
    for uri in outside:
        with pytest.raises(ApiError) as error:
            locate(uri, root)
        refused(error, "ARTIFACT_UNAVAILABLE", "outside_artifact_dir")


def test_a_verified_file_is_open_at_its_start(root: Path) -> None:
    uri, size, sha256 = stored(root, "model.pt", b"weights" * 1000)
    with open_verified(uri, root, size, sha256) as file:
        assert file.read() == b"weights" * 1000


@pytest.mark.parametrize(
    ("size_delta", "sha_of", "reason"),
    [(0, b"other", "sha256"), (1, b"weights", "size")],
)
def test_a_file_that_is_not_the_recorded_one_is_corrupt(
    root: Path, size_delta: int, sha_of: bytes, reason: str
) -> None:
    uri, size, _ = stored(root, "model.pt", b"weights")
    with pytest.raises(ApiError) as error:
        open_verified(uri, root, size + size_delta, hashlib.sha256(sha_of).hexdigest())
    refused(error, "ARTIFACT_CORRUPT", reason)


def test_missing_files_directories_and_fifos_are_unavailable(root: Path) -> None:
    os.mkfifo(root / "pipe")
    (root / "dir").mkdir()
    (root / "dangling").symlink_to(root / "gone")
    (root / "loop").symlink_to(root / "loop")
    cases = [("gone", "missing"), ("dangling", "missing"), ("dir", "not_a_file")]
    cases.append(("loop", "unreadable"))
    cases.append(("pipe", "not_a_file"))  # and opening it does not wait for a writer
    for name, reason in cases:
        with pytest.raises(ApiError) as error:
            open_verified((root / name).as_uri(), root, 0, hashlib.sha256(b"").hexdigest())
        refused(error, "ARTIFACT_UNAVAILABLE", reason)


async def test_chunks_are_the_whole_file_when_it_still_matches(root: Path) -> None:
    content = os.urandom(2 * CHUNK_BYTES + 10)
    uri, size, sha256 = stored(root, "model.pt", content)
    file = open_verified(uri, root, size, sha256)
    chunks = [chunk async for chunk in verified_chunks(file, size, sha256)]
    assert b"".join(chunks) == content
    assert len(chunks) == 3
    assert file.closed


@pytest.mark.parametrize("change", ["last byte", "truncated"])
async def test_a_file_changed_after_its_check_never_arrives_whole(root: Path, change: str) -> None:
    content = os.urandom(2 * CHUNK_BYTES + 10)
    uri, size, sha256 = stored(root, "model.pt", content)
    file = open_verified(uri, root, size, sha256)
    changed = content[:-1] + bytes([content[-1] ^ 1]) if change == "last byte" else content[:-5]
    (root / "model.pt").write_bytes(changed)
    sent = b""
    with pytest.raises(ArtifactChanged):
        async for chunk in verified_chunks(file, size, sha256):
            sent += chunk
    assert sent == content[: 2 * CHUNK_BYTES]
    assert file.closed


async def test_bytes_appended_after_the_check_are_not_sent(root: Path) -> None:
    content = os.urandom(CHUNK_BYTES + 10)
    uri, size, sha256 = stored(root, "model.pt", content)
    file = open_verified(uri, root, size, sha256)
    (root / "model.pt").write_bytes(content + b"more")
    assert b"".join([chunk async for chunk in verified_chunks(file, size, sha256)]) == content


def test_an_empty_file_is_fine(root: Path) -> None:
    uri, size, sha256 = stored(root, "empty", b"")
    with open_verified(uri, root, size, sha256) as file:
        assert file.read() == b""


@pytest.mark.parametrize(
    ("recorded", "served"),
    [
        ("text/x-python", "text/x-python"),
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("application/vnd.onnx+protobuf", "application/vnd.onnx+protobuf"),
        ("text/html\r\nSet-Cookie: a=b", "application/octet-stream"),
        ("", "application/octet-stream"),
        ("weights", "application/octet-stream"),
        ("text/plain; name=é", "application/octet-stream"),
    ],
)
def test_media_types_that_are_not_one_become_octet_streams(recorded: str, served: str) -> None:
    assert media_type(recorded) == served


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("model.pt", "attachment; filename=\"model.pt\"; filename*=UTF-8''model.pt"),
        (
            "checkpoints/epoch 3.pt",
            "attachment; filename=\"epoch 3.pt\"; filename*=UTF-8''epoch%203.pt",
        ),
        (
            'modèle "v2".pt',
            "attachment; filename=\"mod_le _v2_.pt\"; filename*=UTF-8''mod%C3%A8le%20%22v2%22.pt",
        ),
        ("dir/", "attachment; filename=\"artifact\"; filename*=UTF-8''artifact"),
        ("a\r\nb\\", "attachment; filename=\"a__b_\"; filename*=UTF-8''a%0D%0Ab%5C"),
    ],
)
def test_content_disposition_names_the_file_safely(name: str, header: str) -> None:
    assert content_disposition(name) == header
    header.encode("latin-1")


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ("", False),
        ('"abd"', False),
        ("abc", False),
    ],
)
def test_if_none_match_names_the_etag(if_none_match: str, matches: bool) -> None:
    assert etag_matches(if_none_match, '"abc"') is matches


def test_artifact_names_are_printable_and_bounded() -> None:
    assert artifact_name("checkpoints/epoch 3.pt") == "checkpoints/epoch 3.pt"
    for bad in ("", "a\x00b", "a\nb", "x" * 1025):
        with pytest.raises(ApiError) as error:
            artifact_name(bad)
        assert (error.value.status, error.value.code) == (400, "INVALID_ARTIFACT_NAME")


def test_download_links_keep_the_name_in_one_segment() -> None:
    assert download_path("j", "model.pt") == "/jobs/j/artifacts/model.pt"
    assert download_path("j", "a/b c?.pt") == "/jobs/j/artifacts/a%2Fb%20c%3F.pt"
